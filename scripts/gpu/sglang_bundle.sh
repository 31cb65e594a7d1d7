#!/usr/bin/env bash
# Builds a carry-ready bundle of SGLang 0.5.14 (the SGLang release that pins torch 2.11.0, the torch the GPU
# machine's image holds) with its kernel wheels (sglang-kernel 0.4.4: 615 MB; flashinfer) for Python 3.12 /
# CUDA 13, like ../shared/device/vllm-bundle.sh does for vLLM. Nothing here is committed (DIR is git-ignored).
#   usage: bash scripts/gpu/sglang_bundle.sh [DIR]      (default .gpu/sglang)
# Result: DIR/p000 ... DIR/pNNN, each at most 60 MB, carried one per device call, then unpacked and installed with
#   pip install --no-index --no-deps wheels/*.whl   (the image's torch, triton and nvidia-* stay as they are).
# Dependencies are followed by reading each wheel's Requires-Dist (no pip resolver, which would pull a second torch);
# what the image already has (torch, torchvision, torchaudio, triton, nvidia-*) is left out.
# sglang-kernel 0.4.4 links libcudart.so.13 / libcublas.so.13 / libnvrtc.so.13 (readelf -d on its .so files):
# CUDA 13, the image's runtime.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-$root/.gpu/sglang}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels"
python3 - "$work/wheels" <<'PY'
import re, subprocess, sys, zipfile
from pathlib import Path

out = Path(sys.argv[1])
PLAT = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
        *[x for p in ("manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64",
                      "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
          for x in ("--platform", p)]]
# the image has these (their builds match its torch 2.11.0+cu130): never carried
SKIP = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia[-_].*|setuptools|pip)$", re.I)
MARKER_ENV = {"python_version": "3.12", "sys_platform": "linux", "platform_machine": "x86_64",
              "platform_system": "Linux", "implementation_name": "cpython", "extra": ""}


def applies(marker: str) -> bool:
    if not marker:
        return True
    try:
        from packaging.markers import Marker
        return Marker(marker).evaluate(MARKER_ENV)
    except Exception:
        return "extra" not in marker


def requires(whl: Path) -> list[str]:
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    reqs = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist: "):
            spec, _, marker = line[len("Requires-Dist: "):].partition(";")
            if applies(marker.strip()):
                reqs.append(spec.strip())
    return reqs


def name_of(req: str) -> str:
    return re.split(r"[ <>=!~\[(;]", req, 1)[0].lower().replace("_", "-")


from packaging.requirements import Requirement  # noqa: E402 (pip vendors packaging; the host python has it)

todo, seen = ["sglang==0.5.14", "sglang-kernel==0.4.4"], set()
while todo:
    # one download per package: two wheels asking for one package in the same round (huggingface-hub>=1.0 and
    # huggingface_hub==1.33.0, say) get one spec that meets both, or pip install --no-deps refuses two versions
    merged: dict[str, str] = {}
    for r in todo:
        n = name_of(r)
        if n in seen or SKIP.match(n):
            continue
        try:
            spec = Requirement(r).specifier
            prev = Requirement(merged[n]).specifier if n in merged else None
            merged[n] = f"{n}{spec & prev if prev is not None else spec}"
        except Exception:
            merged.setdefault(n, r)
    batch = list(merged.values())
    todo = []
    if not batch:
        break
    seen |= set(merged)
    before = set(out.iterdir())
    for r in batch:  # one at a time: a single unavailable optional dependency must not stop the rest
        p = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PLAT, "-d", str(out), r],
                           capture_output=True, text=True)
        if p.returncode:
            print(f"warning: could not download {r}: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    for whl in set(out.iterdir()) - before:
        todo += requires(whl)
print(f"{len(list(out.iterdir()))} wheels", file=sys.stderr)
PY
tar -C "$work" -cf "$work/bundle.tar" wheels
mkdir -p "$dir"; rm -rf "$dir"/p[0-9]*
split -b 60000000 -d -a 3 "$work/bundle.tar" "$work/part."
for p in "$work"/part.*; do n=${p##*.}; mkdir -p "$dir/p$n"; mv "$p" "$dir/p$n/"; done
du -sh "$dir"; ls "$dir" | wc -l
