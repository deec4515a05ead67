#!/usr/bin/env bash
# One GPU session's worth of checks and benchmarks, in stages that each fit one 10-minute device call:
#   bash bench/gpu_session.sh next           the next session in one call: every GPU test, then `small` with the
#                                            one-node layer and device seeds on; a short table last (NOTES §4)
#   bash bench/gpu_session.sh tests-kernels  GPU kernel tests (bf16, long sequences, every launch config, compile)
#   bash bench/gpu_session.sh tests-model    GPU model tests (parity with HF, CUDA graphs, convergence, task heads)
#   bash bench/gpu_session.sh tests          both test stages in one call (2.5 min on an H100 with PYTEST_WORKERS=8);
#                                            the test stages pass extra arguments to pytest (e.g. -k add_layer_norm)
#   bash bench/gpu_session.sh kernels        launch + ceilings + elementwise + attention benchmarks ("launch",
#                                            "ceilings", "elementwise", "attention": one each)
#   bash bench/gpu_session.sh e2e            end-to-end benchmark against Hugging Face, BERT-base ("e2e-large": large)
#   bash bench/gpu_session.sh ffn            the fused FFN GEMM (linear_gelu) against cuBLAS + bias_gelu and Inductor;
#                                            "ffn-e2e": BERT-base end to end with it on and off (one call each)
#   bash bench/gpu_session.sh impl-e2e       mini / small / base: the fused path against our own reference path
#   bash bench/gpu_session.sh capture        the GPU tests of captured steps, graphed heads and launch plans, then
#                                            "small": the small-model goals (fine-tuning MiniLM-L6 B32 x S64 and
#                                            pretraining BERT-mini B128 x S128 eager and captured vs our reference
#                                            path and HF sdpa; BERT-base latency B1 / B8 / B32 x S128), one call each
#   bash bench/gpu_session.sh first-step     time to the first trained step: cold cache, warm, after bert-fast warmup
#   bash bench/gpu_session.sh pretrain ARGS  bench_pretrain (bf16 fast path vs fp32 reference convergence, tokens/s)
#   bash bench/gpu_session.sh finetune ARGS  bench_finetune (reference vs triton on real data; --name finetune_gpu)
#   bash bench/gpu_session.sh families       the BERT family on the GPU: its gpu tests (RoBERTa-/XLM-R-base bf16 parity,
#                                            packed positions), then bench_families (bf16 inference vs HF sdpa, parity)
#   bash bench/gpu_session.sh packed-pretrain ARGS  bench_packed_pretrain (packed vs unpacked pretraining at S512,
#                                            real tok/s and held-out MLM loss; HF sdpa as the peer)
# The data these two read on a host without gensim and the checkpoint wheel: python -m bench.device_data (NOTES §4).
# Runs from the source tree (no install): the image has torch, triton and transformers. Logs and result rows are
# copied to $OUT (the device tool's folder) when it is set, else to bench/results/. Each step copies its rows as
# soon as it ends, and e2e rows are appended as they are measured, so a call cut off at its time limit keeps
# what it finished.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .dev && ln -sfn ../kernels .dev/bert_fast_kernels && ln -sfn ../bert_fast .dev/bert_fast
export PYTHONPATH="$PWD/.dev:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" \
  | tee -a "$OUT/gpu.txt"

save() {  # copy result files to $OUT (nothing to do when $OUT is bench/results itself)
  for f in "$@"; do
    [ -f "bench/results/$f" ] && ! [ "bench/results/$f" -ef "$OUT/$f" ] && cp "bench/results/$f" "$OUT/"
  done
  return 0
}
pytest_gpu() {  # name, paths...
  local name=$1
  shift
  # PYTEST_WORKERS=N spreads the tests over N processes (pytest-xdist): most of their time is Triton compiling
  python -m pytest -q -m gpu ${PYTEST_WORKERS:+-n "$PYTEST_WORKERS"} "$@" -p no:cacheprovider --durations=20 2>&1 \
    | tee "$OUT/$name.log"
}

case "${1:-tests}" in
  tests-kernels)
    pytest_gpu gpu_tests_kernels tests/kernels "${@:2}" ;;
  tests-model)
    pytest_gpu gpu_tests_model tests/model tests/finetune "${@:2}" ;;
  tests)
    pytest_gpu gpu_tests tests "${@:2}" ;;
  ceilings|elementwise|attention|launch|kernels)
    if [ "$1" = launch ] || [ "$1" = kernels ]; then  # seconds: host time per call, layer by layer
      python -m bench.bench_launch 2>&1 | tee "$OUT/bench_launch.log"
      save launch.jsonl
    fi
    if [ "$1" = ceilings ] || [ "$1" = kernels ]; then  # ~1 minute: the ceilings the other numbers are read against
      python -m bench.bench_ceilings 2>&1 | tee "$OUT/bench_ceilings.log"
      save ceilings.jsonl
    fi
    if [ "$1" = elementwise ] || [ "$1" = kernels ]; then
      python -m bench.bench_elementwise 2>&1 | tee "$OUT/bench_elementwise.log"
      save elementwise.jsonl
    fi
    if [ "$1" = attention ] || [ "$1" = kernels ]; then
      python -m bench.bench_attention 2>&1 | tee "$OUT/bench_attention.log"
      save attention.jsonl
    fi ;;
  e2e)
    python -m bench.bench_e2e --quick 2>&1 | tee "$OUT/bench_e2e.log"
    save e2e.jsonl e2e.md e2e.png ;;
  e2e-large)
    python -m bench.bench_e2e --sizes large --name e2e_large 2>&1 | tee "$OUT/bench_e2e_large.log"
    save e2e.jsonl e2e_large.md e2e_large.png ;;
  ffn)
    python -m bench.bench_linear_gelu 2>&1 | tee "$OUT/bench_linear_gelu.log"
    save linear_gelu.jsonl ;;
  ffn-e2e)
    python -m bench.bench_e2e --sizes base --name e2e_fused_ffn \
      --workloads infer-B256-S128,infer-B64-S512-ragged,train-B256-S128 \
      --providers bert_fast,bert_fast+fused-ffn,bert_fast+fused-ffn-persistent,hf-sdpa 2>&1 | tee "$OUT/bench_e2e_fused_ffn.log"
    save e2e.jsonl e2e_fused_ffn.md e2e_fused_ffn.png ;;
  impl-e2e)  # the fused path against our own reference path by model size: what impl="auto" should follow
    python -m bench.bench_e2e --sizes mini,small,base --name e2e_impl \
      --workloads infer-B256-S128,train-B256-S128,train-B32-S512-ragged \
      --providers bert_fast,bert_fast-reference,hf-sdpa 2>&1 | tee "$OUT/bench_e2e_impl.log"
    save e2e.jsonl e2e_impl.md e2e_impl.png ;;
  capture)  # what decides whether captured steps (and the planned launch path) may become defaults
    pytest_gpu gpu_tests_capture tests/training/test_capture_gpu.py tests/model/test_inference_gpu.py \
      tests/model/test_fused_layer_gpu.py tests/finetune/test_finetune_capture_gpu.py \
      tests/kernels/test_launch_gpu.py "${@:2}" ;;
  small)  # the issue's goals for small models and batches: >= 2x HF sdpa and our reference path; B1 <= 0.35 ms
    python -m bench.bench_e2e --sizes minilm-l6 --name e2e_small_finetune --workloads finetune-B32-S64-ragged \
      --providers bert_fast,bert_fast+graphs,bert_fast-reference,hf-sdpa 2>&1 | tee "$OUT/bench_e2e_small_finetune.log"
    python -m bench.bench_e2e --sizes mini --name e2e_small_pretrain --workloads train-B128-S128 \
      --providers bert_fast,bert_fast+graphs,bert_fast-reference,hf-sdpa 2>&1 | tee "$OUT/bench_e2e_small_pretrain.log"
    python -m bench.bench_e2e --sizes base --name e2e_latency \
      --workloads latency-B1-S128,latency-B8-S128,latency-B32-S128 \
      --providers bert_fast,bert_fast+graphs,bert_fast-reference,hf-eager,hf-sdpa 2>&1 | tee "$OUT/bench_e2e_latency.log"
    save e2e.jsonl e2e_small_finetune.md e2e_small_pretrain.md e2e_latency.md ;;
  first-step)
    python -m bench.bench_first_step 2>&1 | tee "$OUT/bench_first_step.log"
    save first_step.jsonl ;;
  pretrain)
    python -m bench.bench_pretrain "${@:2}" 2>&1 | tee "$OUT/bench_pretrain.log"
    save bench_pretrain.jsonl pretrain_convergence.png pretrain_profile_ours-bf16-triton.txt \
      pretrain_profile_ours-fp32-reference.txt ;;
  packed-pretrain)  # BERT-base S512 on the Wikipedia sample: packed vs unpacked real tok/s and held-out loss, HF sdpa
    python -m bench.bench_packed_pretrain "${@:2}" 2>&1 | tee "$OUT/bench_packed_pretrain.log"
    save packed_pretrain.jsonl ;;
  finetune)
    python -m bench.bench_finetune "${@:2}" 2>&1 | tee "$OUT/bench_finetune.log"
    save finetune.jsonl finetune_gpu.jsonl ;;  # finetune_gpu: the --name the GPU rows are kept under
  families)
    pytest_gpu gpu_tests_families tests/families "${@:2}"
    python -m bench.bench_families 2>&1 | tee "$OUT/bench_families.log"
    save families.jsonl families.md ;;
  next)  # the next lent session in one call (NOTES §4): every GPU test, then the small-model goals; a table last
    PYTEST_WORKERS=${PYTEST_WORKERS:-8} timeout 330 bash "$0" tests
    # the goals on the paths the GPU tests above decide: the one-node layer and device-drawn seeds on
    BERT_FAST_FUSED_LAYER=1 BERT_FAST_DEVICE_SEEDS=1 timeout 200 bash "$0" small
    echo; echo "== GPU tests"; grep -E "passed|failed|error" "$OUT/gpu_tests.log" | tail -3
    for table in e2e_small_finetune e2e_small_pretrain e2e_latency; do
      [ -f "bench/results/$table.md" ] && { echo "== $table"; cat "bench/results/$table.md"; }
    done ;;
  *)
    echo "unknown stage $1"; exit 2 ;;
esac
