#!/usr/bin/env bash
# One prepared GPU run: build pysid with CUDA, measure the card's ceilings, run the test
# suite (GPU tests included), run the GPU benchmarks; logs and JSON go to OUTDIR and a
# short summary is printed last. With TAR_TO=FILE, OUTDIR is also packed into FILE after
# every stage.
#   bench/gpu_check.sh OUTDIR [STAGES]
# STAGES: space-separated subset of
#   "build ceilings side_by_side tests profile_gmma profile bench_rq bench_beam bench_kmeans rq_sweep"
# default: "build ceilings side_by_side tests profile_gmma" - issue 15's whole "On the GPU" list in ONE
# call of at most BUDGET_S seconds (default 470: the 8-minute rule with margin): ceilings (DRAM, L2,
# matmul fp32/tf32/bf16), bench/gpu_side_by_side.py (pysid vs torch eager fp32/tf32/fp16, torch.compile
# default and tf32, flash-kmeans - same process, warm, CUDA events), the GPU tests, and Nsight Compute
# with the Hopper gmma tensor metrics. Every stage's time limit is cut to what is left of the budget
# (a stage with < 15 s left is skipped and says so). profile = the older full-section Nsight run.
# Expects the GPU machine's preinstalled toolchain (torch, triton, nvcc,
# scikit-build-core, pybind11, cmake, ninja, pytest); installs nothing from the network.
# Optional peers (flash-kmeans, fast-pytorch-kmeans) are installed from ./.whl if present (bench/gpu_prepare.sh
# downloads them here; the device call carries .whl).
# The full list does not fit one call: the second call, made at once (the machine still warm: the build is
# kept, and its stage is quick), is
#   BUDGET_S=<device seconds left - 60> bench/gpu_check.sh OUTDIR2 "build rq_sweep bench_kmeans profile"
# (a session has 15 device minutes in all, the machine's start included: after a first call of ~8 minutes
# about 5 are left, so the second call's budget is what `status` says is left, less a minute for the transfers;
# every stage is packed into TAR_TO as it ends, so a call cut short still returns the stages it finished)
# (rq_sweep, first: the greedy fp16 proposal (resident A) against the tf32 proposal, the streamed fp16 A and the
# second tier off / on on every shape, with unsure / redone / tier counts; then beam 5 against greedy: the exact
# beam kernel beside the packed-key tf32-proposing one, BK 128 / 64 / 32; then the tile variants. bench_kmeans:
# fused seeding rows and tile sweep, update tiles, Lloyd exact vs fast.)
set -uo pipefail
OUT=${1:?usage: bench/gpu_check.sh OUTDIR [STAGES]}
STAGES=${2:-"build ceilings side_by_side tests profile_gmma"}
T_START=$(date +%s)
DEADLINE=$(( T_START + ${BUDGET_S:-470} ))
PY=${PYTHON:-python3}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# REHEARSE=1: run the plumbing on a machine without a GPU (stages that need one fail and say so;
# e.g. REHEARSE=1 SBS_ARGS=--smoke BUDGET_S=90 bench/gpu_check.sh /tmp/gc "side_by_side tests")
if [ -z "${REHEARSE:-}" ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU is visible to torch on this machine; nothing to do" >&2
  exit 2
fi
has() { [[ " $STAGES " == *" $1 "* ]]; }
summary=()
stage() {  # stage NAME TIMEOUT CMD...: run with a time limit (cut to the budget left), log to OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  local left=$(( DEADLINE - t0 ))
  if [ "$left" -lt 15 ]; then
    echo "skipped: ${left}s of the ${BUDGET_S:-470}s budget left" > "$OUT/$name.log"
    summary+=("$(printf '%-13s rc=%-3s %4ss  %s' "$name" "skip" 0 "no budget left")")
    printf '%s\n' "${summary[@]}" > "$OUT/summary.txt"
    return 124
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-13s rc=%-3s %4ss  %s' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$(tail -1 "$OUT/$name.log" | cut -c1-90)")")
  printf '%s\n' "${summary[@]}" > "$OUT/summary.txt"
  [ -n "${TAR_TO:-}" ] && tar czf "$TAR_TO" -C "$OUT" .  # one file back from the device, even if killed later
  return $rc
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$OUT/gpu.txt" 2>&1
if ls .whl/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl > "$OUT/peers.log" 2>&1 \
    && export PYTHONPATH=/tmp/site
fi
if has build; then
  PYSID_CUDA=ON CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90" CMAKE_BUILD_PARALLEL_LEVEL=16 \
    stage build 240 $PY -m pip install --no-build-isolation --no-deps -e . \
    || { echo "build failed:"; tail -40 "$OUT/build.log"; exit 3; }
fi
$PY -c "from pysid import _native; print('cpu', _native.has_cpu(), 'cuda', _native.has_cuda(), 'triton', _native.has_triton())" >> "$OUT/gpu.txt" 2>&1
has ceilings && stage ceilings 60 $PY bench/gpu_ceilings.py --out "$OUT/ceilings.json"
has side_by_side && stage side_by_side "${SBS_TIMEOUT:-200}" $PY bench/gpu_side_by_side.py --out "$OUT/side_by_side.json" \
  ${SBS_ARGS:-}
# the files with GPU tests (the sm_90 compile checks are CPU-side: CI runs them)
GPU_TESTS="tests/test_residual_quantize.py tests/test_canonical_score.py tests/test_beam_fast.py tests/test_kmeans.py
  tests/test_kmeans_triton_kernels.py tests/test_beam_search.py tests/test_precision.py"
has tests && stage tests "${TEST_TIMEOUT:-150}" $PY -m pytest -q -p no:cacheprovider -n 8 ${TEST_ARGS:-$GPU_TESTS}
if has profile_gmma; then  # Hopper's wgmma is invisible to the HMMA counters: read the gmma ones
  NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  GMMA="gpu__time_duration.sum,sm__inst_executed_pipe_tensor_op_gmma.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,lts__t_sector_hit_rate.pct,lts__t_bytes.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed"
  if [ -n "$NCU" ]; then
    stage profile_gmma 90 "$NCU" --kernel-name regex:_rq_greedy_kernel --launch-skip 2 --launch-count 2 \
      --metrics "$GMMA" --csv --page raw $PY bench/gpu_profile.py rq
    stage profile_seed 60 "$NCU" --kernel-name regex:"_kpp_|_kmeanspp_kernel" --launch-skip 48 --launch-count 6 \
      --metrics "$GMMA" --csv --page raw $PY bench/gpu_profile.py seed
  else
    echo "ncu (Nsight Compute) not found: no profile" > "$OUT/profile_gmma.log"
  fi
fi
# the rq sweep first among the benchmarks: its rows run in priority order and its JSON is rewritten per row
has rq_sweep && stage rq_sweep "${SWEEP_TIMEOUT:-240}" $PY bench/gpu_rq_sweep.py --out "$OUT/rq_sweep.json"
has bench_rq && stage bench_rq 180 $PY bench/bench_residual_quantize.py --gpu --out "$OUT/bench_rq.json"
has bench_beam && stage bench_beam 150 $PY bench/bench_beam_search.py --device cuda --out "$OUT/bench_beam.json"
has bench_kmeans && stage bench_kmeans "${KMEANS_TIMEOUT:-240}" $PY bench/bench_kmeans.py --gpu --out "$OUT/bench_kmeans.json"
if has profile; then
  NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  SECTIONS="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
    --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis"
  if [ -n "$NCU" ]; then  # warm-up calls first (compiles), then the profiled launches
    stage profile_rq 240 "$NCU" --kernel-name regex:_rq_greedy_kernel --launch-skip 2 --launch-count 2 $SECTIONS \
      --csv --page raw $PY bench/gpu_profile.py rq
    stage profile_kpp 120 "$NCU" --kernel-name regex:_kmeanspp_kernel --launch-skip 1 --launch-count 1 $SECTIONS \
      --csv --page raw $PY bench/gpu_profile.py kmeanspp
  else
    echo "ncu (Nsight Compute) not found: no profile" > "$OUT/profile_rq.log"
  fi
fi
echo "=== $(head -2 "$OUT/gpu.txt" | tail -1)"
for f in "$OUT"/*.log; do
  case $f in *tests.log) grep -E "FAILED|ERROR|passed|failed" "$f" | tail -25;; esac
done
for f in side_by_side bench_rq bench_beam bench_kmeans rq_sweep; do [ -f "$OUT/$f.log" ] && { echo "--- $f"; tail -60 "$OUT/$f.log"; }; done
for f in profile_gmma profile_seed profile_rq profile_kpp; do [ -f "$OUT/$f.log" ] && { echo "--- $f"; $PY bench/gpu_profile.py summarize "$OUT/$f.log"; }; done
[ -f "$OUT/ceilings.json" ] && cat "$OUT/ceilings.json"
printf '%s\n' "${summary[@]}"
echo "total $(( $(date +%s) - T_START ))s of the ${BUDGET_S:-470}s budget"
