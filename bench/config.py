"""Run configuration: the pydantic models stored (as JSON) on every run row and passed to the worker.

How long a level runs (WorkloadSpec): `requests` per level, or `duration_s` per level, or, when neither is given,
the steady-state rule: until the level has `min_steady_s` of steady state (bench/steady.py) and every user has
finished `min_requests_per_user` measured requests, capped at `max_level_s`. Which levels a run has:
RunConfig.planned_levels() (concurrency levels x request rates x repeats).
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bench.alerts import AlertThresholds
from bench.slo_search import SloSearchSpec
from catalog.recipes import ServiceRequest
from engines.spec import EngineSpec


MAX_AUTO_RAMP_S = 5.0      # the default ramp-up never exceeds this
AUTO_RAMP_PER_USER_S = 0.05  # ... and spaces user starts by at most this (so c=1 has none, c=16 0.75 s)


def _parse_list(text: str, conv, not_a: str, must: str, example: str) -> list:
    """Comma/space/semicolon-separated positive numbers; ValueError in plain words (for CLI and UI alike)."""
    out = []
    for part in str(text).replace(";", ",").replace(" ", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = conv(part)
        except ValueError:
            raise ValueError(f"{part!r} is not {not_a} (expected e.g. {example})") from None
        if not 0 < v < float("inf"):
            raise ValueError(f"{must} must be positive, got {part}")
        out.append(v)
    if not out:
        raise ValueError(f"give at least one {must.rstrip('s')}, e.g. {example}")
    return out


def parse_levels(text: str) -> list[int]:
    """"10,100 400" -> [10, 100, 400]."""
    return _parse_list(text, int, "a whole number", "concurrency levels", "10,100,400")


def parse_rates(text: str) -> list[float]:
    """"5,10 20" -> [5.0, 10.0, 20.0] (requests/s)."""
    return _parse_list(text, float, "a number", "request rates", "5,10,20")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The default shape of "lognormal" without parameters: the mean prompt and response lengths of LMSYS-Chat-1M (Zheng et
# al. 2023, Table 1: 69.5 and 214.5 tokens). That paper gives means, not a shape: sigma 1.0 (a long right tail, p99
# about 8x the median) is Melt's assumption, stated wherever the preset is described.
CHAT_LOGNORMAL = {"input": (69.5, 1.0), "output": (214.5, 1.0)}
_Z999 = 3.090232306167813  # standard normal 99.9th percentile: the default cap of normal/lognormal lengths


class LengthRange(_Strict):
    """Token length distribution. Parsed from:
      "128"                      fixed
      "128:1024"                 uniform in [128, 1024]
      "normal:MEAN,STD[,MIN,MAX]"      rounded, clipped to [MIN, MAX] (default 1 and the 99.9th percentile)
      "lognormal[:MEAN,SIGMA[,MIN,MAX]]"  MEAN is the distribution's mean; SIGMA the std of log(length); without
                                 parameters the chat-like default (CHAT_LOGNORMAL)
    min/max are always the bounds (what memory and max-model-len checks use)."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)
    dist: Literal["fixed", "uniform", "normal", "lognormal"] | None = None  # None: fixed if min == max else uniform
    mean: float | None = Field(default=None, gt=0)
    spread: float | None = Field(default=None, ge=0, description="normal: std; lognormal: sigma of log(length)")

    @model_validator(mode="after")
    def _order(self) -> "LengthRange":
        if self.min > self.max:
            raise ValueError(f"length range {self.min}:{self.max} has min > max")
        if self.dist in ("normal", "lognormal") and (self.mean is None or self.spread is None):
            raise ValueError(f"a {self.dist} length needs a mean and a spread")
        return self

    @property
    def kind(self) -> str:
        return self.dist or ("fixed" if self.min == self.max else "uniform")

    def sample(self, u: float) -> int:
        """The length for one uniform draw u in [0, 1) (inverse CDF, so every request consumes one draw)."""
        kind = self.kind
        if kind == "fixed":
            return self.min
        if kind == "uniform":
            return self.min + min(int(u * (self.max - self.min + 1)), self.max - self.min)
        u = min(max(u, 1e-12), 1 - 1e-12)
        z = NormalDist().inv_cdf(u)
        if kind == "normal":
            x = self.mean + self.spread * z
        else:
            x = math.exp(math.log(self.mean) - self.spread ** 2 / 2 + self.spread * z)
        return int(min(max(round(x), self.min), self.max))

    @classmethod
    def parse(cls, text: str, role: str = "input") -> "LengthRange":
        raw = str(text).strip()
        head, _, rest = raw.partition(":")
        if head.lower() in ("normal", "lognormal"):
            return cls._parse_dist(head.lower(), rest, raw, role)
        parts = raw.split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"bad length {text!r}: expected N, MIN:MAX, normal:MEAN,STD or lognormal[:MEAN,SIGMA] "
                             "with whole-number token counts") from None
        if len(nums) == 1:
            nums = nums * 2
        if len(nums) != 2:
            raise ValueError(f"bad length {text!r}: expected N or MIN:MAX")
        if nums[0] < 1:
            raise ValueError(f"bad length {text!r}: lengths must be >= 1")
        return cls(min=nums[0], max=nums[1])

    @classmethod
    def _parse_dist(cls, kind: str, rest: str, raw: str, role: str) -> "LengthRange":
        if not rest.strip():
            if kind == "normal":
                raise ValueError(f"bad length {raw!r}: normal needs MEAN,STD (e.g. normal:512,64)")
            mean, spread = CHAT_LOGNORMAL.get(role, CHAT_LOGNORMAL["input"])
            vals: list[float] = [mean, spread]
        else:
            try:
                vals = [float(x) for x in rest.split(",")]
            except ValueError:
                raise ValueError(f"bad length {raw!r}: expected {kind}:MEAN,{'STD' if kind == 'normal' else 'SIGMA'}"
                                 "[,MIN,MAX] with numbers") from None
        if len(vals) not in (2, 4):
            raise ValueError(f"bad length {raw!r}: give MEAN,{'STD' if kind == 'normal' else 'SIGMA'} and optionally "
                             "MIN,MAX")
        mean, spread = vals[0], vals[1]
        if not mean >= 1 or not spread >= 0:
            raise ValueError(f"bad length {raw!r}: the mean must be >= 1 and the spread >= 0")
        if len(vals) == 4:
            lo, hi = int(vals[2]), int(vals[3])
        else:
            lo = 1
            hi = (mean + spread * _Z999 if kind == "normal"
                  else math.exp(math.log(mean) - spread ** 2 / 2 + spread * _Z999))
            hi = max(int(math.ceil(hi)), lo)
        if lo < 1:
            raise ValueError(f"bad length {raw!r}: lengths must be >= 1")
        return cls(min=lo, max=hi, dist=kind, mean=mean, spread=spread)

    def __str__(self) -> str:
        kind = self.kind
        if kind == "fixed":
            return str(self.min)
        if kind == "uniform":
            return f"{self.min}:{self.max}"
        return f"{kind}:{self.mean:g},{self.spread:g},{self.min},{self.max}"


class SLO(_Strict):
    """Goodput thresholds (milliseconds); a request is 'good' when it meets every one that is set."""

    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)


class WorkloadSpec(_Strict):
    input_len: LengthRange = Field(default_factory=lambda: LengthRange(min=512, max=512))
    output_len: LengthRange = Field(default_factory=lambda: LengthRange(min=128, max=128))
    endpoint: str = Field(default="completions", pattern="^(completions|chat)$")
    # text: prompts of exact token lengths through the served model's tokenizer, sent as text (what a real client and
    # vllm bench send; the server pays for tokenizing them). token-ids: lists of ids the server never tokenizes.
    prompt_format: Literal["text", "token-ids"] = "text"
    tokenizer: str | None = Field(default=None, description="tokenizer.json or model dir for text prompts; "
                                  "default: the served model's own (see bench.prompts.resolve_tokenizer)")
    prefix_len: int = Field(default=0, ge=0, description="tokens of one prefix shared by every request of the run")
    prompt_file: str | None = Field(default=None, description="JSONL of prompts (text or lengths), used in order")
    requests: int | None = Field(default=None, ge=1,
                                 description="Requests per level; None (and no duration) = the steady-state rule")
    duration_s: float | None = Field(default=None, gt=0, description="Seconds per level instead of a request count")
    warmup_requests: int = Field(default=0, ge=0, description="Extra requests per level excluded from metrics")
    request_rate: float | None = Field(default=None, gt=0, description="Poisson arrivals (req/s) capped by concurrency")
    rates: list[float] | None = Field(default=None, min_length=1,
                                      description="Rate sweep: one level per rate (req/s) at each concurrency cap")
    burstiness: float = Field(default=1.0, gt=0, description="Gamma shape of inter-arrival times; 1 = Poisson")
    ramp_up_s: float | None = Field(default=None, ge=0,
                                    description="Closed loop: user g starts at g*ramp/C; None = auto, 0 = at once")
    # Melt opens every user's keep-alive connection before a level (bench/loadgen.py, "connect"), so no measured
    # request pays a TCP connect; vllm bench serve opens them at "go", inside its measured time. False = as vllm bench.
    preconnect: bool = Field(default=True, description="open each user's connection before the level; False = at go "
                                                       "(as vllm bench), the connects then count in TTFT")
    min_steady_s: float = Field(default=30.0, gt=0, description="Steady-state rule: seconds of steady state")
    min_requests_per_user: int = Field(default=5, ge=1, description="Steady-state rule: measured requests per user")
    max_level_s: float = Field(default=1200.0, gt=0, description="Steady-state rule: hard cap per level (seconds)")
    seed: int = 0
    slo: SLO = Field(default_factory=SLO)
    request_timeout_s: float = Field(default=600, gt=0)
    stall_timeout_s: float | None = Field(
        default=60, gt=0, description="No byte from the server this long while requests are in flight: those "
                                      "requests fail as stalled and the level ends (None = no stall watchdog)")

    @model_validator(mode="after")
    def _one_stop(self) -> "WorkloadSpec":
        if self.requests is not None and self.duration_s is not None:
            raise ValueError("give either requests per level or duration per level, not both")
        if self.endpoint == "chat" and self.prompt_format == "token-ids":
            raise ValueError("the chat endpoint sends text: use prompt format 'text' with it")
        if self.rates is not None and self.request_rate is not None:
            raise ValueError("give either one request rate or a list of rates, not both")
        if any(not r > 0 for r in self.rates or []):
            raise ValueError("request rates must be positive")
        if self.burstiness != 1.0 and self.request_rate is None and self.rates is None:
            raise ValueError("burstiness shapes request-rate arrivals: give a request rate (or rates) too")
        return self

    @property
    def steady_rule(self) -> bool:
        """Neither a request count nor a duration: levels run until they have enough steady state."""
        return self.requests is None and self.duration_s is None

    def requests_for(self, concurrency: int) -> int | None:
        """Measured requests per level, or None (duration-bound or the steady-state rule)."""
        return None if self.duration_s is not None else self.requests

    def ramp_for(self, concurrency: int) -> float:
        """Ramp-up seconds of a closed-loop level. Explicit: as given (0 = all users at once). Auto: 50 ms per user
        after the first, at most 5 s (and at most a quarter of a fixed duration), so c=1 has no ramp, c=16 0.75 s and
        c >= 101 5 s. The point is to break the lockstep of users that all start together; spreading starts over a
        few seconds (longer than one request at the usual 128+ output tokens) does that at any concurrency, and a
        tiny level gains nothing from waiting."""
        if self.ramp_up_s is not None:
            return float(self.ramp_up_s)
        ramp = min(MAX_AUTO_RAMP_S, AUTO_RAMP_PER_USER_S * max(0, concurrency - 1))
        return min(ramp, self.duration_s / 4) if self.duration_s is not None else ramp

    def level_rates(self) -> list[float | None]:
        """The request rates of the levels at one concurrency: the sweep's rates, the one rate, or closed loop."""
        return list(self.rates) if self.rates else [self.request_rate]

    def planned_seconds(self) -> float | None:
        """Rough seconds per level for progress estimates: the duration, the steady rule's minimum, or None."""
        if self.duration_s is not None:
            return self.duration_s
        return self.min_steady_s + MAX_AUTO_RAMP_S if self.steady_rule else None


class PlannedLevel(BaseModel):
    """One level of a run, in the order they run."""

    concurrency: int
    request_rate: float | None = None
    repeat: int = 0            # 0-based repeat index
    phase: Literal["search", "measure"] | None = None  # Blitz runs only (bench/blitz.py)


class BlitzSpec(_Strict):
    """A Blitz run (bench/blitz.py): search levels double the concurrency from `start_concurrency` until the
    steady-state output tok/s rises by less than `gain` (or `max_concurrency`), then `repeats` measured levels of
    `minutes` each run at the saturating concurrency. The score is their steady-state output tok/s."""

    minutes: float = Field(default=5.0, gt=0, le=120, description="minutes of each measured level")
    start_concurrency: int = Field(default=8, ge=1)
    max_concurrency: int = Field(default=1024, ge=1)
    gain: float = Field(default=0.10, gt=0, lt=10, description="a doubling that raises steady output tok/s by "
                        "less than this share ends the search")
    search_steady_s: float = Field(default=10.0, gt=0, description="seconds of steady state per search level")
    search_requests_per_user: int = Field(default=2, ge=1)
    repeats: int = Field(default=1, ge=1, le=5, description="measured levels at the chosen concurrency "
                         "(2 = the agreement check, on one server)")

    @model_validator(mode="after")
    def _range(self) -> "BlitzSpec":
        if self.start_concurrency > self.max_concurrency:
            raise ValueError(f"start concurrency {self.start_concurrency} is above the max {self.max_concurrency}")
        return self


class DeployedInstance(_Strict):
    """One engine instance of a run's deployment: its engine spec, a name unique in the run, and its share of the
    traffic (relative to the other instances; equal weights = round robin over replicas)."""

    name: str = Field(min_length=1, max_length=100)
    engine: EngineSpec
    weight: float = Field(default=1.0, ge=0)
    # a non-LLM service's traffic during each level (RunConfig.services only; bench/service_load.py)
    request: ServiceRequest | None = None


class RunConfig(_Strict):
    name: str = ""
    tags: list[str] = Field(default_factory=list)
    # The deployment: `instances` when the run deploys several (a recipe); else the one `engine`. With instances,
    # `engine` is the first instance's spec (what the history table and the pages show for the run).
    engine: EngineSpec
    instances: list[DeployedInstance] = Field(default_factory=list)
    recipe: str | None = Field(default=None, description="name of the recipe the deployment came from")
    # Non-LLM services Melt starts before the instances (a recipe's services with a command: engine kind "custom",
    # engines/custom.py); they get no LLM traffic (only their own `request`, if any) and are stopped after the
    # instances.
    services: list[DeployedInstance] = Field(default_factory=list)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    levels: list[int] = Field(min_length=1)
    gpu: str | None = Field(default=None, description="Catalog GPU id (sim GPU, or the detected/declared GPU)")
    gpu_count: int = Field(default=1, ge=1)
    price_per_gpu_hour: float | None = Field(default=None, ge=0)
    telemetry_hz: float = Field(default=4.0, ge=0, le=50,
                                description="GPU samples per second; 0 = no GPU sampling (engine /metrics still scraped)")
    client_procs: int | None = Field(default=None, ge=1, description="Load-generator processes; None = auto")
    repeat: int = Field(default=1, ge=1, le=100, description="Times each level runs (mean and 95% CI across them)")
    blitz: BlitzSpec | None = Field(default=None, description="A Blitz run: levels are chosen as it goes")
    slo_search: SloSearchSpec | None = Field(
        default=None, description="Instead of the fixed levels: bisect for the highest concurrency (or rate) meeting "
                                  "latency limits (bench/slo_search.py); each probe is a normal stored level")
    alerts: AlertThresholds = Field(default_factory=AlertThresholds,
                                    description="warning / critical thresholds, evaluated live and per level")
    metrics_port: int | None = Field(default=None, ge=0, le=65535,
                                     description="serve the run's live numbers for Prometheus on 127.0.0.1:PORT")
    gpu_metrics_url: str | None = Field(default=None, description="a DCGM exporter / Prometheus endpoint of the "
                                        "engine's host: its GPUs' telemetry (for a remote --engine openai)")

    @field_validator("instances")
    @classmethod
    def _llm_traffic_is_the_workload(cls, v: list[DeployedInstance]) -> list[DeployedInstance]:
        for d in v:
            if d.request is not None:
                raise ValueError(f"instance {d.name!r}: request is for services; an LLM instance gets the workload")
        return v

    @field_validator("services")
    @classmethod
    def _services_are_custom(cls, v: list[DeployedInstance]) -> list[DeployedInstance]:
        for d in v:
            if d.engine.kind != "custom" or not d.engine.engine_cmd:
                raise ValueError(f"service {d.name!r}: a service is a custom engine with a command "
                                 f"(kind custom and engine_cmd), got kind {d.engine.kind!r}")
        return v

    def deployment(self) -> list[DeployedInstance]:
        """Every instance the run deploys, in start order: a single-engine run is the deployment of one instance
        (the sweep has one code path for both)."""
        return list(self.instances) or [DeployedInstance(name="engine", engine=self.engine)]

    @property
    def simulated(self) -> bool:
        """Any simulated instance makes the run's numbers (partly) simulated: it is labelled so everywhere."""
        return any(d.engine.simulated for d in self.deployment())

    @model_validator(mode="before")
    @classmethod
    def _engine_from_instances(cls, data):
        if isinstance(data, dict) and data.get("instances") and not data.get("engine"):
            first = data["instances"][0]
            data = {**data, "engine": first["engine"] if isinstance(first, dict) else first.engine}
        return data

    @model_validator(mode="after")
    def _deployment_ok(self) -> "RunConfig":
        if self.instances:
            names = [d.name for d in self.instances]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"instance names must be unique: {', '.join(dup)} repeated")
            if not sum(d.weight for d in self.instances) > 0:
                raise ValueError("instance weights are all 0: give at least one instance a share of the traffic")
            if any(d.engine.kind == "openai" for d in self.instances) and len(self.instances) > 1:
                raise ValueError("a deployment of several instances launches them: 'openai' (a running server) "
                                 "is only for a single-engine run")
            if self.engine != self.instances[0].engine:
                raise ValueError("engine must be the first instance's spec when instances are given")
        if self.services:
            names = [d.name for d in self.deployment()] + [d.name for d in self.services]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"instance and service names must be unique: {', '.join(dup)} repeated")
        return self

    def planned_levels(self) -> list[PlannedLevel]:
        """Every level of the run in order: the whole sweep (concurrency x rate) once per repeat. Repeats go round
        the sweep rather than back to back, so a slow drift (clocks, temperature, a cache filling) spreads over all
        levels instead of biasing one level's repeats. A Blitz run plans only its first search level, and an SLO search
        only its first probe; the rest follow from the results (bench.blitz.next_step, bench.slo_search)."""
        if self.blitz is not None:
            return [PlannedLevel(concurrency=self.blitz.start_concurrency, phase="search")]
        if self.slo_search is not None:  # probes are chosen as the search goes: the first one is known
            first = self.slo_search.start
            if self.slo_search.mode == "rate":
                return [PlannedLevel(concurrency=self.slo_search.concurrency_cap, request_rate=first)]
            return [PlannedLevel(concurrency=int(first))]
        return [PlannedLevel(concurrency=c, request_rate=r, repeat=k) for k in range(self.repeat)
                for c in self.levels for r in self.workload.level_rates()]

    on_level_failure: Literal["continue", "stop"] = Field(
        default="stop", description="After a level fails (server stalled, load generator could not run it): go on "
                                    "with the next level, or end the run there")

    @model_validator(mode="after")
    def _search_alone(self) -> "RunConfig":
        if self.slo_search is not None and (self.workload.rates or self.workload.request_rate or self.repeat > 1):
            raise ValueError("the SLO search chooses its own levels: drop the request rate(s) and repeats (a search "
                             "over request rates is its mode 'rate')")
        return self

    @field_validator("levels")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x <= 0]
        if bad:
            raise ValueError(f"concurrency levels must be positive integers, got {bad}")
        return v


def stored_engine_command(config: dict) -> str | None:
    """The commands a stored run config would make this machine execute beyond Melt's own defaults (a custom engine
    command and/or extra engine arguments of the engine, of every instance of a deployment, and every service's
    command), shell-quoted for display, one line each; None when there is none.
    "Run again" shows it and asks first: a shared history file is data from someone else."""
    import shlex

    def line(engine: dict) -> str | None:
        cmd, extra = engine.get("engine_cmd") or [], engine.get("extra_args") or []
        if not cmd and not extra:
            return None
        head = shlex.join(map(str, cmd)) if cmd else f"<{engine.get('kind', 'engine')} as detected here>"
        return f"{head} ... {shlex.join(map(str, extra))}".rstrip() if extra else head

    config = config or {}
    instances, services = config.get("instances") or [], config.get("services") or []
    named = len(instances) > 1 or bool(services)
    # what the sweep launches: the instances when there are any (`engine` is then the first one's copy), else engine
    launched = ([(d.get("name", "?"), d.get("engine") or {}) for d in instances] if instances
                else [("engine", config.get("engine") or {})])
    parts = [(f"{n}: " if named else "", e) for n, e in launched]
    parts += [(f"{d.get('name', '?')}: ", d.get("engine") or {}) for d in services]
    seen, out = set(), []
    for who, engine in parts:
        text = line(engine)
        if text and (who, text) not in seen:
            seen.add((who, text))
            out.append(who + text)
    return "\n".join(out) or None
