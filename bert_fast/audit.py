"""Audit a checkpoint: the fused path against the reference path, layer by layer, on the user's own texts.

For every hidden state (the embeddings' output, then each layer's) and the pooler output, over the real tokens
of every text:

- fp32: the fused path (our kernels) against the reference path (plain PyTorch, the specification), both in
  float32. They must agree within the fast-path tests' tolerance: max abs error <= 1e-4.
- the dtype asked (fp16, bf16): the fused path in that dtype against the float32 reference, beside the reference
  path in the same dtype (PyTorch's own rounding). The kernels may be at most twice as wrong as PyTorch in that
  dtype, + 1e-2 (the GPU tests' rule), with every token's cosine similarity >= 0.999.

Without CUDA the kernels run in Triton's interpreter (fp32 and fp16; it has no bf16). A failing check names the
state and the numbers; `bert-fast audit` exits non-zero on any.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from .checkpoint import _parse_dtype
from .devices import resolve_device
from .errors import DataError, SettingError
from .modeling import BertModel
from .tokenizer import Tokenizer

FP32_ATOL = 1e-4  # tests/model/test_fast_path.py, tests/families/test_family_fast_path.py
HALF_FACTOR, HALF_ATOL, HALF_MIN_COSINE = 2.0, 1e-2, 0.999  # tests/model/test_gpu.py


@dataclass
class StateStats:
    """One hidden state's agreement, accumulated over batches."""

    name: str
    max_abs_error: float = 0.0
    min_cosine: float = 1.0
    cosine_sum: float = 0.0
    tokens: int = 0
    max_abs_reference: float = 0.0  # the reference's largest magnitude, for scale

    def update(self, ours: torch.Tensor, reference: torch.Tensor) -> None:
        """ours, reference: (tokens, hidden) at real tokens."""
        ours, reference = ours.double(), reference.double()
        self.max_abs_error = max(self.max_abs_error, (ours - reference).abs().max().item())
        cosine = torch.nn.functional.cosine_similarity(ours, reference, dim=-1, eps=1e-12)
        self.min_cosine = min(self.min_cosine, cosine.min().item())
        self.cosine_sum += cosine.sum().item()
        self.tokens += cosine.numel()
        self.max_abs_reference = max(self.max_abs_reference, reference.abs().max().item())

    @property
    def mean_cosine(self) -> float:
        return self.cosine_sum / max(self.tokens, 1)


@dataclass
class Check:
    name: str  # the state
    dtype: str
    passed: bool
    detail: str


@dataclass
class AuditReport:
    model: str
    model_type: str
    device: str
    dtype: str
    texts: int
    tokens: int
    fp32: list[StateStats]  # fused fp32 vs reference fp32
    half: list[StateStats] | None = None  # fused in dtype vs reference fp32
    half_pytorch: list[StateStats] | None = None  # reference in dtype vs reference fp32
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def _states(out, attention_mask: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Each named state at the real tokens: (tokens, hidden); the pooler's output per text."""
    real = attention_mask.bool()
    states = {name: h[real].float() for name, h in zip(names, out.hidden_states)}
    if out.pooler_output is not None:
        states["pooler"] = out.pooler_output.float()
    return states


def _run(model: BertModel, impl: str, batch: dict, names: list[str]) -> dict:
    model.set_impl(impl)
    with torch.inference_mode():
        return _states(model(**batch, output_hidden_states=True), batch["attention_mask"], names)


def audit(model_dir, texts: Sequence[str], dtype: str | None = None, device: str | None = None,
          batch_size: int = 16, max_length: int | None = None) -> AuditReport:
    """Run every text through both paths of the checkpoint at `model_dir` (fp32, and `dtype` when given)."""
    device = resolve_device(device)
    half = _parse_dtype(dtype) if dtype not in (None, "fp32", "float32") else None
    if half == torch.bfloat16 and device.type != "cuda":
        raise SettingError("bf16 needs CUDA: Triton's CPU interpreter has no bf16 (use --dtype fp16 on the CPU)")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError("no texts to audit")
    model = BertModel.from_pretrained(model_dir, impl="reference", device=device)
    model_half = BertModel.from_pretrained(model_dir, impl="reference", dtype=half, device=device) if half else None
    tokenizer = Tokenizer.from_pretrained(model_dir)
    names = ["embeddings"] + [f"layer {i}" for i in range(1, model.config.num_hidden_layers + 1)]
    state_names = names + (["pooler"] if model.pooler is not None else [])
    fp32 = {n: StateStats(n) for n in state_names}
    half_stats = {n: StateStats(n) for n in state_names} if half else None
    pytorch_stats = {n: StateStats(n) for n in state_names} if half else None

    longest = model.config.family.max_sequence_length(model.config)
    encodings = tokenizer.encode_batch(texts, max_length=min(max_length or tokenizer.model_max_length, longest))
    order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
    tokens = 0
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in tokenizer.pad([encodings[i] for i in chosen]).items()}
        tokens += int(batch["attention_mask"].sum())
        reference = _run(model, "reference", batch, names)
        fused = _run(model, "triton", batch, names)
        for n in state_names:
            fp32[n].update(fused[n], reference[n])
        if half:
            fused_half = _run(model_half, "triton", batch, names)
            reference_half = _run(model_half, "reference", batch, names)
            for n in state_names:
                half_stats[n].update(fused_half[n], reference[n])
                pytorch_stats[n].update(reference_half[n], reference[n])

    report = AuditReport(model=str(model_dir), model_type=model.config.model_type, device=str(device),
                         dtype=str(half).removeprefix("torch.") if half else "float32", texts=len(texts),
                         tokens=tokens, fp32=list(fp32.values()),
                         half=list(half_stats.values()) if half else None,
                         half_pytorch=list(pytorch_stats.values()) if half else None)
    report.checks = _checks(report)
    return report


def _checks(report: AuditReport) -> list[Check]:
    checks = []
    for s in report.fp32:
        ok = s.max_abs_error <= FP32_ATOL and math.isfinite(s.max_abs_error)
        checks.append(Check(s.name, "float32", ok, f"max abs error {s.max_abs_error:.3e} (limit {FP32_ATOL:.0e})"))
    if report.half:
        for s, p in zip(report.half, report.half_pytorch):
            bound = HALF_FACTOR * p.max_abs_error + HALF_ATOL
            ok = s.max_abs_error <= bound and s.min_cosine >= HALF_MIN_COSINE and math.isfinite(s.max_abs_error)
            checks.append(Check(s.name, report.dtype, ok,
                                f"max abs error {s.max_abs_error:.3e} (limit {bound:.3e} = {HALF_FACTOR:g} x PyTorch's "
                                f"{p.max_abs_error:.3e} + {HALF_ATOL:g}), min cosine {s.min_cosine:.6f} "
                                f"(limit {HALF_MIN_COSINE})"))
    return checks


def format_table(report: AuditReport) -> str:
    """The per-state table `bert-fast audit` prints."""
    lines = [f"{report.model} ({report.model_type}) on {report.device}: {report.texts} texts, {report.tokens} tokens",
             ""]
    header = f"{'state':<12} {'fp32 max err':>12} {'fp32 min cos':>13}"
    if report.half:
        header += f" {report.dtype + ' max err':>16} {'PyTorch ' + report.dtype:>17} {'min cos':>9}"
    lines += [header + "  ok", "-" * (len(header) + 4)]
    failed = {(c.name, c.dtype) for c in report.checks if not c.passed}
    for i, s in enumerate(report.fp32):
        row = f"{s.name:<12} {s.max_abs_error:>12.3e} {s.min_cosine:>13.9f}"
        bad = (s.name, "float32") in failed
        if report.half:
            h, p = report.half[i], report.half_pytorch[i]
            row += f" {h.max_abs_error:>16.3e} {p.max_abs_error:>17.3e} {h.min_cosine:>9.6f}"
            bad = bad or (s.name, report.dtype) in failed
        lines.append(row + ("  FAIL" if bad else "  ok"))
    lines.append("")
    for c in report.checks:
        if not c.passed:
            lines.append(f"FAIL {c.name} ({c.dtype}): {c.detail}")
    lines.append("PASS: the fused path matches the reference within the tests' tolerances" if report.passed
                 else "the fused path does NOT match the reference on this model")
    return "\n".join(lines)
