"""The kernels folder imported under the bare name `kernels` (as transformers probes for it) defines nothing."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bare_kernels_name_registers_nothing():
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "import kernels\n"
        "assert kernels.__all__ == [] and not hasattr(kernels, 'add_layer_norm'), kernels.__all__\n"
        "import torch, bert_fast_kernels as K\n"
        "x = torch.randn(3, 8)\n"
        "print(K.add_layer_norm_ref(x, None, torch.ones(8), None).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([3, 8])" in out.stdout
