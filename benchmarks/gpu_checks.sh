#!/usr/bin/env bash
# The GPU checks of the training module (precision on GPUs, DDP and SyncBatchNorm across GPUs, step times),
# as one script for a machine with CUDA. CI never has a GPU; these are run by hand where one is lent.
#
#   bash benchmarks/gpu_checks.sh --fetch   # here, with network access to the package index: the pure-Python
#                                           # wheels the GPU machine lacks -> .whl/ (git-ignored)
#   bash benchmarks/gpu_checks.sh           # there, from the repository root, with .whl/ copied along
#
# The GPU machine's own python3 is used as it is (its torch, lightning, torchmetrics, scikit-image); only
# Hydra and OmegaConf are added, into /tmp/site, and the package is imported from the checkout. Logs go to
# $OUT (or /tmp/gpu_checks): nvidia-smi.txt, pytest.txt, train_step.txt.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--fetch" ]]; then
  py=${PYTHON:-.venv/bin/python}
  mkdir -p .whl
  # hydra-core and omegaconf publish py3-none-any wheels; antlr4-python3-runtime 4.9.3 (omegaconf's pin) is
  # an sdist only, so it is built into a wheel here.
  "$py" -m pip download -q --no-deps --only-binary=:all: -d .whl "hydra-core==1.3.2" "omegaconf==2.3.0" &&
    "$py" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3" || exit 1
  ls -1 .whl
  exit 0
fi

out=${OUT:-/tmp/gpu_checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
nvidia-smi 2>&1 | tee "$out/nvidia-smi.txt"
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__,
  'GPUs', torch.cuda.device_count(), 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"

status=0
# precision on the GPU through the CLI; DDP/SyncBatchNorm equivalence (skips itself with fewer than two GPUs);
# the CUDA path of the MATLAB-bicubic resize
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_gpu.py tests/test_ddp.py \
  "tests/test_imresize.py::test_cuda_matches_cpu" -rs 2>&1 | tee "$out/pytest.txt" || status=1
python3 benchmarks/train_step.py --device cuda --steps 30 --warmup 5 2>&1 \
  | grep -E "^(batch|srresnet|msrresnet|rrdbnet|--device)" | tee "$out/train_step.txt" || status=1
exit $status
