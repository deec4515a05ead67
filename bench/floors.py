"""The two numbers before any timing: the least time each benchmarked workload can take on a given GPU.

For every workload the benchmarks time, count the arithmetic it must do and the bytes it must move through device
memory (each input read once, each output written once), divide by the measured ceilings (a large bf16 matmul,
a large device-to-device copy), and compare the peers' measured figures and our targets against that floor.
No GPU needed; the ceilings are arguments (defaults: one H100 80GB, shared/ANCHORS.md, 2026-11-22).

    python -m bench.floors [--matmul-tflops 680] [--copy-tbs 3.02] [--fused-ffn]

Model of an end-to-end BERT step (per real token; the sums run in order because the kernels do):
- GEMMs (QKV, attention output, FFN up and down: 2 (4 H^2 + 2 H I) FLOPs a layer forward) at the matmul ceiling;
  their operands stay out of the byte count (they run compute-bound at these shapes).
- attention at max(FLOPs / matmul ceiling, bytes / copy ceiling): 4 L_eff H FLOPs a layer forward, where
  L_eff = E[len^2] / E[len] (a token attends to its own sequence only); q, k, v read and o written.
- the memory-bound epilogues at the copy ceiling, with the byte counts of bench/bench_elementwise.py:
  two bias + dropout + residual + LayerNorm blocks (3 H s forward; 4 or, with dropout, 5 H s backward) and one
  bias + GELU (2 I s forward, 3 I s backward) a layer. With --fused-ffn the FFN-up GEMM applies bias + GELU in
  its epilogue (bert_fast_kernels.linear_gelu): nothing of that forward step is left in inference, and in training
  only the extra write of the pre-activation the backward reads (I s).
- training: backward = 2x the forward GEMMs and 2.5x the attention FLOPs; the MLM head on the 15% masked tokens
  only (transform H x H and decoder H x V); fused AdamW reads and writes fp32 params, grads and moments
  (28 bytes a parameter a step), shared by the tokens of the step.
Left out (small or overlapped): embeddings, NSP and pooler, dropout masks (drawn in-kernel), the fp32 -> bf16
weight casts of autocast, launch gaps. So the floor is optimistic: a real step takes longer.
"""

from __future__ import annotations

import argparse
import dataclasses

from bench.common import format_table

SIZES = {"base": (12, 768, 3072), "large": (24, 1024, 4096)}  # layers, hidden, intermediate
VOCAB = 30522
ITEMSIZE = 2  # bf16 activations


def length_moments(max_len: int, ragged: bool) -> tuple[float, float]:
    """(E[len], E[len^2]) for lengths all max_len, or uniform over the integers max_len / 8 .. max_len."""
    if not ragged:
        return float(max_len), float(max_len * max_len)
    lengths = range(max(1, max_len // 8), max_len + 1)
    return sum(lengths) / len(lengths), sum(n * n for n in lengths) / len(lengths)


@dataclasses.dataclass
class Ceilings:
    matmul: float  # FLOP/s
    copy: float  # bytes/s, read + written

    def time(self, flops: float = 0.0, n_bytes: float = 0.0) -> float:
        return max(flops / self.matmul, n_bytes / self.copy)


def elementwise_rows(c: Ceilings) -> list[dict]:
    """bench_elementwise's shapes (16384 tokens, bf16): floor = bytes at the copy ceiling; target 2.6 / 2.2 TB/s."""
    rows = []
    for op, n, units, target_tbs in [
        ("bias_gelu fwd", 3072, 2, 2.6), ("bias_gelu bwd", 3072, 3, 2.2),
        ("add_ln fwd", 768, 3, 2.6), ("add_ln bwd", 768, 4, 2.2), ("add_ln_drop bwd", 768, 5, 2.2),
    ]:  # fmt: skip
        n_bytes = units * 16384 * n * ITEMSIZE
        floor = c.time(n_bytes=n_bytes)
        rows.append({"workload": f"{op} 16384x{n}", "bound": "bytes", "floor_us": floor * 1e6,
                     "target": f"{target_tbs} TB/s", "target_us": n_bytes / (target_tbs * 1e12) * 1e6})
    return rows


# The targets, TFLOP/s counting real tokens: 340 forward and 220 forward + backward at S512 all full; on
# the ragged batch 3.5x SDPA with the padding mask (88 real-token TFLOP/s forward: 308). None: no target given.
ATTENTION_TARGETS = {(128, False): (None, None), (512, False): (340e12, 220e12), (512, True): (3.5 * 88e12, None)}


def attention_rows(c: Ceilings) -> list[dict]:
    """bench_attention's B32, heads 12, head_dim 64 batches."""
    rows = []
    heads, head_dim, batch = 12, 64, 32
    for (max_len, ragged), targets in ATTENTION_TARGETS.items():
        mean, mean_sq = length_moments(max_len, ragged)
        tokens = batch * mean
        width = heads * head_dim * ITEMSIZE
        flops = 4.0 * batch * mean_sq * heads * head_dim
        # forward reads q, k, v and writes o; backward reads q, k, v, o, do and writes dq, dk, dv
        modes = [("fwd", flops, 4 * tokens * width), ("fwd+bwd", 3.5 * flops, 12 * tokens * width)]
        for (mode, f, b), target in zip(modes, targets):
            t_flops, t_bytes = f / c.matmul, b / c.copy
            rows.append({
                "workload": f"attention {mode} S{max_len}{' ragged' if ragged else ''}",
                "bound": "flops" if t_flops >= t_bytes else "bytes", "floor_us": max(t_flops, t_bytes) * 1e6,
                "target": f"{target / 1e12:.0f} TFLOP/s" if target else None,
                "target_us": f / target * 1e6 if target else None,
            })  # fmt: skip
    return rows


def e2e_seconds_per_token(
    c: Ceilings, size: str, max_len: int, ragged: bool, train: bool, batch: int, fused_ffn: bool = False
) -> dict:
    """Per real token: seconds in GEMMs, attention, epilogues, MLM head, optimizer (the model in the header)."""
    layers, h, i = SIZES[size]
    mean, mean_sq = length_moments(max_len, ragged)
    gemm = 2.0 * (4 * h * h + 2 * h * i) * (3 if train else 1)
    attn_flops = 4.0 * (mean_sq / mean) * h * (3.5 if train else 1)
    attn_bytes = (4 + (8 if train else 0)) * h * ITEMSIZE
    gelu_fwd_units = (1 if train else 0) if fused_ffn else 2  # fused: only z, for the backward
    epilogue_bytes = (2 * 3 * h + gelu_fwd_units * i) * ITEMSIZE  # forward: two add+LN, one bias+GELU
    if train:
        epilogue_bytes += (2 * 5 * h + 3 * i) * ITEMSIZE  # backward, hidden dropout on
    parts = {
        "gemm": layers * gemm / c.matmul,
        "attention": layers * c.time(attn_flops, attn_bytes),
        "epilogues": layers * epilogue_bytes / c.copy,
    }
    if train:
        params = layers * (4 * h * h + 2 * h * i) + VOCAB * h
        parts["mlm_head"] = 0.15 * 3 * 2.0 * (h * h + h * VOCAB) / c.matmul
        parts["optimizer"] = 28.0 * params / c.copy / (batch * mean)
    return parts


E2E = [  # (size, workload, batch, max length, ragged, train, peer, peer real tok/s, target x peer)
    ("base", "infer B256 S128", 256, 128, False, False, "HF sdpa", 2.27e6, 1.25),
    ("base", "infer B64 S512 ragged", 64, 512, True, False, "HF sdpa", 1.00e6, 2.5),
    ("base", "train B256 S128", 256, 128, False, True, "compile(HF)", 484e3, 1.25),
    ("base", "train B32 S512 ragged", 32, 512, True, True, "HF sdpa", 152e3, 3.0),
    ("large", "train B32 S512", 32, 512, False, True, "HF sdpa", 121e3, 250e3 / 121e3),
]


def e2e_rows(c: Ceilings, fused_ffn: bool = False) -> list[dict]:
    rows = []
    for size, name, batch, max_len, ragged, train, peer, peer_tps, factor in E2E:
        parts = e2e_seconds_per_token(c, size, max_len, ragged, train, batch, fused_ffn)
        per_token = sum(parts.values())
        share = ", ".join(f"{k} {v / per_token:.0%}" for k, v in parts.items())
        rows.append({
            "workload": f"BERT-{size} {name}", "floor split": share, "floor_Mtok_s": 1e-6 / per_token,
            "peer": f"{peer} {peer_tps / 1e6:.3g}M", "peer_of_floor": peer_tps * per_token,
            "target_Mtok_s": factor * peer_tps / 1e6, "target_of_floor": factor * peer_tps * per_token,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matmul-tflops", type=float, default=680.0, help="measured bf16 matmul ceiling")
    parser.add_argument("--copy-tbs", type=float, default=3.02, help="measured copy ceiling (read + write)")
    parser.add_argument("--fused-ffn", action="store_true", help="bias + GELU in the FFN-up GEMM's epilogue")
    args = parser.parse_args(argv)
    c = Ceilings(matmul=args.matmul_tflops * 1e12, copy=args.copy_tbs * 1e12)
    print(f"ceilings: bf16 matmul {args.matmul_tflops:g} TFLOP/s, copy {args.copy_tbs:g} TB/s\n")
    print(format_table(elementwise_rows(c) + attention_rows(c), ["workload", "bound", "floor_us", "target",
                                                                  "target_us"]))  # fmt: skip
    print()
    print(format_table(e2e_rows(c, args.fused_ffn), ["workload", "floor_Mtok_s", "peer", "peer_of_floor", "target_Mtok_s",
                                     "target_of_floor", "floor split"]))  # fmt: skip


if __name__ == "__main__":
    main()
