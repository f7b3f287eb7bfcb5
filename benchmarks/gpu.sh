#!/usr/bin/env bash
# GPU checks for one CUDA device, about 5 minutes in all:
#   1. the tests marked `cuda` (they skip without a device; here they must run),
#   2. bench_core.py (gradient family, SmoothGrad, CAMs vs Captum / pytorch-grad-cam),
#   3. bench_perturbation.py (occlusion and Seg-Ablation-CAM vs peers; incremental occlusion
#      on the built-in U-Net at 128² and FCN-ResNet50 at 224², window 16, stride 8),
#   4. bench_memory.py (torch.cuda.max_memory_allocated per method at 512², one process each).
# Results go to $OUT (default benchmarks/gpu-results): one log and one JSON per step.
# Usage: bash benchmarks/gpu.sh            (PY=path/to/python to choose the interpreter)
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/gpu-results}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
status=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, remember failures
    local name=$1 limit=$2
    shift 2
    echo "== $name ($limit s max): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" || { echo "FAILED: $name"; status=1; }
    echo "-- $name: $((SECONDS - t0)) s"
}

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "no CUDA device visible to $PY"; exit 2; }
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"

step tests 60 "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs tests/
step core 60 "$PY" benchmarks/bench_core.py --device cuda --rounds 3 --threads 4
step perturbation 120 "$PY" benchmarks/bench_perturbation.py --device cuda --reps 2 \
    --threads 4 --incremental unet --incremental fcn --json "$OUT/perturbation.json"
step memory 60 "$PY" benchmarks/bench_memory.py --device cuda --size 512 \
    --json "$OUT/memory.json"
exit $status
