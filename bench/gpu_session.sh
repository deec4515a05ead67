#!/usr/bin/env bash
# One GPU session's worth of checks and benchmarks, in stages that each fit one 10-minute device call:
#   bash bench/gpu_session.sh tests        GPU tests (bf16 kernels, model parity, CUDA graphs, convergence)
#   bash bench/gpu_session.sh kernels      elementwise + attention benchmarks
#   bash bench/gpu_session.sh e2e          end-to-end benchmark against Hugging Face (base; "e2e-full" adds large)
# Runs from the source tree (no install): the image has torch, triton and transformers. Logs and result rows are
# copied to $OUT (the device tool's folder) when it is set, else to bench/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .dev && ln -sfn ../kernels .dev/bert_fast_kernels && ln -sfn ../bert_fast .dev/bert_fast
export PYTHONPATH="$PWD/.dev:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" \
  | tee -a "$OUT/gpu.txt"

case "${1:-tests}" in
  tests)
    python -m pytest -q -m gpu tests -p no:cacheprovider --durations=20 2>&1 | tee "$OUT/gpu_tests.log" ;;
  kernels)
    python -m bench.bench_elementwise 2>&1 | tee "$OUT/bench_elementwise.log"
    python -m bench.bench_attention 2>&1 | tee "$OUT/bench_attention.log"
    cp bench/results/elementwise.jsonl bench/results/attention.jsonl "$OUT/" 2>/dev/null ;;
  e2e)
    python -m bench.bench_e2e --quick 2>&1 | tee "$OUT/bench_e2e.log"
    cp bench/results/e2e.jsonl bench/results/e2e.md bench/results/e2e.png "$OUT/" 2>/dev/null ;;
  e2e-full)
    python -m bench.bench_e2e 2>&1 | tee "$OUT/bench_e2e.log"
    cp bench/results/e2e.jsonl bench/results/e2e.md bench/results/e2e.png "$OUT/" 2>/dev/null ;;
  *)
    echo "unknown stage $1"; exit 2 ;;
esac
