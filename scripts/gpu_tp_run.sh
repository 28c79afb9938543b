#!/usr/bin/env bash
# One call on a multi-GPU lease: install carried wheels, run the tensor-parallel GPU test and the
# tp 1 vs tp 2 benchmark. Usage (repo root on the lease): bash scripts/gpu_tp_run.sh
set -uo pipefail
source scripts/gpu_env.sh
# NVLink multicast stays off (the lease's rule); set here too in case the environment lacks them.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# Logs go to $OUT as they are written, so a run cut off by the time limit still reports.
timeout ${TP_TEST_TIMEOUT:-200} python3 -m pytest -q -m gpu tests/runtime/model_executor/test_gpu_engine.py \
  -k "${TP_TEST_FILTER:-}" -p no:cacheprovider -o faulthandler_timeout=150 > "$OUT/tp_test.log" 2>&1
tail -15 "$OUT/tp_test.log"
grep -q " passed" "$OUT/tp_test.log" && ! grep -q " failed" "$OUT/tp_test.log" || exit 1
timeout ${TP_BENCH_TIMEOUT:-300} python3 benchmarks/bench_gpu_tp.py ${TP_BENCH_ARGS:-} --out "$OUT/gpu_tp.json" \
  > "$OUT/tp_bench.log" 2>&1
grep -v Warning "$OUT/tp_bench.log" | tail -14
