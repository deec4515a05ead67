"""Host time per call: what launching our kernels costs the CPU, by layer of the call.

The first H100 run (bench/NOTES.md §6) found small workloads bound by the host, not by kernels. This separates
the layers a call goes through, on a shape small enough that the GPU finishes first, so every number is host
time (wall time per call over many calls, no sync inside the loop):
  launcher   the module's launch function alone (checks, allocations, Triton's Autotuner and JIT launch)
  eager      the public function in plain eager mode (EagerOp: a plain autograd.Function around the launcher)
  custom-op  the registered torch custom op (torch.ops.bert_fast.*), what torch.compile's graphs call
  torch      the PyTorch reference on the same inputs, for scale
each for the forward alone and for forward + backward (torch.autograd.grad), and for one whole encoder layer
(layer-triton: the packed fast path; layer-reference: the padded reference path, Hugging Face's computation).

Each is measured along four launch paths (the `path` column):
  lean       our cached launch path (bert_fast_kernels._launch; BERT_FAST_LEAN_LAUNCH=1): Triton's Python path once
             per kind
  triton     Triton's own path on every call (kernel[grid](...): Autotuner.run, JITFunction.run)
  no-jit     Triton's path with JITFunction.run stubbed: the Autotuner's and our own host code
  ours       Autotuner.run and Heuristics.run stubbed too: only our own host code (and PyTorch's)
Stubbed calls compute nothing, so only their times mean anything.

Without a GPU there are two ways to run it. Plain, the kernels would run in Triton's interpreter, so only "ours"
is measured. With --stub-driver (bench/stub_driver.py), kernels compile for sm_90 and every path runs as on an
H100 except the C launcher's call into the CUDA driver: the host cost of Triton's path and of ours, measured
without a GPU (half precision, so the attention kernels take their autotuned path as they do on one).

    python -m bench.bench_launch                 # GPU: rows appended to bench/results/launch.jsonl
    python -m bench.bench_launch --stub-driver   # CPU: every path but the driver call; --save appends the rows
    python -m bench.bench_launch --quick         # a smoke run, not saved
"""


from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import time

import torch

from bench.common import format_table, save_rows

NAME = "launch"
PATHS = ("lean", "triton", "no-jit", "ours")


@contextlib.contextmanager
def launch_path(path: str):
    """Launch through `path` (see the module docstring) until exit: our cached launch path or Triton's own, with
    parts of Triton's replaced by a no-op. Restores everything on exit."""
    from bert_fast_kernels._launch import set_lean_launch
    from triton.runtime import autotuner, interpreter, jit

    stubs = {
        "lean": [],
        "triton": [],
        "no-jit": [(jit.JITFunction, "run"), (interpreter.InterpretedFunction, "run")],
        "ours": [(jit.JITFunction, "run"), (interpreter.InterpretedFunction, "run"),
                 (autotuner.Autotuner, "run"), (autotuner.Heuristics, "run")],
    }[path]
    saved = [(cls, name, cls.__dict__[name]) for cls, name in stubs]
    lean = set_lean_launch(path == "lean")
    try:
        for cls, name in stubs:
            setattr(cls, name, lambda self, *args, **kwargs: None)
        yield
    finally:
        set_lean_launch(lean)
        for cls, name, method in saved:
            setattr(cls, name, method)


def host_us(fn, calls: int, cuda: bool) -> float:
    """Mean microseconds per call, measured without a sync in the loop (warm-up first): wall time on a GPU host;
    without a GPU, the CPU time of this thread, which a busy shared machine's other tenants do not inflate."""
    clock = time.perf_counter if cuda else time.thread_time
    for _ in range(max(1, calls // 10)):
        fn()
    if cuda:
        torch.cuda.synchronize()
    start = clock()
    for _ in range(calls):
        fn()
    elapsed = clock() - start
    if cuda:
        torch.cuda.synchronize()
    return elapsed / calls * 1e6


def cases(device: str, dtype: torch.dtype) -> dict:
    """{op: (inputs, {layer: forward fn(*inputs)})} at shapes whose kernels take microseconds."""
    from bert_fast_kernels import (
        add_layer_norm,
        add_layer_norm_ref,
        bias_gelu,
        bias_gelu_ref,
        varlen_attention_qkvpacked,
        varlen_attention_ref,
    )

    bg = importlib.import_module("bert_fast_kernels.bias_gelu")
    ln = importlib.import_module("bert_fast_kernels.add_layer_norm")
    att = importlib.import_module("bert_fast_kernels.varlen_attention")
    attention_fwd = importlib.import_module("bert_fast_kernels.attention_fwd")

    def randn(*shape):
        return torch.randn(*shape, device=device).to(dtype)

    heads, head_dim, lengths = 2, 64, (64, 40)
    cu = torch.tensor([0, lengths[0], sum(lengths)], dtype=torch.int32, device=device)
    max_len, scale = max(lengths), head_dim**-0.5

    def attention_ref(qkv):
        q, k, v = qkv.unbind(1)
        return varlen_attention_ref(q, k, v, cu, max_len)

    return {
        "bias_gelu": ([randn(128, 256), randn(256)], {
            "launcher": lambda x, b: bg.bias_gelu_fwd(x, b, "none"),
            "eager": bias_gelu,
            "custom-op": lambda x, b: torch.ops.bert_fast.bias_gelu_fwd(x, b, "none"),
            "torch": bias_gelu_ref,
        }),
        "add_layer_norm": ([randn(128, 256), randn(128, 256), randn(256), randn(256)], {
            "launcher": lambda x, r, w, b: ln.add_layer_norm_fwd(x, r, w, b, 1e-12)[0],
            "eager": lambda x, r, w, b: add_layer_norm(x, r, w, b),
            "custom-op": lambda x, r, w, b: torch.ops.bert_fast.add_layer_norm_fwd(x, r, w, b, None, 1e-12, 0.0, 0,
                                                                                  None, False)[0],
            "torch": lambda x, r, w, b: add_layer_norm_ref(x, r, w, b),
        }),
        "attention": ([randn(sum(lengths), 3, heads, head_dim)], {
            "launcher": lambda qkv: attention_fwd.varlen_attention_fwd(*qkv.unbind(1), cu, max_len, 0.0, scale, 0)[0],
            "eager": lambda qkv: varlen_attention_qkvpacked(qkv, cu, max_len, validate=False),
            "custom-op": lambda qkv: att._packed_fwd_op(qkv, cu, max_len, 0.0, scale, 0, None, True)[0],
            "torch": attention_ref,
        }),
    }


# The model-level cases: one layer, and whole training steps of two model structures, each on the fused path
# (impl="triton", through each launch path) and on the reference path, at widths and lengths small enough that a
# CPU's GEMMs take little time, so what is measured is the host's work around them. Without dropout: on CPU
# tensors the reference path's dropout would be the CPU drawing random numbers, work a GPU does, not the host;
# the "-dropout" cases show what dropout adds to the fused path (its seeds).
TINY = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 1000,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
STEPS = {  # case: (layers, model class name, objective)
    "step-minilm": (6, "BertForSequenceClassification", "classification"),  # all-MiniLM-L6-v2's depth
    "step-base": (12, "BertForPreTraining", "mlm+nsp"),  # BERT-base's depth
}
LENGTHS = (24, 13)  # two sequences, one padded


def _batch(device):
    seq = max(LENGTHS)
    mask = torch.zeros(len(LENGTHS), seq, dtype=torch.long, device=device)
    for i, n in enumerate(LENGTHS):
        mask[i, :n] = 1
    ids = torch.randint(1, TINY["vocab_size"], mask.shape, device=device) * mask
    return ids, mask


def model_cases(device: str, dtype: torch.dtype, steps: bool = True) -> dict:
    """{case: {impl: (fn(), leaves)}}: a training layer and two training steps (forward and loss; the backward is
    _timed_model_call's) on each implementation, and the fused layer and MiniLM step with dropout 0.1."""
    import bert_fast
    from bert_fast import ops as ops_lib
    from bert_fast.modeling import BertLayer

    ids, mask = _batch(device)
    fast, reference = ops_lib.resolve("triton", torch.device(device)), ops_lib.REFERENCE
    packed = fast.layout(mask, *mask.shape, device)
    padded = reference.layout(mask, *mask.shape, device)
    cases = {}
    for case, dropout in (("encoder-layer", 0.0), ("encoder-layer-dropout", 0.1)):
        config = bert_fast.BertConfig(num_hidden_layers=1, **{**TINY, "hidden_dropout_prob": dropout,
                                                              "attention_probs_dropout_prob": dropout})
        layer = BertLayer(config).to(device=device, dtype=dtype).train()
        hidden = torch.randn(*mask.shape, config.hidden_size, device=device, dtype=dtype, requires_grad=True)
        packed_hidden = packed.pack(hidden.detach()).requires_grad_()
        cases[case] = {"triton": (lambda layer=layer, h=packed_hidden: layer(h, packed, fast),
                                  [packed_hidden, *layer.parameters()])}
        if not dropout:
            cases[case]["reference"] = (lambda layer=layer, h=hidden: layer(h, padded, reference),
                                        [hidden, *layer.parameters()])
    labels = torch.where(torch.rand(mask.shape, device=device) < 0.15, ids, -100).masked_fill(mask == 0, -100)
    labels[0, 0] = ids[0, 0]  # at least one masked position
    step_cases = [(case, spec, 0.0) for case, spec in STEPS.items()]
    step_cases += [("step-minilm-dropout", STEPS["step-minilm"], 0.1)]
    for case, (layers, class_name, objective), dropout in step_cases if steps else ():
        config = bert_fast.BertConfig(num_hidden_layers=layers, num_labels=2, **{
            **TINY, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout})
        cases[case] = {}
        for impl in ("triton", "reference")[:1 if dropout else 2]:
            model = getattr(bert_fast, class_name)(config, impl=impl).to(device=device, dtype=dtype).train()
            if objective == "classification":
                targets = {"labels": torch.tensor([0, 1], device=device)}
            else:
                targets = {"labels": labels, "next_sentence_label": torch.tensor([0, 1], device=device)}
            cases[case][impl] = (
                lambda model=model, targets=targets: model(ids, attention_mask=mask, **targets).loss,
                [p for p in model.parameters() if p.requires_grad],
            )
    return cases


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few calls, nothing saved: a smoke run")
    parser.add_argument("--stub-driver", action="store_true",
                        help="no GPU: Triton's compiled launch path with the driver call stubbed (bench/stub_driver.py)")
    parser.add_argument("--save", action="store_true", help="without a GPU, append this machine's rows too")
    parser.add_argument("--only", choices=("ops", "models"), help="only the per-op cases, or only layer and steps")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.stub_driver:
        from bench import stub_driver

        stub_driver.install()  # before anything imports the kernels
        device, dtype, paths = "cpu", torch.float16, PATHS
    elif cuda:
        device, dtype, paths = "cuda", torch.bfloat16, PATHS
    else:  # the interpreter would run the kernels themselves: only our own host code is measured
        os.environ.setdefault("TRITON_INTERPRET", "1")
        device, dtype, paths = "cpu", torch.float32, ("ours",)
    if device == "cpu":
        torch.set_num_threads(1)  # tiny CPU ops: threads add noise, not speed
    # The fused rows time the encoder layer as one autograd node (bert_fast.fused_layer), off by default on CUDA
    # until its GPU tests pass; BERT_FAST_FUSED_LAYER=0 times the step-by-step layer instead.
    if "BERT_FAST_FUSED_LAYER" not in os.environ:
        import bert_fast

        bert_fast.set_fused_layer(True)
    # without a GPU, many short trials: the fastest of them is what the code costs, the rest is the machine's noise
    calls, repeats = (20, 1) if args.quick else (500, 3) if cuda else (200, 15)
    where = "cuda" if cuda else "cpu, stub driver" if args.stub_driver else "cpu, interpreter"

    rows = []
    if args.only != "models":
        rows += _op_rows(cases(device, dtype), paths, calls, repeats, cuda, where)
    if args.only != "ops":
        # CPU GEMMs in half precision take a millisecond each at any size: the CPU runs the models in float32
        model_dtype = dtype if cuda else torch.float32
        fused_paths = [p for p in ("lean", "triton", "ours") if p in paths]
        cases_ = model_cases(device, model_dtype, steps=not args.quick)  # a smoke run: the layer only
        rows += _model_rows(cases_, fused_paths, calls, repeats, cuda, where)

    if not args.quick and (cuda or args.save):
        save_rows(NAME, rows)
    print(f"\nhost µs per call ({where}; paths: {', '.join(paths)}" + (", not saved)" if args.quick else ")"))
    if args.only != "models":
        columns = [f"{layer} {path}" for layer in ("launcher", "eager", "custom-op", "torch") for path in paths]
        print(_table(rows, ("bias_gelu", "add_layer_norm", "attention"), columns))
    if args.only != "ops":
        print(model_table(rows))


def _op_rows(op_cases, paths, calls, repeats, cuda, where) -> list[dict]:
    rows = []
    for op, (inputs, layers) in op_cases.items():
        for layer, fn in layers.items():
            for mode in ("fwd", "fwd+bwd"):
                if mode == "fwd+bwd" and layer == "launcher":
                    continue  # launchers have no autograd
                call = _timed_call(fn, inputs, mode)
                trials = {path: [] for path in paths}
                for _ in range(repeats):  # the paths take turns, so a slow spell of the machine hits them all
                    for path in paths:
                        with launch_path(path):
                            trials[path].append(host_us(call, calls, cuda))
                for path, times in trials.items():
                    us = min(times)
                    rows.append({"op": op, "layer": layer, "mode": mode, "path": path, "host": where, "host_us": us})
                    print(f"{op:15s} {layer:15s} {mode:8s} {path:7s} {us:9.1f} us per call", flush=True)
    return rows


def _model_rows(cases_, fused_paths, calls, repeats, cuda, where) -> list[dict]:
    """The fused path along each launch path and the reference path, taking turns trial by trial."""
    rows = []
    for case, impls in cases_.items():
        kind = "layer" if case.startswith("encoder-layer") else "step"
        modes = ("fwd", "fwd+bwd") if kind == "layer" else ("fwd+bwd",)
        n = calls if kind == "layer" else max(1, calls // 10)  # a step is many layers
        for mode in modes:
            variants = [("triton", path) for path in fused_paths] + [("reference", "-")] * ("reference" in impls)
            timed = {impl: _timed_model_call(*impls[impl], mode) for impl in impls}
            trials = {v: [] for v in variants}
            for _ in range(repeats):
                for impl, path in variants:
                    with launch_path(path if path != "-" else "triton"):
                        trials[(impl, path)].append(host_us(timed[impl], n, cuda))
            for (impl, path), times in trials.items():
                us = min(times)
                rows.append({"op": case, "layer": f"{kind}-{impl}", "mode": mode, "path": path, "host": where,
                             "host_us": us})
                print(f"{case:15s} {kind + '-' + impl:15s} {mode:8s} {path:7s} {us:9.1f} us per call", flush=True)
    return rows


def _timed_model_call(fn, leaves, mode):
    if mode == "fwd":

        def call():
            with torch.no_grad():
                fn()

        return call
    out = fn()
    grad = torch.randn_like(out)

    def call():
        torch.autograd.grad(fn(), leaves, grad, allow_unused=True)

    return call


def model_table(rows) -> str:
    """Per layer and per step: the reference path, the fused path along each launch path, and fused / reference."""
    table = {}
    for r in rows:
        if r["layer"].startswith(("layer-", "step-")):
            entry = table.setdefault((r["op"], r["mode"]), {"case": r["op"], "mode": r["mode"]})
            entry["reference" if r["layer"].endswith("reference") else f"fused {r['path']}"] = r["host_us"]
    columns = ["case", "mode", "reference"]
    for entry in table.values():
        for key in [k for k in entry if k.startswith("fused ")]:
            if "reference" in entry:
                entry[f"{key} / reference"] = round(entry[key] / entry["reference"], 2)
            columns += [c for c in (key, f"{key} / reference") if c not in columns]
    return format_table(list(table.values()), columns)


def _timed_call(fn, inputs, mode):
    if mode == "fwd":

        def call():
            with torch.no_grad():
                fn(*inputs)

        return call
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    dy = torch.randn_like(fn(*leaves))

    def call():
        torch.autograd.grad(fn(*leaves), leaves, dy)

    return call


def _table(rows, ops, columns) -> str:
    table = {}
    for r in rows:
        if r["op"] in ops:
            table.setdefault((r["op"], r["mode"]), {"op": r["op"], "mode": r["mode"]})[f"{r['layer']} {r['path']}"] = (
                r["host_us"])
    return format_table(list(table.values()), ["op", "mode", *columns])


if __name__ == "__main__":
    main()
