"""Static-shape batches: a collated batch packed on the host into a bucket whose shapes do not depend on the data.

A forward on a bucket (the model called with `layout=`) reads no value on the host and produces no shape that
depends on the batch, so it traces as one graph and can be captured as a CUDA graph and replayed for every batch of
the same bucket. Packing happens on the host, from the CPU tensors a data loader yields, before they are copied to
the device: the real tokens, sequence after sequence, then filler up to the bucket's token count, laid out as extra
sequences of [PAD] no longer than the bucket's width, so every kernel sees a valid packed batch and no real token
ever attends to filler.

What a bucket fixes:
- batch: sequence slots (the real sequences first, then empty ones); outputs have this many rows;
- width: max_seqlen, and the sequence length of unpacked outputs (batches narrower than it are padded to it);
- tokens: packed tokens, real and filler;
- masked: positions the MLM head computes (labelled ones first, then filler with label -100), 0 without one.

Training uses the exact batch size and width of the loader and rounds tokens and masked positions up
(`training_bucket`), or declines (None: run that batch eagerly) when the bucket would hold more than twice the
real tokens. Inference rounds everything up to few sizes (`inference_bucket`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from .ops import StaticLayout

TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")  # packed into the bucket


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class Bucket:
    batch: int  # sequence slots: real sequences first, then empty ones
    width: int  # max_seqlen the graph is captured with; unpacked outputs are (batch, width, ...)
    tokens: int  # packed tokens, real and filler
    masked: int = 0  # MLM positions, labelled and filler; 0: the batch has no MLM labels
    choices: int = 1  # sequences per example (multiple choice): batch counts sequences

    @property
    def slots(self) -> int:
        """Sequence slots in cu_seqlens: the batch's, then enough for any filler in runs of <= width."""
        return self.batch + -(-self.tokens // self.width)


def inference_bucket(lengths: list[int], width_multiple: int = 64, min_tokens: int = 64,
                     max_width: int | None = None, choices: int = 1) -> Bucket:
    """The bucket an inference batch with these sequence lengths replays: sequences rounded up to a power of two
    (times `choices`), width to a multiple of 64, tokens to a power of two (at least 64). `max_width` (the position
    table's size) caps the width: filler runs take positions 0 .. width - 1, which must exist."""
    width = _round_up(max(lengths), width_multiple)
    if max_width is not None:
        width = max(max(lengths), min(width, max_width))
    tokens = max(min_tokens, _next_power_of_two(sum(lengths)))
    batch = choices * _next_power_of_two(-(-len(lengths) // choices))
    return Bucket(batch=batch, width=width, tokens=tokens, choices=choices)


def training_bucket(lengths: list[int], width: int, masked: int = 0, token_multiple: int | None = None,
                    masked_multiple: int | None = None, max_ratio: float = 2.0, choices: int = 1) -> Bucket | None:
    """The bucket of a training batch: its own batch size and width, its token count rounded up to a multiple of
    `token_multiple` (default: a sixteenth of batch x width), its MLM label count to a multiple of
    `masked_multiple` (default: a sixty-fourth of the tokens). None when the bucket would hold more than
    `max_ratio` times the real tokens: such a batch runs eagerly."""
    real = sum(lengths)
    token_multiple = token_multiple or max(64, len(lengths) * width // 16)
    tokens = _round_up(max(real, 1), token_multiple)
    if tokens > max_ratio * max(real, 1):
        return None
    if masked:
        masked = _round_up(masked, masked_multiple or max(8, tokens // 64))
    return Bucket(batch=len(lengths), width=width, tokens=tokens, masked=masked, choices=choices)


@dataclass
class StaticBatch:
    """A batch packed into its bucket: every tensor's shape is the bucket's. `extras` are the model's other
    arguments (labels, next_sentence_label, start_positions, the padded attention_mask ...), padded to the bucket."""

    bucket: Bucket
    input_ids: torch.Tensor  # (tokens,)
    token_type_ids: torch.Tensor  # (tokens,)
    position_ids: torch.Tensor  # (tokens,)
    cu_seqlens: torch.Tensor  # (slots + 1,) int32
    scatter_index: torch.Tensor  # (tokens,) int64: flat position in (batch * width); batch * width for filler
    starts: torch.Tensor  # (batch,) int64: each sequence's first packed token
    labelled_positions: torch.Tensor | None = None  # (masked,) int64
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    real_batch: int = 0  # sequences (examples for multiple choice) of the batch before packing
    real_width: int = 0  # its sequence length before padding to the bucket's width

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if isinstance(getattr(self, f.name), torch.Tensor)}
        out.update({f"extras.{k}": v for k, v in self.extras.items()})
        return out

    def to(self, device, non_blocking: bool = False) -> StaticBatch:
        def move(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return StaticBatch(
            self.bucket, *(move(getattr(self, name)) for name in (
                "input_ids", "token_type_ids", "position_ids", "cu_seqlens", "scatter_index", "starts",
                "labelled_positions")),
            extras={k: move(v) for k, v in self.extras.items()}, real_batch=self.real_batch,
            real_width=self.real_width)  # fmt: skip

    def copy_(self, other: StaticBatch) -> StaticBatch:
        """Copy another batch of the same bucket into these tensors (a captured graph's static inputs)."""
        if other.bucket != self.bucket or other.extras.keys() != self.extras.keys():
            raise ValueError(f"a batch of {other.bucket} with {sorted(other.extras)} does not fit {self.bucket} "
                             f"with {sorted(self.extras)}")
        mine = self.tensors()
        for name, src in other.tensors().items():
            mine[name].copy_(src, non_blocking=True)
        self.real_batch, self.real_width = other.real_batch, other.real_width
        return self

    def layout(self) -> StaticLayout:
        b = self.bucket
        return StaticLayout(None, self.cu_seqlens, b.width, b.batch, b.width, scatter_index=self.scatter_index,
                            starts=self.starts, labelled_positions=self.labelled_positions, choices=b.choices)

    def model_inputs(self) -> dict:
        """Keyword arguments of a model call on this batch: model(**batch.model_inputs())."""
        return {"input_ids": self.input_ids, "token_type_ids": self.token_type_ids,
                "position_ids": self.position_ids, "layout": self.layout(), **self.extras}


def _pad_to(t: torch.Tensor, rows: int, cols: int | None, value) -> torch.Tensor:
    """(r, c, ...) -> (rows, cols, ...) filled with value; cols None: pad the rows only."""
    shape = (rows, *t.shape[1:]) if cols is None else (rows, cols, *t.shape[2:])
    out = torch.full(shape, value, dtype=t.dtype)
    out[(slice(0, t.shape[0]),) + (() if cols is None else (slice(0, t.shape[1]),))] = t
    return out


def pack_batch(batch: dict[str, torch.Tensor], bucket: Bucket, pad_token_id: int, mlm: bool = False,
               config=None) -> StaticBatch:
    """Pack a collated (CPU) batch into `bucket`. input_ids (batch, seq) or (batch, choices, seq) for multiple
    choice, attention_mask, token_type_ids and position_ids (optional) become the packed tokens; with mlm=True
    `labels` (batch, seq) become the MLM labels at the bucket's masked positions; every other tensor is padded to
    the bucket: per-token ones (batch, seq) to (bucket.batch, bucket.width) with -100 for labels and 0 otherwise,
    per-sequence ones to bucket.batch rows. `config` (a BertConfig) checks ids, token types and positions."""
    batch = dict(batch)
    input_ids = batch.pop("input_ids")
    choices = input_ids.shape[1] if input_ids.dim() == 3 else 1
    if choices != bucket.choices:
        raise ValueError(f"a batch of {choices} choices does not fit {bucket}")

    def flat(t):  # (batch, choices, seq) -> (batch * choices, seq)
        return t if t is None or choices == 1 else t.reshape(-1, t.shape[-1])

    ids = flat(input_ids)
    n, seq = ids.shape
    mask = flat(batch.pop("attention_mask", None))
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    types = flat(batch.pop("token_type_ids", None))
    positions = flat(batch.pop("position_ids", None))
    if n > bucket.batch or seq > bucket.width:
        raise ValueError(f"a batch of {n} sequences of {seq} tokens does not fit {bucket}")
    lengths = mask.sum(1).tolist()
    real = sum(lengths)
    if real > bucket.tokens:
        raise ValueError(f"{real} real tokens do not fit {bucket}")
    rows, cols = mask.nonzero(as_tuple=True)  # real tokens, row after row (host tensors: no device sync)
    filler = bucket.tokens - real
    runs = [bucket.width] * (filler // bucket.width) + ([filler % bucket.width] if filler % bucket.width else [])
    seq_lengths = lengths + [0] * (bucket.batch - n) + runs
    seq_lengths += [0] * (bucket.slots - len(seq_lengths))
    cu_seqlens = torch.tensor([0] + seq_lengths).cumsum(0).to(torch.int32)

    packed_ids = torch.full((bucket.tokens,), pad_token_id, dtype=ids.dtype)
    packed_ids[:real] = ids[rows, cols]
    packed_types = torch.zeros_like(packed_ids)
    if types is not None:
        packed_types[:real] = types[rows, cols]
    packed_positions = torch.zeros_like(packed_ids)  # filler: positions inside each run, within the table
    packed_positions[:real] = positions[rows, cols] if positions is not None else cols
    if runs:
        packed_positions[real:] = torch.cat([torch.arange(r) for r in runs])
    if config is not None:
        _check_values(config, packed_ids[:real], packed_types[:real], packed_positions)
    scatter = torch.full((bucket.tokens,), bucket.batch * bucket.width, dtype=torch.int64)
    scatter[:real] = rows * bucket.width + cols
    starts = cu_seqlens[:bucket.batch].long().clamp(max=bucket.tokens - 1)

    labelled = None
    if mlm:
        labels = flat(batch.pop("labels"))[rows, cols]  # the labels of the real tokens, in packed order
        chosen = (labels != -100).nonzero().squeeze(1)
        if len(chosen) > bucket.masked:
            raise ValueError(f"{len(chosen)} MLM labels do not fit {bucket}")
        labelled = torch.zeros(bucket.masked, dtype=torch.int64)
        labelled[:len(chosen)] = chosen
        masked_labels = torch.full((bucket.masked,), -100, dtype=labels.dtype)
        masked_labels[:len(chosen)] = labels[chosen]
        batch["labels"] = masked_labels

    extras = {}
    examples = bucket.batch // choices
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            continue
        label = "label" in key or "position" in key
        if key == "labels" and mlm:
            extras[key] = value
        elif value.dim() >= 2 and value.shape[:2] == (n, seq) and choices == 1:  # per token
            extras[key] = _pad_to(value, bucket.batch, bucket.width, -100 if label else 0)
        elif value.shape[:1] == (n // choices,):  # per example
            extras[key] = _pad_to(value, examples, None, -100 if label else 0)
        else:
            raise ValueError(f"{key} of shape {tuple(value.shape)} is neither per token nor per example")
    for key in ("start_positions", "end_positions"):  # past the real width: the ignored position, as unbucketed
        if key in extras and bucket.width != seq:
            extras[key] = torch.where(extras[key] >= seq, bucket.width, extras[key])
    # the padded mask: the QA head keeps padding out of its softmax, tagging out of its loss
    extras["attention_mask"] = _pad_to(mask.long(), bucket.batch, bucket.width, 0)
    if choices > 1:
        extras["attention_mask"] = extras["attention_mask"].view(examples, choices, bucket.width)
    return StaticBatch(bucket, packed_ids, packed_types, packed_positions, cu_seqlens, scatter, starts, labelled,
                       extras, real_batch=n // choices, real_width=seq)


def _check_values(config, ids, types, positions) -> None:
    from .inputs import InputError

    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= config.vocab_size):
        raise InputError(f"input_ids holds ids outside the vocabulary of {config.vocab_size}")
    if types.numel() and (int(types.min()) < 0 or int(types.max()) >= config.type_vocab_size):
        raise InputError(f"token_type_ids holds types outside the model's {config.type_vocab_size}")
    if positions.numel() and int(positions.max()) >= config.max_position_embeddings:
        raise InputError(f"positions reach {int(positions.max())}; the model has {config.max_position_embeddings}")


def bucket_of(batch: dict[str, torch.Tensor], mlm: bool = False, width: int | None = None,
              **options) -> Bucket | None:
    """The training bucket of a collated batch (see training_bucket), from its attention mask and labels; `width`
    (at least the batch's) pads it wider, so batches of nearby widths share a bucket."""
    ids = batch["input_ids"]
    choices = ids.shape[1] if ids.dim() == 3 else 1
    mask = batch.get("attention_mask")
    flat_ids = ids.reshape(-1, ids.shape[-1])
    lengths = (mask.reshape(flat_ids.shape).sum(1).tolist() if mask is not None
               else [flat_ids.shape[1]] * flat_ids.shape[0])
    masked = int((batch["labels"] != -100).sum()) if mlm else 0
    return training_bucket(lengths, max(width or 0, flat_ids.shape[1]), masked, choices=choices, **options)
