#!/usr/bin/env bash
# One full call on the GPU lease: install carried wheels, run GPU tests, run the GPU benchmark.
# Usage (from the repo root on the lease): bash scripts/gpu_run.sh [tests|bench|all]
#   tests: pytest -m gpu over the kernels and the model executor (FlashInfer against the torch
#          reference, decode CUDA graphs against eager decoding, the attention seam's graph
#          hooks, an Engine on the Llama-3.1-8B shape with 512-row decode graphs)
#   bench: benchmarks/bench_gpu_decode.py (batch 1 and 128 requests; eager, graphs, fused)
# A bare lease compiles FlashInfer's kernels on first use (minutes): `tests` then `bench` in two
# calls on the same warm machine compiles once; gpu_prebuilt.sh carries them between leases.
set -uo pipefail
source scripts/gpu_env.sh
stage=${1:-all}
export PYTHONUNBUFFERED=1
# Logs go to $OUT as they are written, and each stage has its own limit, so the prebuilt
# kernels are saved even when a stage runs long.
if [ "$stage" != bench ]; then
  timeout ${GPU_TEST_TIMEOUT:-400} python3 -m pytest -q -m gpu tests/kernels tests/runtime/model_executor \
    -p no:cacheprovider -o faulthandler_timeout=300 > "$OUT/gpu_tests.log" 2>&1
  echo "pytest exit: $?"
  grep -E "passed|failed|error|Error" "$OUT/gpu_tests.log" | tail -15
fi
if [ "$stage" != tests ]; then
  timeout ${GPU_BENCH_TIMEOUT:-400} python3 benchmarks/bench_gpu_decode.py ${GPU_BENCH_ARGS:-} \
    --out "$OUT/gpu_decode.json" > "$OUT/gpu_bench.log" 2>&1
  echo "bench exit: $?"
  grep -v Warning "$OUT/gpu_bench.log" | tail -16
fi
bash scripts/gpu_prebuilt.sh save
