"""Tokenization through the `tokenizers` library: any checkpoint's tokenizer, and BERT's WordPiece.

`Tokenizer.from_pretrained(folder)` reads a checkpoint's tokenizer.json whatever its model (WordPiece, BPE,
Unigram) and the model's own special tokens (BERT's [CLS] ... [SEP], RoBERTa's and XLM-R's <s> ... </s></s> ...
</s>), from tokenizer_config.json / special_tokens_map.json or the vocabulary. The special-token layout of single
texts and pairs is read off the tokenizer's own post-processor, so code that assembles inputs itself (SQuAD
windows, tagged words) builds them as the tokenizer would. `BertTokenizer` is the WordPiece case, with a
vocab.txt reader and a trainer.

A folder's tokenizer.json may carry padding and truncation settings of its own (all-MiniLM-L6-v2's pads every
input to 128); they are dropped at load, and each call pads and truncates as asked. Folders written by
`save_pretrained` load in transformers and encode identically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from .errors import TokenizerError
from .files import read_json

logger = logging.getLogger("bert_fast")

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# The special tokens a model may use, and the spellings to look for when the folder does not name them.
SPECIAL_ROLES = {
    "pad_token": ("[PAD]", "<pad>"),
    "unk_token": ("[UNK]", "<unk>"),
    "cls_token": ("[CLS]", "<s>"),
    "sep_token": ("[SEP]", "</s>"),
    "mask_token": ("[MASK]", "<mask>"),
}


@dataclass(frozen=True)
class Template:
    """Where a tokenizer puts its special tokens: prefix A middle B suffix (middle and B for pairs only), each
    special as (id, token type), and the token type of A's and B's own tokens."""

    prefix: tuple[tuple[int, int], ...]
    middle: tuple[tuple[int, int], ...]
    suffix: tuple[tuple[int, int], ...]
    a_type: int
    b_type: int

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def build(self, ids_a: Sequence[int], ids_b: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
        """(input_ids, token_type_ids) of A (and B) with the special tokens around them."""
        head = [i for i, _ in self.prefix] + list(ids_a)
        types = [t for _, t in self.prefix] + [self.a_type] * len(ids_a)
        if ids_b is not None:
            head += [i for i, _ in self.middle] + list(ids_b)
            types += [t for _, t in self.middle] + [self.b_type] * len(ids_b)
        return head + [i for i, _ in self.suffix], types + [t for _, t in self.suffix]


def _template_of(tokenizer: RustTokenizer, probe_token: str, pair: bool) -> Template:
    """Read the special-token layout off the post-processor by encoding a probe (one token per sequence)."""
    encoded = tokenizer.encode(probe_token, probe_token if pair else None, add_special_tokens=True)
    segments: list[list[tuple[int, int]]] = [[]]  # specials before A, after A, after B
    sequence_types: dict[int, int] = {}
    for token_id, type_id, sequence in zip(encoded.ids, encoded.type_ids, encoded.sequence_ids):
        if sequence is None:
            segments[-1].append((token_id, type_id))
        elif sequence not in sequence_types:
            sequence_types[sequence] = type_id
            segments.append([])
    segments += [[]] * (3 - len(segments))
    if pair:
        prefix, middle, suffix = segments[:3]
    else:
        prefix, middle, suffix = segments[0], [], segments[1]
    return Template(tuple(prefix), tuple(middle), tuple(suffix), sequence_types.get(0, 0), sequence_types.get(1, 0))


def _special_token_names(folder: Path) -> dict[str, str]:
    """The special tokens a folder names (tokenizer_config.json, then special_tokens_map.json)."""
    names = {}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / file
        if not path.is_file():
            continue
        data = read_json(path, TokenizerError)
        for role in SPECIAL_ROLES:
            value = data.get(role)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                names[role] = value
        if "cls_token" not in names and isinstance(data.get("bos_token"), (str, dict)):
            bos = data["bos_token"]
            names["cls_token"] = bos["content"] if isinstance(bos, dict) else bos
    return names


def _words_need_a_space(tokenizer: RustTokenizer) -> bool:
    """Byte-level BPE without add_prefix_space (RoBERTa's) spells a word differently at the start of a text: a word
    tokenized alone is given the space it has inside a sentence (transformers' add_prefix_space for split words)."""
    def walk(node) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel" and not node.get("add_prefix_space", True):
                return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(json.loads(tokenizer.to_str()).get("pre_tokenizer"))


class Tokenizer:
    """Any checkpoint's tokenizer: single texts or pairs with the model's own special tokens, longest-first
    truncation and padding. Ids of the roles (pad_token_id, cls_token_id ...) are None where the vocabulary has
    no such token; pad, cls and sep are required."""

    REQUIRED = ("pad_token", "cls_token", "sep_token")

    def __init__(self, tokenizer: RustTokenizer, model_max_length: int = 512,
                 special_tokens: dict[str, str] | None = None, settings: dict | None = None):
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self.model_max_length = model_max_length
        self._settings = dict(settings or {})
        names = dict(special_tokens or {})
        for role, spellings in SPECIAL_ROLES.items():
            if role not in names:
                names[role] = next((t for t in spellings if tokenizer.token_to_id(t) is not None), None)
        missing = [role for role in self.REQUIRED
                   if names.get(role) is None or tokenizer.token_to_id(names[role]) is None]
        if missing:
            raise TokenizerError(f"the tokenizer names no {', '.join(missing)} (looked in tokenizer_config.json, "
                                 "special_tokens_map.json and for [PAD]/<pad>, [CLS]/<s>, [SEP]/</s>)")
        self.special_tokens = {role: name for role, name in names.items() if name is not None}
        for role in SPECIAL_ROLES:
            name = names.get(role)
            setattr(self, f"{role}_id", None if name is None else tokenizer.token_to_id(name))
        probe = names.get("unk_token") or names["pad_token"]
        self.single_template = _template_of(tokenizer, probe, pair=False)
        self.pair_template = _template_of(tokenizer, probe, pair=True)
        self._space_before_words = _words_need_a_space(tokenizer)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Tokenizer:
        """A checkpoint folder's tokenizer: tokenizer.json of any kind, or BERT's vocab.txt. A WordPiece vocabulary
        with BERT's special tokens gives a BertTokenizer."""
        folder = Path(folder)
        settings = _folder_settings(folder)
        if not (folder / "tokenizer.json").is_file():
            if (folder / "vocab.txt").is_file():
                return BertTokenizer.from_pretrained(folder)
            raise TokenizerError(f"{folder} has neither tokenizer.json nor vocab.txt")
        try:
            tokenizer = RustTokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise TokenizerError(f"cannot read {folder / 'tokenizer.json'}: {e}") from e
        model = json.loads(tokenizer.to_str()).get("model", {}).get("type")
        if model == "WordPiece" and all(tokenizer.token_to_id(t) is not None for t in SPECIAL_TOKENS):
            return BertTokenizer.from_pretrained(folder)
        return cls(tokenizer, _max_length(settings), _special_token_names(folder), settings)

    def save_pretrained(self, folder: str | Path) -> None:
        """tokenizer.json, tokenizer_config.json (the source folder's settings) and special_tokens_map.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._tokenizer.save(str(folder / "tokenizer.json"))
        config = {**self._settings, **self.special_tokens, "model_max_length": self.model_max_length}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        (folder / "special_tokens_map.json").write_text(json.dumps(self.special_tokens, indent=2))

    # --- vocabulary ----------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab()

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(i for i in (self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id,
                                 self.mask_token_id) if i is not None)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, index: int) -> str | None:
        return self._tokenizer.id_to_token(index)

    def tokenize(self, text: str) -> list[str]:
        """Pieces of one text, without special tokens."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def tokenize_ids(self, text: str) -> list[int]:
        """Piece ids of one text, without special tokens."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def word_pieces(self, words: Sequence[str]) -> list[list[int]]:
        """The piece ids of each word of an already split text, spelled as inside a sentence."""
        texts = [" " + w for w in words] if self._space_before_words else list(words)
        return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)] if texts else []

    def build_inputs(self, ids_a: Sequence[int], ids_b: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
        """(input_ids, token_type_ids) of pieces with the model's special tokens, as encode would place them."""
        template = self.single_template if ids_b is None else self.pair_template
        return template.build(ids_a, ids_b)

    # --- encoding ------------------------------------------------------------------------------------------

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, max_length: int | None = None,
                     truncation: bool = True, add_special_tokens: bool = True):
        """The raw `tokenizers.Encoding`s (ids, types, offsets, word ids), truncated longest-first, unpadded."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of texts; use encode() for one")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pair texts")
        max_length = max_length or self.model_max_length
        if truncation:
            self._tokenizer.enable_truncation(max_length, strategy="longest_first")
        else:
            self._tokenizer.no_truncation()
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        return self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens)

    def warn_truncated(self, texts: Sequence[str], encodings, max_length: int | None = None) -> int:
        """Log how many of `texts` encode_batch cut to max_length (and the longest one's length); returns the
        count. Embedding a text from its first tokens only is the right default, but never a silent one."""
        cut = [i for i, e in enumerate(encodings) if e.overflowing]
        if cut:
            limit = max_length or self.model_max_length
            longest = max(len(e.ids) for e in self.encode_batch([texts[i] for i in cut], truncation=False))
            logger.warning("bert_fast: %d of %d texts are longer than %d tokens and were truncated to %d (the "
                           "longest has %d tokens)", len(cut), len(texts), limit, limit, longest)
        return len(cut)

    def encode(self, text: str, pair: str | None = None, max_length: int | None = None,
               truncation: bool = True) -> dict[str, list[int]]:
        """One text (or pair): input_ids, token_type_ids and attention_mask as lists."""
        enc = self.encode_batch([text], None if pair is None else [pair], max_length, truncation)[0]
        return {"input_ids": enc.ids, "token_type_ids": enc.type_ids, "attention_mask": enc.attention_mask}

    def __call__(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None,
                 max_length: int | None = None, truncation: bool = True, padding: bool | str = "longest",
                 pad_to_multiple_of: int | None = None, return_tensors: str | None = "pt"):
        """Encode a batch, padded to its longest member (or to max_length with padding="max_length").

        Returns input_ids, token_type_ids and attention_mask as (batch, seq) int64 tensors, or as lists of
        lists with return_tensors=None.
        """
        if isinstance(texts, str):
            texts = [texts]
            pairs = [pairs] if isinstance(pairs, str) else pairs
        encodings = self.encode_batch(texts, pairs, max_length, truncation)
        return self.pad(encodings, max_length, padding, pad_to_multiple_of, return_tensors)

    def pad(self, encodings, max_length: int | None = None, padding: bool | str = "longest",
            pad_to_multiple_of: int | None = None, return_tensors: str | None = "pt"):
        """A batch of encode_batch's encodings (sorted or bucketed by length, say), padded as __call__ pads."""
        rows = {"input_ids": [e.ids for e in encodings], "token_type_ids": [e.type_ids for e in encodings],
                "attention_mask": [e.attention_mask for e in encodings]}
        if padding:
            if padding == "max_length":
                target = max_length or self.model_max_length
            elif padding in (True, "longest"):
                target = max((len(r) for r in rows["input_ids"]), default=0)
            else:
                raise ValueError(f"padding={padding!r}: use 'longest', 'max_length' or False")
            if pad_to_multiple_of:
                target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
            fill = {"input_ids": self.pad_token_id, "token_type_ids": 0, "attention_mask": 0}
            rows = {k: [r + [fill[k]] * (target - len(r)) for r in v] for k, v in rows.items()}
        if return_tensors is None:
            return rows
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r}: only 'pt' or None")
        lengths = {len(r) for r in rows["input_ids"]}
        if len(lengths) > 1:
            raise ValueError("tensors need equal lengths: pass padding='longest' (the default)")
        return {k: torch.tensor(v, dtype=torch.long) for k, v in rows.items()}



def _bert_pipeline(tokenizer: RustTokenizer, lowercase: bool, strip_accents: bool | None, chinese_chars: bool) -> None:
    """BERT's normaliser, pre-tokeniser, [CLS]/[SEP] template and decoder around a WordPiece model."""
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese_chars, strip_accents=strip_accents, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")


class BertTokenizer(Tokenizer):
    """Encode single texts or pairs as [CLS] A [SEP] (B [SEP]) with token types, truncation and padding."""

    def __init__(self, tokenizer: RustTokenizer, model_max_length: int = 512, lowercase: bool = True):
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise TokenizerError(f"the vocabulary lacks BERT's special tokens {missing}")
        super().__init__(tokenizer, model_max_length, dict(zip(SPECIAL_ROLES, SPECIAL_TOKENS)))
        self.lowercase = lowercase

    # --- construction --------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> BertTokenizer:
        """From a folder with tokenizer.json, or with vocab.txt (+ tokenizer_config.json)."""
        folder = Path(folder)
        settings = _folder_settings(folder)
        max_length = _max_length(settings)
        lowercase = bool(settings.get("do_lower_case", True))
        if (folder / "tokenizer.json").is_file():
            try:
                tokenizer = RustTokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as e:  # tokenizers raises a bare Exception for malformed files
                raise TokenizerError(f"cannot read {folder / 'tokenizer.json'}: {e}") from e
            return cls(tokenizer, max_length, lowercase)
        if (folder / "vocab.txt").is_file():
            return cls.from_vocab(
                folder / "vocab.txt", lowercase=lowercase, strip_accents=settings.get("strip_accents"),
                chinese_chars=settings.get("tokenize_chinese_chars", True), model_max_length=max_length,
            )
        raise TokenizerError(f"{folder} has neither tokenizer.json nor vocab.txt")

    @classmethod
    def from_vocab(cls, vocab_file: str | Path, lowercase: bool = True, strip_accents: bool | None = None,
                   chinese_chars: bool = True, model_max_length: int = 512) -> BertTokenizer:
        """From a vocab.txt, one WordPiece per line, the line number being its id."""
        tokens = Path(vocab_file).read_text(encoding="utf-8").splitlines()
        vocab = {tok: i for i, tok in enumerate(tokens)}
        if "[UNK]" not in vocab:
            raise TokenizerError(f"{vocab_file} has no [UNK] token")
        tokenizer = RustTokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tokenizer.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])
        _bert_pipeline(tokenizer, lowercase, strip_accents, chinese_chars)
        return cls(tokenizer, model_max_length, lowercase)

    @classmethod
    def train(cls, files: Sequence[str | Path] | None = None, vocab_size: int = 30522, lowercase: bool = True,
              min_frequency: int = 2, texts: Iterable[str] | None = None, model_max_length: int = 512,
              show_progress: bool = False) -> BertTokenizer:
        """Learn a WordPiece vocabulary from text files (or an iterable of texts), specials first: [PAD]=0."""
        from tokenizers.trainers import WordPieceTrainer

        if not files and texts is None:
            raise TokenizerError("train() needs text files or an iterable of texts")
        tokenizer = RustTokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                   special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##",
                                   show_progress=show_progress)
        if files:
            missing = [str(f) for f in files if not Path(f).is_file()]
            if missing:
                raise TokenizerError(f"no such corpus files: {missing}")
            tokenizer.train([str(f) for f in files], trainer)
        else:
            tokenizer.train_from_iterator(texts, trainer)
        if tokenizer.get_vocab_size() <= len(SPECIAL_TOKENS):
            raise TokenizerError("the corpus is empty: the trained vocabulary holds only the special tokens")
        if tokenizer.get_vocab_size() < vocab_size:
            logger.warning("bert_fast: the corpus gave %s WordPieces, fewer than the %s asked for: it holds no more "
                           "pieces seen at least %d times (a larger corpus or a lower min_frequency gives more)",
                           f"{tokenizer.get_vocab_size():,}", f"{vocab_size:,}", min_frequency)
        _bert_pipeline(tokenizer, lowercase, None, True)
        return cls(tokenizer, model_max_length, lowercase)

    def save_pretrained(self, folder: str | Path) -> None:
        """tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json, as transformers writes."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._tokenizer.save(str(folder / "tokenizer.json"))
        vocab = sorted(self._tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        (folder / "vocab.txt").write_text("".join(tok + "\n" for tok, _ in vocab), encoding="utf-8")
        specials = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS))
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.lowercase,
                  "model_max_length": self.model_max_length, "tokenize_chinese_chars": True,
                  "strip_accents": None, **specials}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))


def _folder_settings(folder: Path) -> dict:
    """A tokenizer folder's tokenizer_config.json ({} without one); a missing folder is a TokenizerError."""
    if not folder.is_dir():
        raise TokenizerError(f"tokenizer folder {folder} does not exist")
    config = folder / "tokenizer_config.json"
    return read_json(config, TokenizerError) if config.is_file() else {}


def _max_length(settings: dict) -> int:
    max_length = int(settings.get("model_max_length", 512))
    return 512 if max_length > 1_000_000 else max_length  # transformers writes a huge sentinel for "no limit"
