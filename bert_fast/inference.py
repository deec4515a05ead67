"""Small-batch inference through captured CUDA graphs.

A BERT-base forward on one short sentence launches a few hundred kernels that each run for microseconds: the
launches, not the arithmetic, set the latency. `GraphedEncoder` captures a model's forward once per shape bucket
(bert_fast.buckets: sequences rounded up to a power of two, width to a multiple of 64, packed tokens to a power of
two) and replays it. It serves BertModel and every head model: the batch is packed on the host into the bucket,
copied into the graph's static inputs, replayed, and the outputs of the real rows and positions are handed back.
"""

from __future__ import annotations

import dataclasses

import torch

from .buckets import Bucket, StaticBatch, inference_bucket, pack_batch

PER_TOKEN_2D = ("start_logits", "end_logits")  # (batch, seq) outputs; every other per-token output has 3+ dims


def _real_part(value, rows: dict[int, int], width: int, seq: int, per_token: bool):
    """A replay's output cut to the batch: the bucket's sequences (or examples) to the real ones and, for per-token
    outputs, the bucket's width to the batch's sequence length. Cloned: the next replay overwrites the graph's."""
    if isinstance(value, tuple):
        return tuple(_real_part(v, rows, width, seq, per_token) for v in value)
    if not isinstance(value, torch.Tensor):
        return value
    if value.dim() >= 1 and value.shape[0] in rows:
        value = value[:rows[value.shape[0]]]
        if (per_token or value.dim() >= 3) and value.shape[1] == width:
            value = value[:, :seq]
    return value.clone()


def _cut(output, bucket: Bucket, real_batch: int, seq: int):
    rows = {bucket.batch: real_batch * bucket.choices, bucket.batch // bucket.choices: real_batch}
    return dataclasses.replace(output, **{
        f.name: _real_part(getattr(output, f.name), rows, bucket.width, seq, f.name in PER_TOKEN_2D)
        for f in dataclasses.fields(output)})


class GraphedEncoder:
    """Replays a CUDA graph of `model(...)` per bucket: a drop-in for the model's forward at inference, for
    BertModel and every head model (no labels). Pass CPU tensors (a tokenizer's output) to save a device sync:
    the batch is packed on the host."""

    def __init__(self, model, max_graphs: int = 32, warmup: int = 2, eval_model: bool = True):
        if getattr(model, "impl", "triton") == "reference":
            raise ValueError("GraphedEncoder captures the fused path; the reference path reads sequence lengths on "
                             "the host, which a graph cannot hold: use impl='auto' or 'triton'")
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"GraphedEncoder captures CUDA graphs; the model is on {device}")
        self.model = model.eval() if eval_model else model  # graphs replay what they captured: inference
        self.device = device
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.graphs: dict[Bucket, tuple] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def _capture(self, static: StaticBatch):
        def body():
            return self.model(**static.model_inputs())

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
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        batch = {"input_ids": input_ids.cpu()}
        for key, value in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                           ("position_ids", position_ids)):
            if value is not None:
                batch[key] = value.cpu()
        ids = batch["input_ids"]
        choices = ids.shape[1] if ids.dim() == 3 else 1
        flat = ids.reshape(-1, ids.shape[-1])
        mask = batch.get("attention_mask")
        lengths = mask.reshape(flat.shape).sum(1).tolist() if mask is not None else [flat.shape[1]] * len(flat)
        config = self.model.config
        bucket = inference_bucket(lengths, max_width=config.max_position_embeddings, choices=choices)
        packed = pack_batch(batch, bucket, config.pad_token_id, config=config)
        if bucket not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                self.graphs.pop(next(iter(self.graphs)))  # forget the oldest bucket
            self.graphs[bucket] = self._capture(packed.to(self.device))
        graph, static, out = self.graphs[bucket]
        static.copy_(packed)
        graph.replay()
        return _cut(out, bucket, packed.real_batch, packed.real_width)
