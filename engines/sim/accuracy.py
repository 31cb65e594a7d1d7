"""How far the simulator's numbers are from measured ones: the expected error a simulated run's figures carry.

Issue #13 item 5: a simulated number is shown with its error against real runs of that shape ("simulated, ±X%
against measured runs of this shape"), so nobody reads the sim as a measurement. The error comes from the sim-vs-real
calibration `engines.sim.fit_host.compare()`: every stored real vLLM 0.25.1 run (512 in / 128 out tokens, H100 and
H200 hosts, Qwen3-0.6B and Qwen3-8B, token-id and text prompts, closed loop at 1, 16, 128, 512, 1,024 users)
against `simulate_closed_loop` with that host's profile (docs/PERFORMANCE.md, "Sim vs measured").

That comparison takes ~15 s, so it is not run by the pages: `python -m engines.sim.accuracy --write` stores its rows
in `assets/sim_accuracy.yaml` (with how and when they were made), loaded only through the pydantic models below
(extra="forbid": a hand edit or a stale field fails loudly, naming the file). Regenerate it whenever the sim's
constants or host profiles are refitted; `python -m engines.sim.accuracy` prints the bands as a markdown table.

A band (`expected_error`) is, for the measured concurrency nearest to the asked one on a log scale, the largest
absolute relative error (sim / real - 1) of output tok/s and of mean TTFT over the measured runs there: of the run's
model and GPU when some were measured, else of all of them (the band says which). Past 2x the largest or below half
the smallest measured concurrency it says "beyond the measured range" and gives the edge's band only as context.
No numbers are hard-coded here: everything comes from the asset.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import math
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from catalog import ASSETS_DIR, CatalogError

ACCURACY_FILE = ASSETS_DIR / "sim_accuracy.yaml"
DOC = "docs/PERFORMANCE.md"
WRITE_CMD = "python -m engines.sim.accuracy --write"
# how far outside the measured concurrencies a band still applies (x2 above the largest, /2 below the smallest)
RANGE_FACTOR = 2.0
_ERR_TOL = 1e-4        # a stored error must be sim / real - 1 of the stored values (it has 4 decimals)


def _check_errors(row, what: str, tok: tuple[float, float], ttft: tuple[float, float]):
    """A stored row's two errors must be `what` / real - 1 of its stored figures (they have 4 decimals)."""
    for name, (sim, real) in (("output_tok_s_error", tok), ("mean_ttft_error", ttft)):
        if abs(getattr(row, name) - (sim / real - 1)) > _ERR_TOL:
            raise ValueError(f"{name} {getattr(row, name)} is not {what} / real - 1 = {sim / real - 1:.4f}")
    return row


class AccuracyRow(BaseModel):
    """One measured level against the sim's prediction of it (one row of `fit_host.compare()`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: str = Field(description="catalog GPU id the real run was on and the sim modelled")
    host_profile: str = Field(description="the sim's host profile (assets/hosts/) fitted to that host")
    prompts: str = Field(description="ids (token-id prompts) or melt-text (text prompts, Melt's client)")
    concurrency: int = Field(ge=1, description="closed-loop users")
    model: str = Field(description="served model id")
    sim_output_tok_s: float = Field(gt=0)
    real_output_tok_s: float = Field(gt=0, description="mean of the measured runs on that host")
    sim_mean_ttft_ms: float = Field(gt=0)
    real_mean_ttft_ms: float = Field(gt=0)
    output_tok_s_error: float = Field(description="sim / real - 1 of output tok/s")
    mean_ttft_error: float = Field(description="sim / real - 1 of mean TTFT")
    measured_on: str = Field(description="which stored real runs (fit_host's file set / host)")

    @model_validator(mode="after")
    def _errors_match(self) -> "AccuracyRow":
        return _check_errors(self, "sim", (self.sim_output_tok_s, self.real_output_tok_s),
                             (self.sim_mean_ttft_ms, self.real_mean_ttft_ms))


class ProjectionRow(BaseModel):
    """One measured level against its projection from another GPU (one row of `fit_host.projection()`): the host
    constants fitted on `from_gpu`'s runs, the GPU swapped to `to_gpu`, against `to_gpu`'s measured runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fitted_on: str = Field(description="the host profile fitted on the from-GPU's runs")
    from_gpu: str
    to_gpu: str
    concurrency: int = Field(ge=1)
    model: str
    projected_output_tok_s: float = Field(gt=0)
    real_output_tok_s: float = Field(gt=0)
    projected_mean_ttft_ms: float = Field(gt=0)
    real_mean_ttft_ms: float = Field(gt=0)
    output_tok_s_error: float = Field(description="projected / real - 1 of output tok/s")
    mean_ttft_error: float = Field(description="projected / real - 1 of mean TTFT")

    @model_validator(mode="after")
    def _errors_match(self) -> "ProjectionRow":
        return _check_errors(self, "projected", (self.projected_output_tok_s, self.real_output_tok_s),
                             (self.projected_mean_ttft_ms, self.real_mean_ttft_ms))


class AccuracyFile(BaseModel):
    """assets/sim_accuracy.yaml: the calibration rows and where they came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generated_by: str = Field(description="the command that wrote this file")
    date: _dt.date = Field(description="when it was written (UTC)")
    data: str = Field(description="what the rows are: the measured runs and the sim they are compared with")
    see: str = Field(default=DOC, description="where the comparison is discussed")
    input_len: int = Field(ge=1, description="prompt tokens of every measured run")
    output_len: int = Field(ge=1, description="output tokens of every measured run")
    rows: list[AccuracyRow] = Field(min_length=1)
    projections: list[ProjectionRow] = Field(default_factory=list, description="fit_host.projection(): the "
                                             "projection check of bench/project.py's expected error")


def rows_from_compare(compared: Iterable[Sequence]) -> list[AccuracyRow]:
    """AccuracyRows from `fit_host.compare()`'s tuples (gpu, host, prompts, concurrency, sim tok/s, real tok/s,
    sim TTFT ms, real TTFT ms, measured on, model); figures to 6 significant digits, errors to 4 decimals."""
    out = []
    for gpu, host, prompts, c, st, rt, sf, rf, src, model in compared:
        st, rt, sf, rf = (float(f"{float(x):.6g}") for x in (st, rt, sf, rf))
        out.append(AccuracyRow(gpu=gpu, host_profile=host, prompts=prompts, concurrency=int(c), model=model,
                               sim_output_tok_s=st, real_output_tok_s=rt, sim_mean_ttft_ms=sf, real_mean_ttft_ms=rf,
                               output_tok_s_error=round(st / rt - 1, 4), mean_ttft_error=round(sf / rf - 1, 4),
                               measured_on=str(src)))
    return out


def projections_from(projected: Iterable[Sequence]) -> list[ProjectionRow]:
    """ProjectionRows from `fit_host.projection()`'s tuples (fitted host, from GPU, to GPU, concurrency, projected
    tok/s, measured tok/s, projected TTFT ms, measured TTFT ms); the model is Qwen3-0.6B there."""
    from engines.sim.fit_host import Q06

    out = []
    for host, src, dst, c, pt, mt, pf, mf in projected:
        pt, mt, pf, mf = (float(f"{float(x):.6g}") for x in (pt, mt, pf, mf))
        out.append(ProjectionRow(fitted_on=host, from_gpu=src, to_gpu=dst, concurrency=int(c), model=Q06,
                                 projected_output_tok_s=pt, real_output_tok_s=mt, projected_mean_ttft_ms=pf,
                                 real_mean_ttft_ms=mf, output_tok_s_error=round(pt / mt - 1, 4),
                                 mean_ttft_error=round(pf / mf - 1, 4)))
    return out


def write_accuracy(rows: Iterable[Sequence | AccuracyRow], path: str | Path = ACCURACY_FILE, *,
                   input_len: int | None = None, output_len: int | None = None,
                   date: _dt.date | None = None, projections: Iterable[Sequence | ProjectionRow] = ()) -> AccuracyFile:
    """Write the asset from compare()'s rows (tuples) or AccuracyRows, and projection()'s; returns what was written
    (validated)."""
    from engines.sim import fit_host

    rows = list(rows)
    typed = [r for r in rows if isinstance(r, AccuracyRow)] + rows_from_compare(
        r for r in rows if not isinstance(r, AccuracyRow))
    doc = AccuracyFile(
        generated_by=WRITE_CMD, date=date or _dt.datetime.now(_dt.timezone.utc).date(),
        data=("fit_host.compare(): every stored real vLLM 0.25.1 run (closed loop, the mean of a host's runs "
              "per level) against simulate_closed_loop with that host's profile and the same request counts; "
              "error = sim / real - 1"),
        input_len=input_len or fit_host.IN_LEN, output_len=output_len or fit_host.OUT_LEN,
        rows=sorted(typed, key=lambda r: (r.model, r.gpu, r.host_profile, r.prompts, r.concurrency)),
        projections=[r for r in projections if isinstance(r, ProjectionRow)]
        + projections_from(r for r in projections if not isinstance(r, ProjectionRow)))
    body = doc.model_dump(mode="json")
    head = ("# The simulator's error against measured runs (engines/sim/accuracy.py). Generated, do not edit:\n"
            f"# regenerate with `{WRITE_CMD}` after refitting the sim's constants or host profiles.\n")
    Path(path).write_text(head + yaml.safe_dump(body, sort_keys=False, width=120))
    _load.cache_clear()
    return doc


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> AccuracyFile:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError as e:
        raise CatalogError(f"sim accuracy file missing: {p} (regenerate it with `{WRITE_CMD}`)") from e
    except yaml.YAMLError as e:
        raise CatalogError(f"{p}: not valid YAML: {e}") from e
    try:
        return AccuracyFile.model_validate(raw)
    except Exception as e:  # pydantic.ValidationError: name the file
        raise CatalogError(f"{p}: invalid sim accuracy file (regenerate it with `{WRITE_CMD}`): {e}") from e


def load_accuracy(path: str | Path = ACCURACY_FILE) -> AccuracyFile:
    """The asset, validated; CatalogError naming the file when it is missing or invalid. Cached per file version."""
    p = Path(path)
    try:
        mtime = p.stat().st_mtime_ns
    except OSError:
        mtime = -1
    return _load(str(p), mtime)


@dataclass(frozen=True)
class Band:
    """The expected error of a simulated figure at one concurrency (max |sim / real - 1| over measured runs)."""

    asked: int                       # the concurrency asked about
    concurrency: int                 # the measured concurrency the band comes from (nearest on a log scale)
    output_tok_s_error: float        # max |relative error| of output tok/s, e.g. 0.12 = ±12%
    mean_ttft_error: float           # max |relative error| of mean TTFT
    n_runs: int                      # measured rows at that concurrency that the max is over
    models: tuple[str, ...]          # models of those rows
    gpus: tuple[str, ...]            # GPUs of those rows
    measured: tuple[int, int]        # smallest and largest measured concurrency of the rows considered
    beyond_range: bool               # asked > 2x the largest or < 1/2 the smallest measured concurrency
    model: str | None = None         # the model asked for (None: not asked)
    model_matched: bool = True       # False: no run of that model was measured, the band is over all models
    gpu: str | None = None
    gpu_matched: bool = True         # False: no run on that GPU (of the model used) was measured
    input_len: int = 0               # the measured runs' shape
    output_len: int = 0


def _nearest(asked: float, measured: Sequence[int]) -> int:
    """Nearest on a log scale; a tie goes to the larger concurrency."""
    return min(measured, key=lambda c: (abs(math.log(asked / c)), -c))


def expected_error(concurrency: float, model: str | None = None, gpu: str | None = None,
                   path: str | Path = ACCURACY_FILE) -> Band | None:
    """The band for a simulated level at `concurrency` users of `model` on `gpu` (None: any). Filters fall back to
    every row when no measured row matches (the band says so). None when there is nothing to go by (concurrency not
    positive)."""
    if concurrency is None or not concurrency > 0:
        return None
    doc = load_accuracy(path)
    rows = list(doc.rows)
    model_ok = gpu_ok = True
    if model:
        got = [r for r in rows if r.model.lower() == model.lower()]
        model_ok = bool(got)
        rows = got or rows
    if gpu:
        got = [r for r in rows if r.gpu.lower() == gpu.lower()]
        gpu_ok = bool(got)
        rows = got or rows
    measured = sorted({r.concurrency for r in rows})
    c = _nearest(float(concurrency), measured)
    at = [r for r in rows if r.concurrency == c]
    lo, hi = measured[0], measured[-1]
    return Band(asked=int(concurrency), concurrency=c,
                output_tok_s_error=max(abs(r.output_tok_s_error) for r in at),
                mean_ttft_error=max(abs(r.mean_ttft_error) for r in at), n_runs=len(at),
                models=tuple(sorted({r.model for r in at})), gpus=tuple(sorted({r.gpu for r in at})),
                measured=(lo, hi), beyond_range=concurrency > RANGE_FACTOR * hi or concurrency < lo / RANGE_FACTOR,
                model=model or None, model_matched=model_ok, gpu=gpu or None, gpu_matched=gpu_ok,
                input_len=doc.input_len, output_len=doc.output_len)


# --------------------------------------------------------------------------------------------------- the words
_GPU_MEM = re.compile(r"[-_ ]?\d+\s*GB$", re.IGNORECASE)


def _short_gpu(g: str) -> str:
    return _GPU_MEM.sub("", g) or g


def _short_model(m: str) -> str:
    return m.rstrip("/").rsplit("/", 1)[-1] or m


def pct(e: float) -> str:
    """±12% (whole percent from 10% up), ±3.4% below."""
    return f"±{e * 100:.0f}%" if e * 100 >= 9.95 else f"±{e * 100:.1f}%"


def _users(c: int) -> str:
    return f"{c:,} user" + ("" if c == 1 else "s")


def shape_of(cfg) -> tuple[int, int, int, int] | None:
    """(input min, input max, output min, output max) of a run config's workload (a bench.config.RunConfig or its
    dict), None when it has none."""
    def get(obj, key):
        return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
    try:
        w = get(cfg, "workload") or cfg
        i, o = get(w, "input_len"), get(w, "output_len")
        return int(get(i, "min")), int(get(i, "max")), int(get(o, "min")), int(get(o, "max"))
    except (TypeError, ValueError):
        return None


def _shape(lo: int, hi: int) -> str:
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def describe(band: Band | None, levels: Sequence[int] | None = None,
             shape: tuple[int, int, int, int] | None = None) -> str:
    """One line for a band, e.g. "SIMULATED: expected error ±12% output tok/s, ±30% mean TTFT at 128 users (max over
    6 measured runs of this shape: 128 users, 512 in / 128 out, Qwen3-0.6B / Qwen3-8B on H100-SXM / H200;
    docs/PERFORMANCE.md)". `levels`: the run's concurrencies this band stands for (default: the band's asked one)."""
    if band is None:
        return "SIMULATED: expected error unknown (no measured runs to compare with)"
    levels = sorted(set(levels or [band.asked]))
    asked = _users(levels[0]) if len(levels) == 1 else "C=" + ", ".join(f"{c:,}" for c in levels)
    figures = f"{pct(band.output_tok_s_error)} output tok/s, {pct(band.mean_ttft_error)} mean TTFT"
    whose = (" / ".join(_short_model(m) for m in band.models) + " on "
             + " / ".join(_short_gpu(g) for g in band.gpus))
    measured_shape = f"{band.input_len:,} in / {band.output_len:,} out, " if band.input_len else ""
    runs = f"{band.n_runs} measured run" + ("" if band.n_runs == 1 else "s")
    notes = []
    if band.model and not band.model_matched:
        notes.append(f"none of {_short_model(band.model)} measured")
    if band.gpu and not band.gpu_matched:
        notes.append(f"none on {_short_gpu(band.gpu)} measured")
    if shape and band.input_len and shape != (band.input_len, band.input_len, band.output_len, band.output_len):
        notes.append(f"this run is {_shape(shape[0], shape[1])} in / {_shape(shape[2], shape[3])} out, "
                     "a shape not measured")
    notes.append("most rows are runs the host constants were fitted on")
    source = (f"max over {runs} of this shape: {_users(band.concurrency)}, {measured_shape}{whose}"
              + "".join(f"; {n}" for n in notes) + f"; {DOC}")
    if band.beyond_range:
        lo, hi = band.measured
        verb = "is" if len(levels) == 1 else "are"
        return (f"SIMULATED: {asked} {verb} beyond the measured range ({lo:,}–{hi:,} users): expected error unknown; "
                f"at {_users(band.concurrency)} it is {figures} ({source})")
    nearest = "" if levels == [band.concurrency] else f", nearest measured {band.concurrency:,}"
    return f"SIMULATED: expected error {figures} at {asked}{nearest} ({source})"


def run_notes(levels: Iterable[int | None], model: str | None = None, gpu: str | None = None,
              path: str | Path = ACCURACY_FILE, shape: tuple[int, int, int, int] | None = None) -> list[str]:
    """The lines for a simulated run: its levels grouped by the measured concurrency (and range) their band comes
    from, one describe() line per group, lowest first. Never raises: a missing or bad asset gives one line saying
    so (the run's numbers are still shown, labelled SIMULATED)."""
    cs = sorted({int(c) for c in levels if c is not None and c > 0})
    if not cs:
        return []
    try:
        bands = [(c, expected_error(c, model, gpu, path)) for c in cs]
    except CatalogError as e:
        return [f"SIMULATED: expected error unknown: {e}"]
    groups: dict[tuple, list[tuple[int, Band | None]]] = {}
    for c, b in bands:
        key = (b.concurrency, b.beyond_range) if b is not None else (None, None)
        groups.setdefault(key, []).append((c, b))
    return [describe(g[0][1], [c for c, _ in g], shape) for g in groups.values()]


def projection_band(from_gpu: str, to_gpu: str, levels: Iterable[int], path: str | Path = ACCURACY_FILE, *,
                    model: str | None = None, text_prompt: bool | None = None,
                    floor: tuple[float, float] = (0.0, 0.0)) -> str:
    """One line: the projection check's error for a projection from `from_gpu` to `to_gpu` at `levels` users, the
    max |projected / real - 1| over the checked rows at the measured concurrencies nearest those levels, never
    below `floor` (the projection's own in-sample residual: tok/s, TTFT). It names what the checks did not cover:
    the GPU pair, the model, text prompts (the checks are of token-id runs). Never raises (a missing asset or no
    checks gives a line saying the error is unknown)."""
    try:
        rows = list(load_accuracy(path).projections)
    except CatalogError as e:
        return f"projection check: expected error unknown: {e}"
    if not rows:
        return "projection check: none stored, expected error unknown"
    cs = sorted({int(c) for c in levels if c and c > 0})
    measured = sorted({r.concurrency for r in rows})
    near = sorted({_nearest(float(c), measured) for c in cs}) or measured
    at = [r for r in rows if r.concurrency in near]
    tok = max([abs(r.output_tok_s_error) for r in at] + [floor[0]])
    ttft = max([abs(r.mean_ttft_error) for r in at] + [floor[1]])
    pairs = sorted({(r.from_gpu, r.to_gpu) for r in rows})
    checked = " and ".join(f"{_short_gpu(a)} to {_short_gpu(b)}" for a, b in pairs)
    this = ((from_gpu or "").lower(), (to_gpu or "").lower())
    matched = any((a.lower(), b.lower()) == this for a, b in pairs)
    lo, hi = measured[0], measured[-1]
    beyond = any(c > RANGE_FACTOR * hi or c < lo / RANGE_FACTOR for c in cs)
    notes = [] if matched else [f"{_short_gpu(from_gpu)} to {_short_gpu(to_gpu)} was not among the checks"]
    checked_models = {r.model.lower() for r in rows}
    if model and model.lower() not in checked_models:
        notes.append(f"{_short_model(model)} was not among them")
    if text_prompt:
        notes.append("they are of token-id prompts, this run's are text")
    if floor[0] or floor[1]:
        notes.append("never below the fit's own residual")
    if beyond:
        notes.append(f"some levels are beyond the checked {lo:,}-{hi:,} users")
    models = " / ".join(sorted({_short_model(r.model) for r in rows}))
    return (f"projection check: expected error {pct(tok)} output tok/s, {pct(ttft)} mean TTFT at "
            + ", ".join(f"{c:,}" for c in near) + f" users (max over {len(at)} projected levels, {checked}, "
            + f"{models}, against measured runs" + "".join(f"; {n}" for n in notes) + f"; {DOC})")


# ------------------------------------------------------------------------------------------------------- CLI
def bands_table(path: str | Path = ACCURACY_FILE, model: str | None = None, gpu: str | None = None) -> str:
    """Markdown: per measured concurrency the band (every row, or those of model / GPU)."""
    doc = load_accuracy(path)
    lines = ["| concurrency | output tok/s | mean TTFT | runs | models | GPUs |", "|---:|---:|---:|---:|---|---|"]
    for c in sorted({r.concurrency for r in doc.rows}):
        b = expected_error(c, model, gpu, path)
        lines.append(f"| {c:,} | {pct(b.output_tok_s_error)} | {pct(b.mean_ttft_error)} | {b.n_runs} | "
                     f"{', '.join(map(_short_model, b.models))} | {', '.join(map(_short_gpu, b.gpus))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engines.sim.accuracy", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="regenerate the asset from fit_host.compare() and "
                    "projection() (~30 s)")
    ap.add_argument("--file", type=Path, default=ACCURACY_FILE, help="the asset (default: %(default)s)")
    ap.add_argument("--model", help="the band of this model's runs (falls back to all)")
    ap.add_argument("--gpu", help="the band of this GPU's runs (falls back to all)")
    a = ap.parse_args(argv)
    try:
        if a.write:
            from engines.sim.fit_host import compare, projection

            doc = write_accuracy(compare(), a.file, projections=projection())
            print(f"wrote {a.file}: {len(doc.rows)} rows, {len(doc.projections)} projection rows", file=sys.stderr)
        doc = load_accuracy(a.file)
    except CatalogError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Sim vs measured, max |sim / real - 1| per concurrency ({doc.input_len} in / {doc.output_len} out; "
          f"{a.file.name} of {doc.date}, `{doc.generated_by}`)\n")
    print(bands_table(a.file, a.model, a.gpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
