#!/usr/bin/env bash
# Installs keras_compact from this clone, with the test extras (incl. the
# CPU PyTorch the benchmark twins are tested against), on any machine:
# - TensorFlow: an installed build (CUDA, TPU, a conda one) is kept; where
#   there is none, the [cpu] extra brings tensorflow-cpu.
# - Fashion-MNIST: Debian's dataset-fashion-mnist where apt-get exists;
#   elsewhere this says how to get the four IDX files.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

extras="test"
"$PYTHON" -c "import tensorflow" 2>/dev/null || extras="cpu,test"
"$PYTHON" -m pip install -q -e ".[$extras]"

DATA=/usr/share/datasets/fashion-mnist
HOWTO="download the four IDX files of the Fashion-MNIST release
  (zalandoresearch/fashion-mnist: train-images-idx3-ubyte.gz,
  train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
  t10k-labels-idx1-ubyte.gz) into a folder and pass --data_dir=FOLDER."
if [ -d "$DATA" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
  export DEBIAN_FRONTEND=noninteractive
  if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; then
    exit 0
  fi
  echo "install.sh: apt-get could not install dataset-fashion-mnist; $HOWTO" >&2
else
  echo "install.sh: keras_compact is installed; Fashion-MNIST is not (no apt-get or no root here): $HOWTO" >&2
fi
