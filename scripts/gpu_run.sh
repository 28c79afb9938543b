#!/usr/bin/env bash
# One full call on the GPU lease: install carried wheels, run GPU tests, run the GPU benchmark.
# Usage (from the repo root on the lease): bash scripts/gpu_run.sh
set -uo pipefail
source scripts/gpu_env.sh
# Logs go to $OUT as they are written, and each stage has its own limit, so the prebuilt
# kernels are saved even when a stage runs long.
timeout ${GPU_TEST_TIMEOUT:-300} python3 -m pytest -q -m gpu tests/kernels tests/runtime/model_executor/test_gpu_engine.py \
  tests/runtime/sampling -p no:cacheprovider -o faulthandler_timeout=200 > "$OUT/gpu_tests.log" 2>&1
tail -15 "$OUT/gpu_tests.log"
timeout ${GPU_BENCH_TIMEOUT:-240} python3 benchmarks/bench_gpu_decode.py ${GPU_BENCH_ARGS:-} \
  --out "$OUT/gpu_decode.json" > "$OUT/gpu_bench.log" 2>&1
grep -v Warning "$OUT/gpu_bench.log" | tail -12
bash scripts/gpu_prebuilt.sh save
