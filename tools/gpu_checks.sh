#!/usr/bin/env bash
# The GPU checks in one go, from the source tree, on a machine with a CUDA build of PyTorch where this
# project is not installed (a GPU server or a workstation): the parity tests, then the
# benchmark with the default and the paper's 21 levels. Results (text and JSON) go to $OUT
# (default out/gpu). Wheels of what that machine lacks (faiss-cpu, poselib: `pip download` them for
# its Python into .wheels/) are installed into a scratch folder first.
#
#   bash tools/gpu_checks.sh            # or: PYTHON=... OUT=... REPEAT=... bash tools/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-out/gpu}
REPEAT=${REPEAT:-20}
mkdir -p "$OUT"
if compgen -G ".wheels/*.whl" > /dev/null; then
    DEPS=$(mktemp -d)
    "$PY" -m pip install --quiet --no-deps --no-index --target "$DEPS" .wheels/*.whl
    export PYTHONPATH="$DEPS${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/machine.txt"
"$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_parity.py tests/test_lift_graph.py tests/test_matching.py \
    2>&1 | tee "$OUT/parity.txt"
for preset in default paper; do
    "$PY" -m lift_localizer benchmark --preset "$preset" --repeat "$REPEAT" --json "$OUT/benchmark_$preset.json" \
        --backends torch-cuda torch-cuda-fp16 torch-cuda-fp16-staged 2>&1 | tee "$OUT/benchmark_$preset.txt"
done
