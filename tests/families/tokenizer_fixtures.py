"""Tokenizer folders of the kinds BERT's family ships, trained here on a few sentences (no hub): RoBERTa's
byte-level BPE and XLM-R's SentencePiece-style Unigram, each saved as transformers saves them."""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "RoBERTa reads text with byte-level pieces, XLM-R with a unigram model.",
    "Padding should never change the numbers a real token gets.",
    "Question: where is the cat? Answer: on the mat.",
    "Ünïcödé àccents, 中文 characters and emoji 🙂 survive byte-level BPE.",
    "Deux phrases en français pour CamemBERT, et une autre ici.",
] * 20
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def _config(folder: Path, tokenizer_class: str) -> None:
    settings = {"tokenizer_class": tokenizer_class, "model_max_length": 512, "bos_token": "<s>", "eos_token": "</s>",
                "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                "mask_token": "<mask>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))


def roberta_tokenizer(folder: Path, vocab_size: int = 400, texts: list[str] = TEXT) -> Path:
    """Byte-level BPE with RoBERTa's specials (<s>=0 <pad>=1 </s>=2 <unk>=3 ... <mask>) and pair layout."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[*SPECIALS, "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.save(str(folder / "tokenizer.json"))
    _config(folder, "RobertaTokenizer")
    return folder


def xlmr_tokenizer(folder: Path, vocab_size: int = 300, texts: list[str] = TEXT) -> Path:
    """A SentencePiece-style Unigram with XLM-R's specials and template (<s> A </s></s> B </s>)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=[*SPECIALS, "<mask>"], unk_token="<unk>",
                                      show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer.save(str(folder / "tokenizer.json"))
    _config(folder, "XLMRobertaTokenizer")
    return folder
