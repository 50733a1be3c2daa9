#!/usr/bin/env bash
# Before a GPU run, on this machine (it has PyPI; the GPU machine has no network): the peers'
# wheels for the GPU machine's Python (3.12, x86-64) into ./.whl, which git ignores (through
# .git/info/exclude) and the device call carries (run(..., carry=[".whl"])); bench/gpu_check.sh
# installs them there. Peers: flash-kmeans (its needs - torch, triton, numpy, tqdm - are on the
# GPU machine's image already).
#   bash bench/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
PY=${PYTHON:-python3}
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "flash-kmeans==0.3.1"
ls -la .whl
git status --porcelain --ignored .whl | grep -q '^!!' && echo "gpu_prepare: .whl is ready and ignored by git"
