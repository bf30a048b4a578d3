#!/usr/bin/env bash
# The GPU path in one short run, for whoever first has a CUDA machine (a few minutes):
#   1. the GPU tests: workers pinned to their own GPU (CUDA_VISIBLE_DEVICES), fidelity, float16;
#   2. the serving-path benchmark at float16 on GPU 0, against the same model in-process.
# Needs the project installed with a CUDA build of torch (README, Quick start), and shared/
# beside the checkout for the benchmark's sentences. Figures go to stdout and to $OUT if set.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"

nvidia-smi -L
python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"

python -m pytest -q -m gpu tests/e2e/test_gpu.py 2>&1 | tee "$out/gpu-tests.txt"
python bench/serving.py --devices 0 --dtype float16 --seconds 8 --json "$out/gpu-serving.json" \
  2>&1 | grep -v "it/s" | tee "$out/gpu-serving.txt"
