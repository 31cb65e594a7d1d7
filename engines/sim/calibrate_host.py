"""`melt calibrate-host`: time the API-server frontend's CPU work on this machine and write a host profile.

What is timed (one thread, CPU time via time.thread_time_ns, so other processes on a shared machine cost wall time
but not the figure; the median of several rounds per phase):
  * tokenize: `tokenizers.Tokenizer.encode` of text prompts, one call per prompt, as vLLM's API server tokenizes a
    text prompt with the model's HF fast tokenizer; prompts are random ids of the tokenizer's ordinary range decoded
    to text (as bench/prompts.py and vllm bench's random dataset make them). Per prompt token.
  * detokenize: one `tokenizers.decoders.DecodeStream` per request, `.step(tokenizer, id)` per output token: what
    vLLM V1's FastIncrementalDetokenizer does (its priming with the prompt's last tokens and stop-string checks are
    left out). Output ids random over the same range (a dummy model's output). Per output token.
  * frame: per output token one OpenAI completion chunk built as a pydantic model shaped like vLLM's
    CompletionStreamResponse and written as `data: {model_dump_json()}\\n\\n` bytes, as vLLM's OpenAI server emits one
    chunk per token. Per output token.

These micro-costs are NOT the API server's whole cost: real vLLM adds asyncio, HTTP parsing, ZMQ to the engine core,
output processing and request bookkeeping (on the H100 host the real-run cost was several times the micro-costs).
So the profile's cost fields, which are all the sim reads, are either
  * `scaled-micro`: the reference profile's real-run costs x (this host's micro time / the reference's micro time),
    per-token costs by the per-token micro ratio, tokenization by the tokenize ratio. Assumption: the whole API-server
    cost scales with the frontend micro-benchmark between hosts (same vLLM, same Python). Needs a reference that
    carries a `micro` block measured on the host its real runs came from;
  * `raw-micro`: when the reference carries no micro block (every bundled profile but h200-host-d-2026-12-03: the
    micro-benchmark could not be run on the hosts those runs came from), the micro-costs themselves: the sim then models a frontend
    that does only the measured work, a floor of the real cost (an optimistic "on my host").
The micro numbers are always kept in the profile's `micro` block, so a profile can be rescaled later.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import re
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from engines.sim.host import HOSTS_DIR, HostMicro, HostProfile, load_host_profile

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
DEFAULT_REFERENCE = "typical-datacenter-core"
METHOD = ("CPU time of one thread (time.thread_time_ns), median of rounds; tokenize: Tokenizer.encode per text "
          "prompt; detokenize: DecodeStream.step per token (one stream per request); frame: pydantic "
          "CompletionStreamResponse-shaped chunk -> 'data: {json}\\n\\n' bytes per token")


class CalibrateError(Exception):
    """Bad input or an unwritable output: one line for the user."""


# -- the tokenizer ----------------------------------------------------------------------------------------------

def resolve_tokenizer(tokenizer: str | None, model: str) -> tuple[Path, str]:
    """(tokenizer.json path, label): --tokenizer (a tokenizer.json or a directory holding one), else the dummy
    tokenizer Melt builds for the catalog model (catalog/tokenizer.py, as engines/dummy.py writes it)."""
    if tokenizer:
        p = Path(tokenizer).expanduser()
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise CalibrateError(f"--tokenizer {tokenizer}: no such tokenizer.json file")
        return p, str(p)
    from catalog import CatalogError, get_model
    from catalog.tokenizer import tokenizer_file

    try:
        spec = get_model(model)
    except CatalogError as e:
        raise CalibrateError(str(e)) from None
    return tokenizer_file(spec.vocab_size), f"melt dummy BPE for {spec.id} (vocab {spec.vocab_size})"


def load_tokenizer(path: Path):
    """(Tokenizer, lo, hi): the tokenizer and the id range prompts and outputs are drawn from; CalibrateError if the
    file is not a tokenizer.json."""
    from tokenizers import Tokenizer

    try:
        raw = json.loads(path.read_text())
        tok = Tokenizer.from_str(json.dumps(raw))
    except Exception as e:  # JSON or tokenizers' own parse error
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CalibrateError(f"{path}: not a tokenizer.json the tokenizers library can load ({first})") from None
    from catalog.tokenizer import prompt_id_range

    try:
        lo, hi = prompt_id_range(raw)
    except ValueError as e:
        raise CalibrateError(f"{path}: {e}") from None
    return tok, lo, hi


# -- the framing, shaped like vLLM's CompletionStreamResponse ---------------------------------------------------

class _Choice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    text: str
    logprobs: Any | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class _Chunk(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[_Choice]
    usage: Any | None = None


def _frame(rid: str, created: int, model: str, piece: str, last: bool) -> bytes:
    chunk = _Chunk(id=rid, created=created, model=model,
                   choices=[_Choice(index=0, text=piece, finish_reason="length" if last else None)])
    return f"data: {chunk.model_dump_json(exclude_unset=False)}\n\n".encode()


# -- the micro-benchmark ----------------------------------------------------------------------------------------

def _rounds(fn, budget_s: float, min_rounds: int = 3, max_rounds: int = 50) -> list[float]:
    """Per-unit CPU seconds of each round of fn() -> units, after one warm-up round, until the budget (wall) is
    spent (at least min_rounds)."""
    fn()
    out: list[float] = []
    end = time.perf_counter() + budget_s
    while len(out) < min_rounds or (time.perf_counter() < end and len(out) < max_rounds):
        t0 = time.thread_time_ns()
        units = fn()
        out.append((time.thread_time_ns() - t0) / 1e9 / max(units, 1))
    return out


def measure(tokenizer_path: Path, label: str = "", seconds: float = 3.0, prompt_len: int = 512,
            output_len: int = 128, seed: int = 0, loaded=None) -> HostMicro:
    """Run the three phases (each about seconds/3) and return the micro-costs with their provenance. `loaded`:
    load_tokenizer(tokenizer_path) done already."""
    from catalog.tokenizer import fingerprint
    import tokenizers
    from tokenizers.decoders import DecodeStream

    tok, lo, hi = loaded or load_tokenizer(tokenizer_path)
    rng = random.Random(seed)
    prompts = [tok.decode([rng.randrange(lo, hi) for _ in range(prompt_len)]) for _ in range(16)]
    outputs = [[rng.randrange(lo, hi) for _ in range(output_len)] for _ in range(8)]
    pieces = []
    for ids in outputs:
        ds = DecodeStream(skip_special_tokens=True)
        pieces.append([ds.step(tok, i) or "" for i in ids])

    def tokenize() -> int:
        return sum(len(tok.encode(p, add_special_tokens=False).ids) for p in prompts)

    def detokenize() -> int:
        n = 0
        for ids in outputs:
            ds = DecodeStream(skip_special_tokens=True)
            for i in ids:
                ds.step(tok, i)
            n += len(ids)
        return n

    created = int(time.time())

    def frame() -> int:
        n = 0
        for k, ps in enumerate(pieces):
            rid = f"cmpl-{k:032x}"
            last = len(ps) - 1
            for j, p in enumerate(ps):
                _frame(rid, created, "model", p, j == last)
            n += len(ps)
        return n

    per = max(seconds, 0.1) / 3
    r_tok, r_det, r_frm = _rounds(tokenize, per), _rounds(detokenize, per), _rounds(frame, per)
    spread = max(max(r) / min(r) - 1 if min(r) > 0 else 0.0 for r in (r_tok, r_det, r_frm))
    return HostMicro(
        tokenize_per_prompt_token_s=statistics.median(r_tok), detokenize_per_token_s=statistics.median(r_det),
        frame_per_token_s=statistics.median(r_frm), method=METHOD, tokenizer=label or str(tokenizer_path),
        tokenizer_sha=fingerprint(tokenizer_path), vocab_size=tok.get_vocab_size(), prompt_len=prompt_len,
        output_len=output_len, rounds=min(len(r_tok), len(r_det), len(r_frm)), spread=round(spread, 4),
        hostname=socket.gethostname(), cpu_model=cpu_model(), cpu_count=os.cpu_count() or 0,
        load_avg=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        python=platform.python_version(), tokenizers_version=tokenizers.__version__)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- micro -> profile -------------------------------------------------------------------------------------------

ENGINE_FIELDS = ("engine_step_s", "engine_per_seq_s", "engine_prefill_s", "engine_piecewise_s", "frontend_latency_s")


def build_profile(micro: HostMicro, reference: HostProfile, profile_id: str) -> tuple[HostProfile, list[str]]:
    """The profile for this host and the lines that say how its cost fields were derived."""
    head = (f"{micro.hostname} ({micro.cpu_model}), {micro.date}; micro-benchmark with {micro.tokenizer} "
            f"(sha {micro.tokenizer_sha})")
    ref = reference.micro
    if ref is not None and ref.per_token_s > 0:
        r_tok = micro.tokenize_per_prompt_token_s / ref.tokenize_per_prompt_token_s if \
            ref.tokenize_per_prompt_token_s > 0 else 1.0
        r_tpt = micro.per_token_s / ref.per_token_s
        prof = HostProfile(
            id=profile_id, description=f"{micro.hostname}: {reference.id} scaled by the frontend micro-benchmark",
            source=f"melt calibrate-host on {head}; scaled from {reference.id}",
            per_request_s=reference.per_request_s * r_tpt,
            tokenize_per_prompt_token_s=reference.tokenize_per_prompt_token_s * r_tok,
            per_token_light_s=reference.per_token_light_s * r_tpt,
            per_token_heavy_s=reference.per_token_heavy_s * r_tpt,
            light_streams=reference.light_streams, heavy_streams=reference.heavy_streams,
            # the engine core's loop and the request's path are the same kind of Python work: scaled alike
            **{k: getattr(reference, k) * r_tpt for k in ENGINE_FIELDS if getattr(reference, k) is not None},
            derivation="scaled-micro", reference=reference.id, micro=micro)
        notes = [f"costs: scaled-micro = {reference.id}'s real-run costs x this host's micro time / its micro time "
                 f"(per token x{r_tpt:.3f}, tokenize x{r_tok:.3f}; the engine loop's and the frontend latency x"
                 f"{r_tpt:.3f} too); assumes the whole API-server and engine-loop cost scales with the "
                 "micro-benchmark between hosts"]
        if (ref.vocab_size, ref.tokenizer_sha) != (micro.vocab_size, micro.tokenizer_sha):
            notes.append(f"note: the reference's micro-benchmark used another tokenizer ({ref.tokenizer}, sha "
                         f"{ref.tokenizer_sha}): the ratio mixes tokenizer cost with host speed")
        return prof, notes
    prof = HostProfile(
        id=profile_id, description=f"{micro.hostname}: raw frontend micro-costs (a floor of the API server's cost)",
        source=f"melt calibrate-host on {head}; raw micro-costs ({reference.id} carries no micro time to scale by)",
        per_request_s=0.0, tokenize_per_prompt_token_s=micro.tokenize_per_prompt_token_s,
        per_token_light_s=micro.per_token_s, per_token_heavy_s=micro.per_token_s,
        light_streams=reference.light_streams, heavy_streams=reference.heavy_streams,
        derivation="raw-micro", reference=None, micro=micro)
    k = reference.per_token_heavy_s / micro.per_token_s if micro.per_token_s > 0 else float("inf")
    notes = [f"costs: RAW micro-costs. The reference {reference.id} carries no micro time (its real runs were on a "
             "host where this benchmark was not run), so nothing can scale its real-run costs to this host.",
             "The sim will charge exactly these micro-costs as the API server's work (tokenize per prompt token, "
             "detokenize + frame per output token, the same at any stream count, nothing per request): a floor,",
             f"since real vLLM adds asyncio, HTTP, ZMQ and bookkeeping ({reference.id}'s real-run cost per token at "
             f"{reference.heavy_streams}+ streams is {k:.1f}x this host's micro-cost). Read 'on my host' as the "
             "optimistic bound; give --reference a profile with a micro block for a scaled one."]
    return prof, notes


def default_profile_id(micro: HostMicro) -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]+", "-", micro.hostname).strip("-.") or "host"
    return f"{host}-{micro.date[:10]}"


def default_output(profile_id: str) -> Path:
    from storage.db import data_dir

    return data_dir() / "hosts" / f"{profile_id}.yaml"


def check_writable(path: Path) -> None:
    """Fail before the benchmark, not after it, when the profile could not be written."""
    path = Path(path).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        raise CalibrateError(f"--output {path}: a host profile file must end in .yaml (the sim reads a suffix-less "
                             "name as a bundled profile id)")
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        why = "a part of its directory is a file" if isinstance(e, (FileExistsError, NotADirectoryError)) else (
            e.strerror or str(e))
        raise CalibrateError(f"cannot write {path}: {why}") from None


def write_profile(prof: HostProfile, path: Path, notes: list[str]) -> Path:
    """Write the YAML (atomic), then load it back through load_host_profile (what the sim does)."""
    path = Path(path).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        raise CalibrateError(f"--output {path}: a host profile file must end in .yaml (the sim reads a suffix-less "
                             "name as a bundled profile id)")
    head = "".join(f"# {line}\n" for line in [f"Host profile written by `melt calibrate-host` ({prof.derivation})."]
                   + notes)
    text = head + yaml.safe_dump(prof.model_dump(mode="json"), sort_keys=False, width=120)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        why = "a part of its directory is a file" if isinstance(e, (FileExistsError, NotADirectoryError)) else (
            e.strerror or str(e))
        raise CalibrateError(f"cannot write {path}: {why}") from None
    back = load_host_profile(path)
    if back != prof:
        raise CalibrateError(f"{path}: written profile did not read back equal")
    return path


def attach_micro(micro: HostMicro, path: Path) -> HostProfile:
    """Make a real-runs profile a reference: append this host's micro block to its YAML (comments kept). Only
    meaningful on the host whose real runs the profile was fitted to (the same lease of a GPU machine)."""
    path = Path(path).expanduser()
    prof = load_host_profile(path)
    if prof.derivation != "real-runs" or prof.micro is not None:
        raise CalibrateError(f"--attach {path}: only a real-runs profile without a micro block can take one "
                             f"(this one is {prof.derivation}{', with a micro block' if prof.micro else ''})")
    block = yaml.safe_dump({"micro": micro.model_dump(mode="json")}, sort_keys=False, width=120)
    try:
        old = path.read_text()
        path.write_text(old.rstrip("\n") + "\n# Micro-benchmark of `melt calibrate-host --attach` on this profile's "
                        "host: makes it a reference for scaled-micro profiles.\n" + block)
    except OSError as e:
        raise CalibrateError(f"cannot write {path}: {e.strerror or e}") from None
    return load_host_profile(path)


# -- the comparison table ---------------------------------------------------------------------------------------

def api_ceiling_tok_s(p: HostProfile, output_len: int = 128) -> float:
    """Output tok/s one saturated API core allows at >= heavy_streams streams for this request shape (a text prompt's
    tokenization runs in a worker thread, off that core: engines/sim/host.py)."""
    per_req = p.request_cost_s() + output_len * p.per_token_heavy_s
    return output_len / per_req if per_req > 0 else float("inf")


def bundled_profiles() -> list[HostProfile]:
    return [load_host_profile(f) for f in sorted(HOSTS_DIR.glob("*.yaml"))]


def table(mine: HostProfile, others: list[HostProfile]) -> str:
    rows = [["profile", "costs from", "tokenize µs/prompt tok", "µs/out tok (light / heavy)",
             "micro µs/out tok", "API-core ceiling tok/s*"]]
    for p in [mine, *others]:
        micro = f"{1e6 * p.micro.per_token_s:.2f}" if p.micro else "—"
        rows.append([p.id + (" (this host)" if p is mine else ""), p.derivation,
                     f"{1e6 * p.tokenize_per_prompt_token_s:.2f}",
                     f"{1e6 * p.per_token_light_s:.2f} / {1e6 * p.per_token_heavy_s:.2f}", micro,
                     f"{api_ceiling_tok_s(p):,.0f}"])
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    lines.append("* output tok/s one saturated API-server core allows for 512-token text prompts / 128 output tokens "
                 "at the heavy stream count (the sim's frontend bound; the GPU may bind first)")
    return "\n".join(lines)


def micro_table(m: HostMicro) -> str:
    return "\n".join([
        f"micro-benchmark ({m.rounds}+ rounds per phase, CPU time, worst round spread {m.spread:.0%}):",
        f"  tokenize     {1e6 * m.tokenize_per_prompt_token_s:8.3f} µs / prompt token  ({m.prompt_len}-token text "
        "prompts)",
        f"  detokenize   {1e6 * m.detokenize_per_token_s:8.3f} µs / output token",
        f"  SSE framing  {1e6 * m.frame_per_token_s:8.3f} µs / output token",
        f"  per token    {1e6 * m.per_token_s:8.3f} µs (detokenize + framing)",
    ])
