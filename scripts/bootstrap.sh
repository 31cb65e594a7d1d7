#!/usr/bin/env bash
# Creates/updates Melt's virtualenv (.venv) from the pinned requirements. Needs only python3 (with venv) and pip.
# Usage: scripts/bootstrap.sh [requirements-file]   (default requirements.txt)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req=${1:-requirements.txt}
venv="$root/.venv"
py=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  echo "melt: creating $venv" >&2
  "$py" -m venv "$venv" || { echo "melt: 'python3 -m venv' failed: install your distribution's python3-venv package" >&2; exit 1; }
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
fi
stamp="$venv/.melt-$(basename "$req").sha"
want=$(cat "$root/requirements.txt" "$root/$req" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "melt: installing $(basename "$req") into .venv (first run takes a minute)" >&2
  "$venv/bin/python" -m pip install -q -r "$root/$req" >&2
  echo "$want" > "$stamp"
fi
