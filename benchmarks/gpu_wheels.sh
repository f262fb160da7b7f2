#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu.sh installs on the GPU machine.
#
#   bash benchmarks/gpu_wheels.sh [FOLDER]    # default: .whl (git-ignored)
#
# The GPU machine gpu.sh is written for has Python 3.12 with CUDA builds of
# PyTorch and JAX, no Keras and no network. Of Keras' dependencies it has
# absl-py, h5py, ml-dtypes, numpy, packaging and rich;
# namex and optree are missing, so they travel with Keras. PyTorch and JAX
# never travel: the machine's own CUDA builds are the ones to measure. The
# versions are those of the test environments; change them together.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FOLDER=${1:-$REPO/.whl}
PYTHON=${PYTHON:-python3}
WHEELS=(keras==3.15.1 namex==0.1.0 optree==0.20.0)

mkdir -p "$FOLDER"
rm -f "$FOLDER"/*.whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 \
  -d "$FOLDER" "${WHEELS[@]}"
ls -l "$FOLDER"
du -ch "$FOLDER"/*.whl | tail -n 1
