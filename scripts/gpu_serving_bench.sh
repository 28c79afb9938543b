#!/usr/bin/env bash
# bench_serving on the lease: starts the server on the Llama-3.1-8B shape with dummy weights,
# runs ShareGPT at three request rates against it, writes JSON lines and the latency plot to
# $OUT, and stops the server. One call (the lease's 10-minute limit) runs all of it.
# Usage (from the repo root on the lease): bash scripts/gpu_serving_bench.sh [SERVER FLAGS...]
#   SERVER FLAGS go to the server, e.g. --disable-radix-cache or --disable-overlap-schedule.
# Settings (environment): SERVE_RATES ("4 16 64" req/s), SERVE_PROMPTS (300 ShareGPT requests),
#   SERVE_SHAPE (llama-3.1-8b-shape), SERVE_PORT (30000), SERVE_TAG (the plot's label),
#   SERVE_STARTUP_S (420: FlashInfer's kernels and the CUDA graphs), GPU_BENCH_TIMEOUT (420),
#   SKIP_GPU_ENV=1 (a CPU dry run: no wheels, no nvidia-smi; use SERVE_SHAPE=tiny-llama-shape).
# Output: $OUT/serving.jsonl (one line per rate), $OUT/serving.png (when matplotlib is there;
#   otherwise draw it from the JSON with benchmarks/serving_plot.py), $OUT/serving_bench.log,
#   $OUT/serving_server.log.
set -uo pipefail
if [ "${SKIP_GPU_ENV:-0}" != 1 ]; then source scripts/gpu_env.sh; fi
OUT=${OUT:-/tmp}
export PYTHONUNBUFFERED=1
shape=${SERVE_SHAPE:-llama-3.1-8b-shape}
port=${SERVE_PORT:-30000}
rates=${SERVE_RATES:-4 16 64}
tag=${SERVE_TAG:-radixserve $shape}
python3 benchmarks/launch_dummy_server.py --model-path "$shape" --load-format dummy \
  --port "$port" --log-level warning "$@" > "$OUT/serving_server.log" 2>&1 &
server=$!
stop_server() { kill -TERM "$server" 2>/dev/null; wait "$server"; echo "server exit: $?"; }
trap stop_server EXIT
deadline=$((SECONDS + ${SERVE_STARTUP_S:-420}))
healthy() {  # python, not curl: the lease's image may lack curl
  python3 -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$port/health" 2> /dev/null
}
until healthy; do
  if ! kill -0 "$server" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    echo "the server did not start:"; tail -30 "$OUT/serving_server.log"; exit 1
  fi
  sleep 2
done
echo "server up after ${SECONDS} s"
plot=(--plot-file "$OUT/serving.png")
python3 -c "import matplotlib" 2> /dev/null || plot=()
# shellcheck disable=SC2086  # the rates are words on purpose
timeout "${GPU_BENCH_TIMEOUT:-420}" python3 benchmarks/bench_serving.py --backend sglang \
  --port "$port" --dataset-name sharegpt --num-prompts "${SERVE_PROMPTS:-300}" \
  --request-rate $rates --flush-cache --tag "$tag" --output-file "$OUT/serving.jsonl" \
  "${plot[@]}" > "$OUT/serving_bench.log" 2>&1
echo "bench exit: $?"
grep -E "request rate|Successful|Request throughput|Output token|Cache hit|Median TTFT|P99 TTFT|Median ITL|P99 ITL|Median E2E" \
  "$OUT/serving_bench.log"
[ ${#plot[@]} -eq 0 ] && echo "no matplotlib here: python benchmarks/serving_plot.py --input \"$tag=serving.jsonl\" --output serving.png"
if [ "${SKIP_GPU_ENV:-0}" != 1 ]; then bash scripts/gpu_prebuilt.sh save; fi
