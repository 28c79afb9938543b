# Sourced by the lease scripts (gpu_run.sh, gpu_tp_run.sh): installs the carried wheels, restores
# FlashInfer's prebuilt kernels, maps the package folders, and names the GPUs.
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD
bash scripts/gpu_prebuilt.sh restore
# The package maps top-level folders onto radixserve.*; on the lease (a throwaway copy of the
# tree) build that mapping with symlinks instead of an editable install.
for f in runtime radix_cache frontend_lang kernels; do ln -sfn "$PWD/$f" "radixserve/$f"; done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
OUT=${OUT:-/tmp}
