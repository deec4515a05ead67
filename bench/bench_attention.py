"""Masked attention for BERT: our varlen flash attention against what a user would run instead, in one process.

Providers (bf16, head_dim 64):
- ours:            varlen_attention_qkvpacked on the unpadded tokens (the model's path: qkv from one projection)
- ours-atomic-dq:  the same with deterministic=False: the backward adds dQ up with fp32 atomics (5 block matmuls
                   per tile pair instead of 7; forward+backward only, the forward is the same kernel)
- ours-dropout0.1: the same as ours with attention dropout p = 0.1 (BERT pretraining)
- sdpa-flash:      F.scaled_dot_product_attention forced to its flash backend, no mask (all-full batches only:
                   flash takes no padding mask)
- sdpa-mask:       SDPA on the padded batch with a boolean (batch, 1, seq, seq) padding mask, backend chosen by
                   PyTorch: what Hugging Face BERT's "sdpa" attention does
- eager:           the math written out on the padded batch (scores + additive mask, softmax, @ v): HF "eager"

Unit: TFLOP/s counting real tokens only. Forward FLOPs = 4 * sum_b(len_b^2) * heads * head_dim (two matmuls of
2 * len^2 * head_dim each per head); forward + backward = 3.5x that (backward = 2.5x forward: five matmuls, of which
one recomputes Q K^T), the convention of FlashAttention's and Triton's benchmarks. Padding work done by the padded
providers is not credited.

Two times per measurement: ms (tflops, x_sdpa_mask) per call as an eager caller sees it, host launch overhead
included wherever the GPU finishes first; and device_ms (device_tflops, device_x_sdpa_mask) from a CUDA-graph
replay, the kernels alone (bench.common.device_ms). At B32 S128 the two differ several-fold (first H100 run,
bench/NOTES.md §6).

Batches: B = 32, max length 128 and 512, heads 12 (BERT-base) and 16 (BERT-large); lengths all-full or
uniform(max / 8 .. max) (a fixed generator seed, so every provider sees the same batch).

Run: PYTHONPATH=.dev python bench/bench_attention.py [--quick]  -> bench/results/attention.jsonl + Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `bench.common`

from bench.common import bench_ms, device_ms, format_table, save_rows  # noqa: I001 (after the sys.path line above)
from bert_fast_kernels import varlen_attention_qkvpacked

HEAD_DIM = 64
DTYPE = torch.bfloat16


def make_lengths(batch: int, max_len: int, dist: str) -> list[int]:
    if dist == "full":
        return [max_len] * batch
    g = torch.Generator().manual_seed(0)
    return torch.randint(max(1, max_len // 8), max_len + 1, (batch,), generator=g).tolist()


def fwd_flops(lengths: list[int], heads: int) -> float:
    return 4.0 * sum(n * n for n in lengths) * heads * HEAD_DIM


class Case:
    """One batch in both layouts: packed qkv (tokens, 3, heads, head_dim) and padded (batch, heads, seq, head_dim)."""

    def __init__(self, lengths: list[int], heads: int):
        self.lengths, self.heads = lengths, heads
        batch, seq = len(lengths), max(lengths)
        self.seq = seq
        self.mask = torch.arange(seq, device="cuda")[None, :] < torch.tensor(lengths, device="cuda")[:, None]
        self.cu = F.pad(torch.tensor(lengths, device="cuda").cumsum(0), (1, 0)).to(torch.int32)
        total = sum(lengths)
        self.qkv = torch.randn(total, 3, heads, HEAD_DIM, device="cuda", dtype=DTYPE, requires_grad=True)
        self.dout_packed = torch.randn(total, heads, HEAD_DIM, device="cuda", dtype=DTYPE)
        # padded copies in the (batch, heads, seq, head_dim) layout SDPA wants
        self.padded = [
            torch.randn(batch, heads, seq, HEAD_DIM, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(3)
        ]
        self.dout_padded = torch.randn(batch, heads, seq, HEAD_DIM, device="cuda", dtype=DTYPE)
        self.bool_mask = self.mask[:, None, None, :].expand(batch, 1, seq, seq)  # True = attend
        self.additive = torch.zeros(batch, 1, 1, seq, device="cuda", dtype=DTYPE).masked_fill(
            ~self.mask[:, None, None, :], torch.finfo(DTYPE).min
        )

    def provider(self, name: str):
        """(forward fn returning the output, its inputs, its dout)."""
        if name.startswith("ours"):
            p = 0.1 if name == "ours-dropout0.1" else 0.0
            deterministic = name != "ours-atomic-dq"

            def fn():
                return varlen_attention_qkvpacked(
                    self.qkv, self.cu, self.seq, dropout_p=p, seed=0, validate=False, deterministic=deterministic
                )

            return fn, [self.qkv], self.dout_packed
        q, k, v = self.padded
        if name == "sdpa-flash":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            def fn():
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v)
        elif name == "sdpa-mask":
            fn = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=self.bool_mask)
        elif name == "eager":

            def fn():
                scores = torch.matmul(q, k.transpose(-1, -2)) * HEAD_DIM**-0.5 + self.additive
                return torch.matmul(torch.softmax(scores, dim=-1), v)
        else:
            raise ValueError(name)
        return fn, list(self.padded), self.dout_padded


def measure(case: Case, name: str, mode: str, warmup_ms: int, rep_ms: int) -> tuple[float, float | None]:
    """(ms per call as an eager caller sees it, ms of device time alone from a CUDA-graph replay or None)."""
    fn, inputs, dout = case.provider(name)
    if mode == "fwd":

        def step():
            with torch.no_grad():
                fn()
    else:

        def step():
            torch.autograd.grad(fn(), inputs, dout)

    return bench_ms(step, warmup_ms, rep_ms), device_ms(step)


def chosen_configs(mode: str, atomic_dq: bool) -> str:
    """The launch configs the autotuner just used for our kernels (head_dim 64 group), for the record."""
    from bert_fast_kernels import attention_bwd, attention_fwd

    picks = [f"fwd: {attention_fwd._fwd_tuned['small'].best_config}"] if "small" in attention_fwd._fwd_tuned else []
    bwd = attention_bwd._bwd_tuned.get(("small", atomic_dq))
    if mode != "fwd" and bwd is not None:
        picks.append(f"bwd: {bwd.best_config}")
    return "; ".join(picks)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one shape, short timing: a smoke run")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_attention needs a CUDA GPU")

    heads_list, max_lens = ([12], [128]) if args.quick else ([12, 16], [128, 512])
    warmup_ms, rep_ms = (10, 30) if args.quick else (50, 300)
    batch = 32
    rows = []
    for heads in heads_list:
        for max_len in max_lens:
            for dist in ("full", "ragged"):
                lengths = make_lengths(batch, max_len, dist)
                case = Case(lengths, heads)
                flops = fwd_flops(lengths, heads)
                providers = ["ours", "ours-atomic-dq", "ours-dropout0.1"] + (["sdpa-flash"] if dist == "full" else [])
                providers += ["sdpa-mask", "eager"]
                for mode in ("fwd", "fwd+bwd"):
                    for name in providers:
                        if mode == "fwd" and name == "ours-atomic-dq":
                            continue  # the same forward as "ours"
                        ms, dev_ms = measure(case, name, mode, warmup_ms, rep_ms)
                        work = flops * (1.0 if mode == "fwd" else 3.5)
                        row = {
                            "bench": "attention", "provider": name, "mode": mode, "batch": batch, "heads": heads,
                            "head_dim": HEAD_DIM, "max_len": max_len, "lengths": dist, "real_tokens": sum(lengths),
                            "padded_tokens": batch * case.seq, "dtype": str(DTYPE).replace("torch.", ""),
                            "ms": ms, "tflops": work / ms * 1e-9,
                            "device_ms": dev_ms, "device_tflops": work / dev_ms * 1e-9 if dev_ms else None,
                        }  # fmt: skip
                        if name.startswith("ours"):
                            row["config"] = chosen_configs(mode, atomic_dq=name == "ours-atomic-dq")
                        rows.append(row)
                        on_device = f"{row['device_tflops']:.1f}" if dev_ms else "-"
                        print(f"{mode} H{heads} S{max_len} {dist} {name}: {ms:.3f} ms, {row['tflops']:.1f} TFLOP/s "
                              f"per call, {on_device} TFLOP/s on the device")
                del case
    # speed-up of ours over SDPA-with-mask (what HF runs) on the same batch, per call and on the device
    for row in rows:
        peer = [
            r for r in rows if r["provider"] == "sdpa-mask"
            and all(r[c] == row[c] for c in ("mode", "heads", "max_len", "lengths"))
        ]  # fmt: skip
        row["x_sdpa_mask"] = peer[0]["ms"] / row["ms"] if peer else None
        both = peer and peer[0]["device_ms"] and row["device_ms"]
        row["device_x_sdpa_mask"] = peer[0]["device_ms"] / row["device_ms"] if both else None
    if not args.quick:
        path = save_rows("attention", rows)
        print(f"\nrows appended to {path}\n")
    columns = ["mode", "heads", "max_len", "lengths", "provider", "ms", "tflops", "x_sdpa_mask", "device_ms",
               "device_tflops", "device_x_sdpa_mask"]
    print(format_table(rows, columns))


if __name__ == "__main__":
    main()
