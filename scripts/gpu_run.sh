#!/usr/bin/env bash
# One full call on the GPU lease: install carried wheels, run GPU tests, run the GPU benchmark.
# Usage (from the repo root on the lease): bash scripts/gpu_run.sh
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD
# The package maps top-level folders onto radixserve.*; on the lease (a throwaway copy of the
# tree) build that mapping with symlinks instead of an editable install.
for f in runtime radix_cache frontend_lang kernels; do ln -sfn "$PWD/$f" "radixserve/$f"; done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest -q -m gpu tests/kernels tests/runtime/test_gpu_engine.py tests/runtime/sampling -p no:cacheprovider 2>&1 | tail -15
python3 benchmarks/bench_gpu_decode.py --out "${OUT:-/tmp}/gpu_decode.json" 2>&1 | grep -v Warning | tail -12
