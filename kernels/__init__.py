"""bert_fast_kernels: fused Triton kernels for BERT-style encoders, each beside its plain PyTorch reference.

Knows nothing of BERT. The references in `reference.py` are the specification; the kernels match them
within the tolerance rule of the tests (at most twice PyTorch's own error in the same dtype).
"""

if __name__ != "bert_fast_kernels":
    # This folder is `kernels/` in the source tree, so with the repository root on sys.path (`python -m ...` run
    # from there) it is importable as `kernels`, the name of another package that transformers probes for by
    # importing it. Imported under that name it must define nothing: its modules register torch custom ops, and a
    # second registration of the same ops from a second copy of the modules corrupts the dispatcher.
    __all__: list[str] = []
else:
    from .add_layer_norm import add_layer_norm, add_layer_norm_dropout_mask
    from .attention_fwd import HEAD_DIMS as ATTENTION_HEAD_DIMS
    from .bias_gelu import bias_gelu
    from .linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_ref
    from .linear_gelu import linear_gelu
    from .reference import (
        add_layer_norm_ref,
        bias_gelu_ref,
        linear_gelu_ref,
        padded_attention_ref,
        varlen_attention_ref,
    )
    from .varlen_attention import (
        check_cu_seqlens,
        padded_attention,
        padded_dropout_mask,
        varlen_attention,
        varlen_attention_qkvpacked,
        varlen_dropout_mask,
    )

    __all__ = [
        "ATTENTION_HEAD_DIMS",
        "add_layer_norm",
        "add_layer_norm_dropout_mask",
        "add_layer_norm_ref",
        "bias_gelu",
        "bias_gelu_ref",
        "check_cu_seqlens",
        "linear_cross_entropy",
        "linear_cross_entropy_ref",
        "linear_gelu",
        "linear_gelu_ref",
        "padded_attention",
        "padded_attention_ref",
        "padded_dropout_mask",
        "varlen_attention",
        "varlen_attention_qkvpacked",
        "varlen_attention_ref",
        "varlen_dropout_mask",
    ]
