"""The tolerance rule every kernel and fast-path test uses (shared/STYLE.md).

Three results per check: `out` from the code under test, `out_pt` from PyTorch in the same dtype, `out_ref`
from the reference in higher precision. Pass when max|out - out_ref| <= factor * max|out_pt - out_ref| + atol:
the kernel may be no more than twice as wrong as PyTorch itself is in that dtype.
"""

import torch


def max_abs_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def assert_within_pytorch_error(out, out_pt, out_ref, atol: float, factor: float = 2.0, name: str = "output"):
    assert out.shape == out_ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(out_ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    err = max_abs_error(out, out_ref)
    err_pt = max_abs_error(out_pt, out_ref)
    bound = factor * err_pt + atol
    assert err <= bound, f"{name}: max error {err:.3e} > {factor} x PyTorch's {err_pt:.3e} + {atol:.1e}"


def leaves(inputs: dict, dtype=None) -> dict:
    """Independent leaf copies of a dict of inputs (None stays None), optionally cast, that collect gradients: one
    set per result of the rule (code under test, PyTorch in the same dtype, the reference in float64)."""
    return {
        k: None if t is None else t.detach().clone().to(dtype or t.dtype).requires_grad_() for k, t in inputs.items()
    }


def run(fn, inputs: dict, dy, **kwargs):
    """fn(**inputs, **kwargs) -> (output, {name: grad}) after backpropagating dy."""
    out = fn(**inputs, **kwargs)
    out.backward(dy.to(out.dtype))
    return out, {k: v.grad for k, v in inputs.items() if v is not None}
