"""`bert-fast audit`: does the fused path compute what the reference computes, on my checkpoint and my texts?

Every hidden state and the pooler output, fused path against reference path: max abs error and per-token cosine
in fp32 and in the dtype asked, printed as a table and written as JSON. Exits 1 when any state is outside the
tolerances the tests use (bert_fast/audit.py). Without CUDA the kernels run in Triton's interpreter (fp32, fp16).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..errors import DataError


def add_arguments(parser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="checkpoint folder (any served family)")
    parser.add_argument("--input", type=Path, required=True, help="a UTF-8 file with one text per line")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32",
                        help="also check this dtype against the fp32 reference (bf16 needs CUDA)")
    parser.add_argument("--output", type=Path, default=Path("audit.json"), help="JSON report (default audit.json)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, help="truncate texts to this many tokens (default: the model's)")
    parser.add_argument("--device", help="default: cuda when available, else the CPU with Triton's interpreter")


def _needs_interpreter(args) -> bool:
    import torch
    from bert_fast_kernels._common import interpreting

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return not device.startswith("cuda") and not interpreting()


def run(args) -> int:
    if not args.input.is_file():
        raise DataError(f"no such input file {args.input}")
    if _needs_interpreter(args):
        # Triton picks its interpreter when the kernels are defined, at import: run the audit in a process that
        # imports them with TRITON_INTERPRET=1.
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        argv = ["audit", "--model", str(args.model), "--input", str(args.input), "--dtype", args.dtype, "--output",
                str(args.output), "--batch-size", str(args.batch_size)]
        argv += ["--max-length", str(args.max_length)] if args.max_length else []
        argv += ["--device", args.device] if args.device else []
        return subprocess.run([sys.executable, "-m", "bert_fast.cli", *argv], env=env, check=False).returncode
    from ..audit import audit, format_table

    texts = args.input.read_text(encoding="utf-8").splitlines()
    report = audit(args.model, texts, args.dtype, args.device, args.batch_size, args.max_length)
    print(format_table(report))
    args.output.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(f"report written to {args.output}", file=sys.stderr)
    return 0 if report.passed else 1
