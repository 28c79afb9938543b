# Sourced by the lease scripts (gpu_run.sh, gpu_tp_run.sh): installs the carried wheels, restores
# FlashInfer's prebuilt kernels, and names the GPUs.
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -2
# radixserve/ holds relative links to the package folders (committed), so the checkout on
# PYTHONPATH resolves radixserve.* without an install.
export PYTHONPATH=/tmp/site:$PWD
bash scripts/gpu_prebuilt.sh restore
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
OUT=${OUT:-/tmp}
