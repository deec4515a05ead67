"""The cached launch path (bert_fast_kernels._launch): the same launches as Triton's own path, fewer host steps.

Without a GPU, launch_check.py runs every launcher through both paths under the stub driver (bench/stub_driver.py:
kernels compile for sm_90, the driver call is recorded instead of made) in a fresh process, since the interpreter
this test session uses has no compiled path. On a GPU, the same ops run through both paths must give bitwise-equal
outputs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import bert_fast_kernels._launch as lean
import pytest
import torch

CHECK = Path(__file__).with_name("launch_check.py")


def test_set_lean_launch_returns_the_previous_setting(lean_setting):
    assert lean.set_lean_launch(False) is True
    assert not lean.lean_launch_active()
    assert lean.set_lean_launch(True) is False


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the gpu-marked test below checks real launches")
@pytest.mark.skipif(not lean._supported, reason=f"the cached path is off on triton {lean.triton.__version__}")
def test_cached_path_hands_the_launcher_what_triton_does(tmp_path):
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton")  # the stub's tuning picks stay out of the real cache
    proc = subprocess.run([sys.executable, str(CHECK)], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    cases = [line for line in lines if "case" in line]
    assert len(cases) == 20
    for case in cases:
        assert case["same"], case
        # the call took the cached path, not Triton's; TMA descriptor arguments keep Triton's path by design
        assert case["cached"] == ("TMA" not in case["case"]), case
    assert sum(case["launches"] for case in cases) == 26
    picks = lines[-1]["picks"]
    assert len(picks) == 4 and len(set(picks.values())) > 1  # per-key picks, kept apart
