#!/usr/bin/env bash
# One prepared GPU run: build pysid with CUDA, run the whole test suite (GPU tests
# included), run the GPU benchmarks, write logs and JSON to OUTDIR, print a summary.
#   bench/gpu_check.sh OUTDIR
# Expects the GPU machine's preinstalled toolchain (torch, triton, nvcc, scikit-build-core,
# pybind11, cmake, ninja); installs nothing from the network.
set -uo pipefail
OUT=${1:?usage: bench/gpu_check.sh OUTDIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU is visible to torch on this machine; nothing to do" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
t0=$(date +%s)
PYSID_CUDA=ON pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { echo "build failed:"; tail -40 "$OUT/build.log"; exit 3; }
echo "build: $(( $(date +%s) - t0 )) s"
timeout 480 pytest -q -p no:cacheprovider tests > "$OUT/pytest.log" 2>&1
echo "pytest: $(tail -1 "$OUT/pytest.log")"
python bench/bench_residual_quantize.py --gpu --out "$OUT/bench_residual_quantize.json" > "$OUT/bench.log" 2>&1 \
  || echo "bench_residual_quantize failed (see bench.log)"
tail -20 "$OUT/bench.log"
