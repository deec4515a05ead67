"""bert_fast_kernels: fused Triton kernels for BERT-style encoders, each beside its plain PyTorch reference.

Knows nothing of BERT. The references in `reference.py` are the specification; the kernels match them
within the tolerance rule of the tests (at most twice PyTorch's own error in the same dtype).
"""

if __name__ == "kernels":
    # This folder is `kernels/` in the source tree, so with the repository root on sys.path (`python -m ...` run
    # from there) `import kernels` finds it before the PyPI package `kernels` that transformers imports. Under
    # that name it hands over: the installed package replaces it in sys.modules (the import statement returns
    # whatever sys.modules holds once this file has run). Without one, it stays what import probes (transformers'
    # `_is_package_available`) call a namespace shadow, not an install: no __file__, no version, nothing defined,
    # no submodules. (Raising ModuleNotFoundError here instead breaks transformers 5.17, whose probe imports a
    # package it finds without metadata and does not catch the error.) Either way nothing of ours runs under this
    # name: our modules register torch custom ops, and a second copy of them would register the same ops twice.
    # Standard library only, and no submodule of ours: nothing may land in sys.modules under `kernels.`.
    import importlib.machinery
    import importlib.util
    import os
    import sys

    def _found_this_folder(entry: str) -> bool:
        try:
            return os.path.samefile(entry or os.curdir, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        except OSError:
            return False

    _spec = importlib.machinery.PathFinder.find_spec(
        "kernels", [entry for entry in sys.path if not _found_this_folder(entry)]
    )
    if _spec is not None and _spec.loader is not None:
        _installed = importlib.util.module_from_spec(_spec)
        sys.modules["kernels"] = _installed
        try:
            _spec.loader.exec_module(_installed)
        except BaseException:
            del sys.modules["kernels"]
            raise
    else:
        __all__: list[str] = []
        __path__: list[str] = []  # no submodule of ours can be imported as kernels.<name>
        del __file__, importlib, os, sys, _found_this_folder, _spec
elif __name__ != "bert_fast_kernels":
    # Any other name (a copy of the folder imported from elsewhere) defines nothing, for the same reason.
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
        cu_seqlens_from_mask,
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
        "cu_seqlens_from_mask",
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
