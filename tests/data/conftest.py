import pytest


@pytest.fixture(scope="session")
def tokenizer(corpus_file):
    from bert_fast.data.prepare import train_tokenizer

    tok, _ = train_tokenizer([corpus_file], vocab_size=400)
    return tok
