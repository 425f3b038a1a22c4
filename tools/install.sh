#!/usr/bin/env bash
# Installs keras_compact (with test extras, incl. the CPU PyTorch the
# benchmark twins are tested against) and the offline Fashion-MNIST
# data from Debian. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
python -m pip install -q -e ".[test]"
