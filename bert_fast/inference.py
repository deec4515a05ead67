"""Small-batch inference through captured CUDA graphs.

A BERT-base forward on one short sentence launches a few hundred kernels that each run for microseconds: the
launches, not the arithmetic, set the latency. `GraphedEncoder` captures `BertModel.forward_packed` once per
shape bucket and replays it. Buckets: batch rounded up to a power of two, sequence width to a multiple of 64,
packed tokens to a power of two (at least 64). Real tokens fill the front of the static buffers; the rest is
filler, laid out as extra sequences of [PAD] tokens no longer than the bucket's width, so every kernel sees a
valid packed batch and no real token ever attends to filler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .modeling import BertModel
from .outputs import BertModelOutput


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class Bucket:
    batch: int  # real sequences the bucket holds (filler sequences come after them)
    width: int  # max_seqlen the graph is captured with
    tokens: int  # packed tokens, real and filler

    @property
    def slots(self) -> int:
        """Sequence slots in cu_seqlens: the real ones, then enough for any filler in runs of <= width."""
        return self.batch + -(-self.tokens // self.width)


def bucket_for(lengths: list[int], width_multiple: int = 64, min_tokens: int = 64, max_width: int | None = None
               ) -> Bucket:
    """The bucket a batch with these sequence lengths replays. `max_width` (the position table's size) caps the
    rounded width: filler runs take positions 0 .. width - 1, which must exist."""
    width = -(-max(lengths) // width_multiple) * width_multiple
    if max_width is not None:
        width = max(max(lengths), min(width, max_width))
    tokens = max(min_tokens, _next_power_of_two(sum(lengths)))
    return Bucket(batch=_next_power_of_two(len(lengths)), width=width, tokens=tokens)


@dataclass
class PackedInputs:
    input_ids: torch.Tensor  # (bucket.tokens,)
    token_type_ids: torch.Tensor  # (bucket.tokens,)
    position_ids: torch.Tensor  # (bucket.tokens,)
    cu_seqlens: torch.Tensor  # (bucket.slots + 1,) int32
    indices: torch.Tensor  # (real tokens,) flat positions of the real tokens in (batch * seq)


def pack_for_bucket(input_ids, attention_mask, token_type_ids, bucket: Bucket, pad_token_id: int) -> PackedInputs:
    """Real tokens of a padded batch, packed, then filler up to the bucket's static sizes."""
    batch, seq = input_ids.shape
    device = input_ids.device
    mask = attention_mask.bool()
    lengths = mask.sum(1).tolist()
    indices = mask.flatten().nonzero().flatten()
    real = len(indices)
    filler = bucket.tokens - real
    # Filler runs of at most `width` tokens, in the slots after the real sequences (zero-length slots after).
    runs = [bucket.width] * (filler // bucket.width) + ([filler % bucket.width] if filler % bucket.width else [])
    seq_lengths = lengths + [0] * (bucket.batch - batch) + runs
    seq_lengths += [0] * (bucket.slots - len(seq_lengths))
    if len(seq_lengths) > bucket.slots:
        raise ValueError(f"{filler} filler tokens do not fit {bucket}")
    cu_seqlens = torch.tensor([0] + seq_lengths, dtype=torch.int32).cumsum(0, dtype=torch.int32).to(device)

    positions = torch.arange(seq, device=device).expand(batch, seq)
    types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
    ids = torch.full((bucket.tokens,), pad_token_id, dtype=input_ids.dtype, device=device)
    packed_types = torch.zeros_like(ids)
    packed_positions = torch.zeros_like(ids)
    ids[:real] = input_ids.flatten()[indices]
    packed_types[:real] = types.flatten()[indices]
    packed_positions[:real] = positions.flatten()[indices]
    if filler:  # positions inside each filler run, so they stay inside the position table
        packed_positions[real:] = torch.cat([torch.arange(n, device=device) for n in runs])
    return PackedInputs(ids, packed_types, packed_positions, cu_seqlens, indices)


class GraphedEncoder:
    """Replays a CUDA graph of `model.forward_packed` per bucket; a drop-in for `model(...)` at inference."""

    def __init__(self, model: BertModel, max_graphs: int = 32, warmup: int = 2):
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"GraphedEncoder captures CUDA graphs; the model is on {device}")
        self.model = model.eval()
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.graphs: dict[Bucket, tuple] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def _capture(self, bucket: Bucket, example: PackedInputs):
        static = PackedInputs(*(t.clone() for t in (example.input_ids, example.token_type_ids, example.position_ids,
                                                     example.cu_seqlens)), indices=example.indices)

        def body():
            return self.model.forward_packed(static.input_ids, static.cu_seqlens, bucket.width,
                                             static.token_type_ids, static.position_ids)

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(self.warmup):  # compiles and autotunes kernels outside the capture
                body()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self.pool):
            out = body()
        return graph, static, out

    @torch.inference_mode()
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None) -> BertModelOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch, seq = input_ids.shape
        lengths = attention_mask.sum(1).tolist()
        bucket = bucket_for(lengths, max_width=self.model.config.max_position_embeddings)
        packed = pack_for_bucket(input_ids, attention_mask, token_type_ids, bucket, self.model.config.pad_token_id)
        if bucket not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                self.graphs.pop(next(iter(self.graphs)))  # forget the oldest bucket
            self.graphs[bucket] = self._capture(bucket, packed)
        graph, static, out = self.graphs[bucket]
        for dst, src in ((static.input_ids, packed.input_ids), (static.token_type_ids, packed.token_type_ids),
                         (static.position_ids, packed.position_ids), (static.cu_seqlens, packed.cu_seqlens)):
            dst.copy_(src)
        graph.replay()
        real = len(packed.indices)
        hidden = out.last_hidden_state.new_zeros(batch * seq, out.last_hidden_state.shape[-1])
        hidden.index_copy_(0, packed.indices, out.last_hidden_state[:real])
        pooled = out.pooler_output[:batch].clone() if out.pooler_output is not None else None
        return BertModelOutput(last_hidden_state=hidden.view(batch, seq, -1), pooler_output=pooled)
