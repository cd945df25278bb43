#!/usr/bin/env bash
# GPU checks for a lent device machine (run from the repo root there): the `gpu` tests and the training
# benchmark at the default config with 128³ patches. Wheels missing from the device image travel in .whl/.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/device.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/synth_core/gan 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
python3 bench/train.py --resolution 1 --patch 128 --batch 1 --width 32 --depth 4 --steps 40 --warmup 5 \
  --workers 8 --subjects 4 --device cuda 2>&1 | tee "$OUT/bench_train_gpu.txt"
python3 bench/generate.py --resolution 1 --batch 4 --device cuda 2>&1 | tee "$OUT/bench_generate_gpu.txt"
