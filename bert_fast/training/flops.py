"""Model FLOPs utilisation (MFU): the share of the device's peak FLOP/s that the model's own arithmetic uses.

Training FLOPs per token (forward + backward, Kaplan et al. / PaLM appendix B):

    6 * N + 12 * L * H * S

with N the parameters outside the embeddings (encoder, pooler, MLM transform; the word embeddings and the tied
MLM decoder are left out, as is customary), L layers, H hidden size, S sequence length (attention scores and
their weighted sum, 2 * 2 * S * H per token per layer forward, times 3 with backward). Only real tokens count.
"""

from __future__ import annotations

import torch

# Dense peak FLOP/s (no sparsity) per device name fragment, by precision.
PEAK_FLOPS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},  # SXM (first match wins: PCIe is listed before)
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12},
    "A10": {"bf16": 125e12, "fp16": 125e12, "fp32": 31.2e12},
    "4090": {"bf16": 165e12, "fp16": 165e12, "fp32": 82.6e12},
}


def non_embedding_params(model: torch.nn.Module) -> int:
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or id(p) in embedding_ids:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def train_flops_per_token(model: torch.nn.Module, num_layers: int, hidden: int, seq_len: int) -> float:
    return 6.0 * non_embedding_params(model) + 12.0 * num_layers * hidden * seq_len


def peak_flops(device: torch.device, precision: str, override_tflops: float = 0.0) -> float | None:
    """The device's peak FLOP/s for the precision, or None where unknown (the CPU): MFU is then not reported."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in PEAK_FLOPS.items():
        if fragment in name:
            return peaks.get(precision)
    return None
