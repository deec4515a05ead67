import pytest


@pytest.fixture(scope="session")
def tokenizer(corpus_file):
    from bert_fast.data.prepare import train_tokenizer

    tok, _ = train_tokenizer([corpus_file], vocab_size=400)
    return tok


@pytest.fixture(scope="session")
def example_store(corpus_file, tmp_path_factory):
    """(tokenizer, store folder, special ids, cache folder) of the synthetic corpus at sequence length 64, built once
    for the loader and packing tests."""
    from bert_fast.data.prepare import cached_store, cached_tokenizer
    from bert_fast.data.store import ExampleSettings

    cache = tmp_path_factory.mktemp("cache")
    tok, _ = cached_tokenizer([corpus_file], 400, cache_dir=cache)
    folder = cached_store([corpus_file], tok, ExampleSettings(max_seq_len=64, eval_fraction=0.1), cache_dir=cache)
    special = {"pad": tok.pad_token_id, "unk": tok.unk_token_id, "cls": tok.cls_token_id, "sep": tok.sep_token_id,
               "mask": tok.mask_token_id}
    return tok, folder, special, cache
