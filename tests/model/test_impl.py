"""The implementation switch: chosen at construction, switchable on a built model, resolved per device."""

import logging
import sys

import pytest
import torch

import bert_fast
from bert_fast import ops
from bert_fast.errors import DeviceError
from tests.model.conftest import random_batch, tiny_config


def test_auto_resolves_to_reference_on_cpu(caplog):
    model = bert_fast.BertModel(tiny_config(), impl="auto").eval()
    with caplog.at_level(logging.INFO, logger="bert_fast"):
        model(**random_batch(model.config))
        model(**random_batch(model.config))
    assert caplog.text.count("impl='auto' uses reference on cpu") == 1


def test_unknown_impl():
    with pytest.raises(ValueError, match="impl='fast'"):
        bert_fast.BertModel(tiny_config(), impl="fast")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    model = bert_fast.BertModel(tiny_config(), impl="triton")
    with pytest.raises(DeviceError, match="needs CUDA tensors"):
        model(**random_batch(model.config))


def test_switching_keeps_weights_and_reaches_the_encoder():
    model = bert_fast.BertForPreTraining(tiny_config(), impl="reference")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_impl("triton")
    assert model.impl == model.bert.impl == "triton"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_dispatch_picks_layouts():
    assert ops.resolve("reference", torch.device("cpu")).packed is False
    assert ops.resolve("auto", torch.device("cpu")) is ops.REFERENCE
    assert ops.resolve("auto", torch.device("cuda")).name == "triton"


def test_auto_takes_the_fused_path_where_it_was_measured_faster():
    """On CUDA: BERT-base's width and up (and every static batch, which only the fused path can serve in a graph);
    smaller models, measured slower on the fused path at small batches, take the reference path."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert ops.resolve("auto", cuda, hidden_size=768).name == "triton"
    assert ops.resolve("auto", cuda, hidden_size=384) is ops.REFERENCE
    assert ops.resolve("auto", cuda, hidden_size=384, static=True).name == "triton"
    assert ops.resolve("auto", cpu, hidden_size=1024, static=True) is ops.REFERENCE
    assert ops.resolve("triton", cuda, hidden_size=128).name == "triton"  # an explicit choice stands


def test_packed_layout_round_trip():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    layout = ops.packed_layout(mask, 3, 4, "cpu")
    assert layout.cu_seqlens.tolist() == [0, 3, 4, 8] and layout.max_seqlen == 4
    x = torch.randn(3, 4, 5)
    packed = layout.pack(x)
    assert packed.shape == (8, 5)
    back = layout.unpack(packed)
    assert torch.equal(back[mask.bool()], x[mask.bool()]) and not back[~mask.bool()].any()
    assert torch.equal(layout.first_tokens(packed), x[:, 0])


def _ops_called(fn) -> set[str]:
    """Names of the ATen and custom ops fn() runs (a dispatch mode sees every op below autograd)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    with Recorder() as recorder:
        fn()
    return recorder.names


def test_fused_linear_gelu_setting_picks_the_ffn_gemm(monkeypatch):
    """Off (the default until measured): cuBLAS then the bias_gelu kernel. On: one linear_gelu GEMM, the variant
    the setting names; the output is the same either way."""
    kernel_module = sys.modules["bert_fast_kernels.linear_gelu"]
    persistent_launches = []
    launch = kernel_module._launch_persistent
    monkeypatch.setattr(kernel_module, "_launch_persistent",
                        lambda *a, **k: persistent_launches.append(1) or launch(*a, **k))
    ffn = ops.triton_ops().linear_gelu
    x, weight, bias = torch.randn(5, 16), torch.randn(24, 16) / 4, torch.randn(24)
    previous = bert_fast.set_fused_linear_gelu(False)
    try:
        split = _ops_called(lambda: ffn(x, weight, bias, "none"))
        y_split = ffn(x, weight, bias, "none")
        assert bert_fast.set_fused_linear_gelu(True) is False
        fused = _ops_called(lambda: ffn(x, weight, bias, "none"))
        y_fused = ffn(x, weight, bias, "none")
        assert not persistent_launches
        assert bert_fast.set_fused_linear_gelu("persistent") == "tiled"  # True means the tiled kernel
        y_persistent = ffn(x, weight, bias, "none")
        assert persistent_launches == [1]
        with pytest.raises(ValueError, match="must be True, False, 'tiled' or 'persistent'"):
            bert_fast.set_fused_linear_gelu("yes")
    finally:
        bert_fast.set_fused_linear_gelu(previous)
    assert "bert_fast.bias_gelu_fwd" in split and "bert_fast.linear_gelu_fwd" not in split
    assert "bert_fast.linear_gelu_fwd" in fused and "bert_fast.bias_gelu_fwd" not in fused
    torch.testing.assert_close(y_fused, y_split, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_persistent, y_split, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value, setting", [("0", False), ("1", "tiled"), ("tiled", "tiled"),
                                            ("persistent", "persistent")])  # fmt: skip
def test_fused_linear_gelu_from_the_environment(monkeypatch, value, setting):
    monkeypatch.setenv("BERT_FAST_FUSED_LINEAR_GELU", value)
    assert ops._setting_from_environment() == setting


def test_bad_fused_linear_gelu_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("BERT_FAST_FUSED_LINEAR_GELU", "yes")
    with pytest.raises(ValueError, match="BERT_FAST_FUSED_LINEAR_GELU='yes'"):
        ops._setting_from_environment()
