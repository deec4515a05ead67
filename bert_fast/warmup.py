"""Compile and autotune the fused path's kernels for a model's shapes before the first real step.

A fused-path process pays Triton's compiling and autotuning on its first steps: seconds for every kernel
specialization and tuning key (sequence bucket, dropout on or off, dtype) it meets. Triton keeps compiled kernels in
its on-disk cache and our autotuner keeps its picks there too (cache_results), so running a model's shapes once,
ahead of time, lets every later process start without compiling or tuning. `bert-fast warmup --model DIR` does it.

The shapes that matter are the tuning keys and specializations, not the batch size: per sequence length (its
power-of-two bucket), inference (eval, weights in the dtype) and training (dropout, fp32 weights under autocast,
forward and backward). Triton also specializes a kernel on whether 16 divides its row count, so each is run twice:
with a token count (and an MLM label count) that 16 divides and with one it does not.
"""

from __future__ import annotations

import time

import torch

from .config import BertConfig
from .modeling import BertForPreTraining


def warm_up(config: BertConfig, seq_lens=(128,), dtype: torch.dtype = torch.bfloat16, train: bool = True,
            inference: bool = True, device: str | torch.device = "cuda", log=print) -> list[dict]:
    """Run the fused path once per sequence length (and mode) so its kernels compile and tune into the disk cache.
    Returns [{"seq", "mode", "seconds"}]; a second call in a process costs milliseconds."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = BertForPreTraining(config, impl="triton").to(device)
    rows = []
    for seq in seq_lens:
        if seq > config.max_position_embeddings:
            raise ValueError(f"sequence length {seq} is longer than the model's {config.max_position_embeddings} "
                             "positions")
        batches = [_batch(config, seq, even, device) for even in (True, False)]
        if inference:
            start = time.perf_counter()
            half = BertForPreTraining(config, impl="triton").to(device=device, dtype=dtype).eval()
            half.load_state_dict(model.state_dict())
            with torch.inference_mode():
                for ids, mask, _ in batches:
                    half(ids, attention_mask=mask)
            _sync(device)
            rows.append({"seq": seq, "mode": "inference", "seconds": time.perf_counter() - start})
            log(f"warmup: inference at {seq} tokens, {rows[-1]['seconds']:.1f} s")
            del half
        if train:
            start = time.perf_counter()
            model.train()
            for ids, mask, labels in batches:
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    loss = model(ids, attention_mask=mask, labels=labels,
                                 next_sentence_label=torch.zeros(2, dtype=torch.long, device=device)).loss
                loss.backward()
                model.zero_grad(set_to_none=True)
            _sync(device)
            rows.append({"seq": seq, "mode": "train", "seconds": time.perf_counter() - start})
            log(f"warmup: training at {seq} tokens, {rows[-1]['seconds']:.1f} s")
    return rows


def _batch(config: BertConfig, seq: int, even: bool, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two sequences: (ids, mask, MLM labels) with a token count and a label count that 16 divides (even) or not."""
    ids = torch.randint(1, config.vocab_size, (2, seq), device=device)
    second = seq if even else max(1, seq // 2 + 1)
    if (seq + second) % 16 == 0 and not even:
        second -= 1
    mask = torch.ones_like(ids)
    mask[1, second:] = 0
    labels = torch.full_like(ids, -100)
    wanted = 16 if even else 15
    positions = mask.flatten().nonzero().flatten()[:wanted]
    labels.view(-1)[positions] = ids.view(-1)[positions]
    return ids, mask, labels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
