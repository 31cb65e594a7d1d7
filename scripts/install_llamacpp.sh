#!/usr/bin/env bash
# Test setup: llama.cpp (llama-cpp-python[server], built from source by pip) in Melt's own engine venv, for the real
# llama.cpp tests (tests/integration/test_llamacpp_cpu.py). Installs the compilers the source build needs (cmake, g++,
# make) with apt when they are missing. CPU build (--cpu): CI machines have no GPU. Measured: 19.4 min on this 2-core
# machine under load (the build itself; ~4 min of 8-core time), once per machine: the venv is reused afterwards.
# Prints the venv's python on success (MELT_LLAMACPP_PY).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v cmake >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "install_llamacpp.sh: need root (or sudo) to apt-get install cmake g++ make" >&2; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends cmake g++ make >/dev/null
fi
"$root/.venv/bin/python" -m bench engines install llama-cpp --cpu >&2
"$root/.venv/bin/python" -c "from engines.install import venv_dir; print(venv_dir('llama-cpp') / 'bin' / 'python')"
