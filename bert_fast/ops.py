"""The dispatch layer: the one place that knows which implementation computes a BERT layer's fused steps.

Modules call `ops.<step>(...)` and `layout.<step>(...)`; they never branch on the implementation. An `Ops`
bundles the functions of one implementation and how it lays a batch out:

- "reference": kernels' plain PyTorch references on the padded (batch, seq, hidden) batch with a key mask,
  which is exactly Hugging Face's computation;
- "triton": our fused kernels on the packed (tokens, hidden) tensor of real tokens only; each encoder layer one
  autograd node in eager mode (fused_layer.py), step by step (custom ops) where torch.compile traces.

"auto" resolves per forward: triton on CUDA for models of hidden size 768 and more (and for static batches),
reference elsewhere (AUTO_FUSED_MIN_HIDDEN says why).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import bert_fast_kernels as K
import torch

from .errors import DeviceError, SettingError

logger = logging.getLogger("bert_fast")

IMPLS = ("reference", "triton", "auto")


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise SettingError(f"impl={impl!r} is not one of {IMPLS}")
    return impl


# --- batch layouts ---------------------------------------------------------------------------------------


def _labelled(layout, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of x where a label is, those labels): labels (batch, seq) with -100 where none, in row-major order. The
    number of rows depends on the labels (a host sync); static layouts keep a fixed number instead."""
    labels = layout.pack(labels)
    selected = labels != -100  # (batch, seq) padded or (tokens,) packed: row-major order either way
    return x[selected], labels[selected]


def _unpack_all(layout, states):
    """Every layer's hidden states as (batch, seq, hidden), or None when they were not kept."""
    return tuple(layout.unpack(h) for h in states) if states else None


@dataclass
class PaddedLayout:
    """Hidden states as (batch, seq, hidden); attention masks padded keys. Hugging Face's layout."""

    key_padding_mask: torch.Tensor | None  # (batch, seq) bool, True for real tokens; None when nothing is padded
    batch_size: int
    seq_len: int

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, ...) with zeros at padded positions, as the packed layout gives them: what the encoder
        computes there attends to real tokens but is no token's state, and must not differ between the paths."""
        if self.key_padding_mask is None:
            return x
        real = self.key_padding_mask.reshape(*self.key_padding_mask.shape, *([1] * (x.dim() - 2)))
        return x.masked_fill(~real, 0)

    def first_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]  # (batch, hidden): the [CLS] position

    def labelled(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _labelled(self, x, labels)

    def unpack_all(self, states: list[torch.Tensor] | None) -> tuple[torch.Tensor, ...] | None:
        return _unpack_all(self, states)

    def attention(self, ops: Ops, qkv: torch.Tensor, dropout_p: float, softmax_scale: float | None):
        q, k, v = qkv.unbind(dim=-3)  # each (batch, seq, heads, head_dim)
        return ops.padded_attention(q, k, v, self.key_padding_mask, dropout_p=dropout_p, softmax_scale=softmax_scale)


@dataclass
class PackedLayout:
    """Hidden states as (tokens, hidden) holding only the real tokens of the batch, sequence after sequence."""

    indices: torch.Tensor | None  # (tokens,) flat positions of real tokens in (batch * seq); None: all are real
    cu_seqlens: torch.Tensor  # (batch + 1,) int32 offsets of each sequence in the packed tensor
    max_seqlen: int
    batch_size: int
    seq_len: int

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, ...) -> (tokens, ...)."""
        flat = x.reshape(self.batch_size * self.seq_len, *x.shape[2:])
        return flat if self.indices is None else flat.index_select(0, self.indices)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, ...) -> (batch, seq, ...), zeros at padded positions."""
        if self.indices is None:
            return x.reshape(self.batch_size, self.seq_len, *x.shape[1:])
        out = x.new_zeros(self.batch_size * self.seq_len, *x.shape[1:])
        out = out.index_copy(0, self.indices, x)
        return out.reshape(self.batch_size, self.seq_len, *x.shape[1:])

    def first_tokens(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, hidden): every sequence keeps its [CLS]. An empty sequence at the very end has no first token;
        # the clamp keeps the gather in bounds (its row is meaningless, as a fully padded row's is).
        starts = self.cu_seqlens[:-1].long().clamp(max=max(x.shape[0] - 1, 0))
        return x.index_select(0, starts)

    def labelled(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _labelled(self, x, labels)

    def unpack_all(self, states: list[torch.Tensor] | None) -> tuple[torch.Tensor, ...] | None:
        return _unpack_all(self, states)

    def attention(self, ops: Ops, qkv: torch.Tensor, dropout_p: float, softmax_scale: float | None):
        # qkv: (tokens, 3, heads, head_dim)
        return ops.varlen_attention_qkvpacked(
            qkv, self.cu_seqlens, self.max_seqlen, dropout_p=dropout_p, softmax_scale=softmax_scale
        )


def padded_layout(attention_mask: torch.Tensor | None, batch_size: int, seq_len: int) -> PaddedLayout:
    mask = None if attention_mask is None else attention_mask.bool()
    return PaddedLayout(mask, batch_size, seq_len)


def packed_layout(attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device) -> PackedLayout:
    """Find the real tokens once; every layer then runs on them alone.

    max_seqlen is the padded width, an upper bound of every length, so no device-to-host sync is needed for it
    (kernels skip the blocks past a sequence's end).
    """
    if attention_mask is None:
        cu_seqlens = torch.arange(0, (batch_size + 1) * seq_len, seq_len, dtype=torch.int32, device=device)
        return PackedLayout(None, cu_seqlens, seq_len, batch_size, seq_len)
    mask = attention_mask.bool()
    cu_seqlens = K.cu_seqlens_from_mask(mask)
    indices = mask.flatten().nonzero().flatten()
    return PackedLayout(indices, cu_seqlens, seq_len, batch_size, seq_len)


class PrepackedLayout(PackedLayout):
    """Inputs that arrive packed already (tokens,), with their cu_seqlens: nothing to pack or unpack."""

    def __init__(self, cu_seqlens: torch.Tensor, max_seqlen: int):
        super().__init__(None, cu_seqlens, max_seqlen, cu_seqlens.shape[0] - 1, max_seqlen)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class StaticLayout(PackedLayout):
    """A bucket's packed layout (bert_fast.buckets): every shape is the bucket's, none depends on the batch, and no
    value is read on the host, so a forward on it traces as one graph and can be captured as a CUDA graph.

    Tokens (bucket tokens,): the real ones sequence after sequence, then filler sequences of [PAD] tokens that no
    real token attends to. Inputs arrive packed; outputs unpack to (batch, seq) = the bucket's (slots, width).
    """

    scatter_index: torch.Tensor | None = None  # (tokens,) int64 flat position in (batch * seq); batch * seq: filler
    starts: torch.Tensor | None = None  # (batch,) int64: each sequence's first packed token
    labelled_positions: torch.Tensor | None = None  # (budget,) int64 packed tokens with an MLM label (0: filler)
    choices: int = 1  # sequences per example (multiple choice)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, ...) -> (batch, seq, ...), zeros at padding; filler lands in one extra row, dropped."""
        rows = self.batch_size * self.seq_len
        out = x.new_zeros(rows + 1, *x.shape[1:]).index_copy(0, self.scatter_index, x)
        return out[:rows].view(self.batch_size, self.seq_len, *x.shape[1:])

    def first_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(0, self.starts)

    def labelled(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """labels: (budget,) aligned with labelled_positions, -100 in the unused tail."""
        return x.index_select(0, self.labelled_positions), labels


# --- implementations -------------------------------------------------------------------------------------


def _qkvpacked(attention: Callable) -> Callable:
    """Adapt a (q, k, v, ...) varlen attention to the packed (tokens, 3, heads, head_dim) call."""

    def call(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None):
        q, k, v = qkv.unbind(dim=1)
        return attention(q, k, v, cu_seqlens, max_seqlen, dropout_p=dropout_p, softmax_scale=softmax_scale)

    return call


def layer_by_steps(layer, hidden, layout, ops):
    """An encoder layer as its modules compute it, one step after another."""
    return layer.forward_steps(hidden, layout, ops)


@dataclass(frozen=True)
class Ops:
    name: str
    bias_gelu: Callable  # (x, bias, approximate) -> gelu(x + bias)
    linear_gelu: Callable  # (x, weight, bias, approximate) -> gelu(x @ weight.T + bias): the FFN up-projection
    add_layer_norm: Callable  # (x, residual, weight, bias, eps, x_bias=, dropout_p=, return_residual=) -> y
    padded_attention: Callable | None  # (q, k, v, key_padding_mask, dropout_p=, softmax_scale=) -> out; padded only
    varlen_attention_qkvpacked: Callable  # (qkv, cu_seqlens, max_seqlen, dropout_p=, softmax_scale=) -> out
    packed: bool  # run the encoder on packed real tokens
    encoder_layer: Callable = layer_by_steps  # (layer, hidden, layout, ops) -> the layer's output

    def layout(self, attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device) -> object:
        if self.packed:
            return packed_layout(attention_mask, batch_size, seq_len, device)
        return padded_layout(attention_mask, batch_size, seq_len)


def _reference_add_layer_norm(x, residual, weight, bias, eps, x_bias=None, dropout_p=0.0, return_residual=False):
    return K.add_layer_norm_ref(x, residual, weight, bias, eps, x_bias=x_bias, dropout_p=dropout_p,
                                return_residual=return_residual)


def _split_linear_gelu(bias_gelu: Callable) -> Callable:
    """The projection on cuBLAS (bias left out), then bias + GELU in one elementwise step."""

    def call(x, weight, bias, approximate):
        return bias_gelu(torch.nn.functional.linear(x, weight), bias, approximate)

    return call


REFERENCE = Ops(
    name="reference",
    bias_gelu=K.bias_gelu_ref,
    linear_gelu=_split_linear_gelu(K.bias_gelu_ref),
    add_layer_norm=_reference_add_layer_norm,
    padded_attention=K.padded_attention_ref,
    varlen_attention_qkvpacked=_qkvpacked(K.varlen_attention_ref),
    packed=False,
)


# The FFN up-projection (and the MLM head's transform) as one Triton GEMM with bias + GELU in its epilogue
# (bert_fast_kernels.linear_gelu) rather than cuBLAS and then the bias_gelu kernel. It saves a round trip of the
# (tokens, 4 hidden) activation, but only pays if the Triton GEMM keeps up with cuBLAS at BERT's shapes, which
# bench/bench_linear_gelu.py measures. Off until it has been measured on a GPU (bench/NOTES.md). The setting is
# False (off) or the kernel variant to run: "tiled" or "persistent".
FUSED_LINEAR_GELU_SETTINGS = (False, "tiled", "persistent")


def _fused_setting(value: bool | str) -> bool | str:
    if value is True:
        return "tiled"
    if value not in FUSED_LINEAR_GELU_SETTINGS:
        raise ValueError(f"fused linear_gelu setting must be True, False, 'tiled' or 'persistent', got {value!r}")
    return value


def _setting_from_environment() -> bool | str:
    value = os.environ.get("BERT_FAST_FUSED_LINEAR_GELU", "0")
    try:
        return _fused_setting({"0": False, "1": True}.get(value, value))
    except ValueError as exc:
        raise ValueError(f"BERT_FAST_FUSED_LINEAR_GELU={value!r}: {exc}") from None


_fused_linear_gelu = _setting_from_environment()


def fused_linear_gelu_enabled() -> bool:
    return bool(_fused_linear_gelu)


# The encoder layer as one autograd node (fused_layer.py) has not run on a GPU yet: until its GPU tests pass there it
# is off on CUDA, where the fused path runs the layer step by step (custom ops, each its own autograd node), and on
# under Triton's interpreter, where the CPU tests run it. BERT_FAST_FUSED_LAYER=1 or 0, or set_fused_layer(),
# chooses either way.
_fused_layer: bool | None = {"1": True, "0": False}.get(os.environ.get("BERT_FAST_FUSED_LAYER", ""))


def set_fused_layer(enabled: bool | None) -> bool | None:
    """Run each encoder layer of the fused path as one autograd node (True), step by step (False), or by the
    default (None: one node only under the interpreter). Returns the previous setting."""
    global _fused_layer
    previous, _fused_layer = _fused_layer, enabled
    return previous


def fused_layer_enabled() -> bool:
    from bert_fast_kernels._common import interpreting

    return interpreting() if _fused_layer is None else _fused_layer


def set_fused_linear_gelu(setting: bool | str) -> bool | str:
    """Run impl="triton"'s FFN up-projection as one fused Triton GEMM, or as cuBLAS + bias_gelu (False).

    setting: False, True (the "tiled" kernel), "tiled" or "persistent" (one program per SM, TMA; Hopper and newer).
    Returns the previous setting, so `set_fused_linear_gelu(previous)` restores it. The environment variable
    BERT_FAST_FUSED_LINEAR_GELU (0, 1, tiled, persistent) sets it at import. Half precision only (fp16 / bf16,
    autocast included): fp32 always takes cuBLAS, except under Triton's CPU interpreter, where the tests run the
    fused kernel in fp32.
    """
    global _fused_linear_gelu
    previous, _fused_linear_gelu = _fused_linear_gelu, _fused_setting(setting)
    return previous


def _gemm_dtype(x: torch.Tensor) -> torch.dtype:
    device_type = x.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype


def _linear_gelu_by_setting(split: Callable) -> Callable:
    """The split form, or the fused GEMM when the setting asks for it."""
    from bert_fast_kernels._common import interpreting

    def call(x, weight, bias, approximate):
        if _fused_linear_gelu and (_gemm_dtype(x) != torch.float32 or interpreting()):
            return K.linear_gelu(x, weight, bias, approximate, variant=_fused_linear_gelu)
        return split(x, weight, bias, approximate)

    return call


def _attention_for_head_dims(kernel: Callable, reference: Callable) -> Callable:
    """The attention kernel serves the head dims it was built for; others take the reference (and say so once)."""
    warned: set[int] = set()

    def call(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None):
        head_dim = qkv.shape[-1]
        if head_dim in K.ATTENTION_HEAD_DIMS:
            return kernel(qkv, cu_seqlens, max_seqlen, dropout_p=dropout_p, softmax_scale=softmax_scale)
        if head_dim not in warned and not torch.compiler.is_compiling():
            warned.add(head_dim)
            logger.warning("bert_fast: head_dim %d has no attention kernel (%s); using the PyTorch reference",
                           head_dim, K.ATTENTION_HEAD_DIMS)
        return reference(qkv, cu_seqlens, max_seqlen, dropout_p=dropout_p, softmax_scale=softmax_scale)

    return call


def _build_triton_ops() -> Ops:
    from .fused_layer import fused_encoder_layer

    return Ops(
        name="triton",
        bias_gelu=K.bias_gelu,
        linear_gelu=_linear_gelu_by_setting(_split_linear_gelu(K.bias_gelu)),
        add_layer_norm=K.add_layer_norm,
        padded_attention=None,  # the fused path always packs
        # The layouts build cu_seqlens themselves (forward_packed validates what callers pass), so the per-call
        # check, a device sync in every layer, is skipped.
        varlen_attention_qkvpacked=_attention_for_head_dims(
            functools.partial(K.varlen_attention_qkvpacked, validate=False), REFERENCE.varlen_attention_qkvpacked
        ),
        packed=True,
        encoder_layer=fused_encoder_layer(layer_by_steps),
    )


_TRITON: Ops | None = None


def triton_ops() -> Ops:
    global _TRITON
    if _TRITON is None:
        _TRITON = _build_triton_ops()
    return _TRITON


def kernels_usable(device: torch.device) -> bool:
    """Triton kernels run on CUDA, or on the CPU only under Triton's interpreter."""
    from bert_fast_kernels._common import interpreter_requested

    return device.type == "cuda" or interpreter_requested()


# impl="auto" on CUDA: the fused path where it was measured faster than the plain PyTorch one, the reference path
# where it was measured slower (small models at small batches, bound by the host; bench/NOTES.md §10 has the rows
# and the stage that re-measures them). Static batches (buckets, captured graphs) always take the fused path: the
# reference's attention reads sequence lengths on the host, which a graph cannot hold.
AUTO_FUSED_MIN_HIDDEN = 768


def auto_uses_fused(device: torch.device, hidden_size: int | None = None, static: bool = False) -> bool:
    """The rule impl="auto" follows (see AUTO_FUSED_MIN_HIDDEN)."""
    if device.type != "cuda":
        return False
    return static or hidden_size is None or hidden_size >= AUTO_FUSED_MIN_HIDDEN


def resolve(impl: str, device: torch.device, hidden_size: int | None = None, static: bool = False) -> Ops:
    """The Ops for an impl setting, the device the batch lives on and, for impl="auto", the model's hidden size and
    whether the batch is a static one (a bucket's)."""
    if impl == "reference":
        return REFERENCE
    if impl == "triton":
        if not kernels_usable(device):
            raise DeviceError(
                f"impl='triton' needs CUDA tensors (the batch is on {device}); use impl='reference' or 'auto' on "
                "the CPU, or set TRITON_INTERPRET=1 to run the kernels in Triton's interpreter"
            )
        return triton_ops()
    return triton_ops() if auto_uses_fused(device, hidden_size, static) else REFERENCE
