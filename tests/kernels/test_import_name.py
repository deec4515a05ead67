"""The kernels folder found under the bare name `kernels` hands over to the PyPI package of that name.

With the repository root on sys.path (`python -m pytest`, `python -m bench.x`, a script started there), the folder
`kernels/` shadows the installed `kernels` package that transformers imports. Each check runs in a fresh
interpreter started the way a user would start one from the repository root.
"""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUR_KERNELS = ROOT / "kernels"

# Every module loaded from our kernels folder must be named bert_fast_kernels.*: a second name would mean a second
# copy of the modules, each registering the same torch custom ops.
OURS_LOADED_ONCE = f"""
import os, sys
ours = {str(OUR_KERNELS)!r}
twice = sorted(
    name for name, module in list(sys.modules.items())
    if os.path.dirname(os.path.abspath(getattr(module, "__file__", None) or "/")).startswith(ours)
    and not name.startswith("bert_fast_kernels")
)
assert not twice, f"our kernel modules loaded under another name: {{twice}}"
"""


def run_from_root(code: str, *flags: str) -> subprocess.CompletedProcess:
    prelude = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
    return subprocess.run(
        [sys.executable, *flags, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT, check=False
    )


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("kernels"), reason="the PyPI package `kernels` is not installed")
def test_bare_name_is_the_installed_kernels_package():
    code = (
        "from kernels import CUDAProperties\n"
        "import kernels\n"
        f"assert not kernels.__file__.startswith({str(OUR_KERNELS)!r}), kernels.__file__\n"
        "print('kernels from', kernels.__file__)\n" + OURS_LOADED_ONCE
    )
    out = run_from_root(code)
    assert out.returncode == 0, out.stderr
    assert "kernels from" in out.stdout


def test_transformers_and_sentence_transformers_import_from_the_repository_root():
    code = (
        "import transformers\n"
        "from transformers import AutoModel, BertConfig\n"
        "AutoModel.from_config(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,\n"
        "                                 intermediate_size=37, vocab_size=99))\n"
        "import sentence_transformers\n"
        # Our package beside them, its custom ops registered once.
        "import torch, bert_fast, bert_fast_kernels as K\n"
        "x = torch.randn(3, 8)\n"
        "assert K.add_layer_norm_ref(x, None, torch.ones(8), None).shape == (3, 8)\n" + OURS_LOADED_ONCE
    )
    out = run_from_root(code)
    assert out.returncode == 0, out.stderr


def test_bare_name_without_the_installed_package_is_an_empty_shadow():
    """-S leaves site-packages off sys.path, so the only `kernels` left to find is our folder. It must offer
    nothing: no name, no submodule (a second copy of our modules would register our custom ops twice), and no
    __file__ or version, which import probes (transformers' `_is_package_available`) read as "not installed"."""
    code = (
        "import importlib\n"
        "kernels = importlib.import_module('kernels')\n"
        "assert getattr(kernels, '__file__', None) is None and not hasattr(kernels, '__version__'), kernels\n"
        "assert [n for n in vars(kernels) if not n.startswith('__')] == [], vars(kernels)\n"
        "try:\n"
        "    from kernels import get_kernel\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('a name imported from the empty shadow')\n"
        "try:\n"
        "    import kernels.add_layer_norm\n"
        "except ModuleNotFoundError:\n"
        "    print('no submodule')\n" + OURS_LOADED_ONCE
    )
    out = run_from_root(code, "-S")
    assert out.returncode == 0, out.stderr
    assert "no submodule" in out.stdout
