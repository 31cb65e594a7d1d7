"""Run configuration: the pydantic models stored (as JSON) on every run row and passed to the worker."""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engines.spec import EngineSpec


def parse_levels(text: str) -> list[int]:
    """"10,100 400" -> [10, 100, 400]; ValueError (plain words, for CLI and UI alike) on anything else."""
    out = []
    for part in str(text).replace(";", ",").replace(" ", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = int(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a whole number (expected e.g. 10,100,400)") from None
        if v <= 0:
            raise ValueError(f"concurrency must be positive, got {v}")
        out.append(v)
    if not out:
        raise ValueError("give at least one concurrency level, e.g. 10,100")
    return out


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
    requests: int | None = Field(default=None, ge=1, description="Requests per level; default 2*C, at least 100")
    duration_s: float | None = Field(default=None, gt=0, description="Seconds per level instead of a request count")
    warmup_requests: int = Field(default=0, ge=0, description="Extra requests per level excluded from metrics")
    request_rate: float | None = Field(default=None, gt=0, description="Poisson arrivals (req/s) capped by concurrency")
    seed: int = 0
    slo: SLO = Field(default_factory=SLO)
    request_timeout_s: float = Field(default=600, gt=0)

    @model_validator(mode="after")
    def _one_stop(self) -> "WorkloadSpec":
        if self.requests is not None and self.duration_s is not None:
            raise ValueError("give either requests per level or duration per level, not both")
        if self.endpoint == "chat" and self.prompt_format == "token-ids":
            raise ValueError("the chat endpoint sends text: use prompt format 'text' with it")
        return self

    def requests_for(self, concurrency: int) -> int | None:
        if self.duration_s is not None:
            return None
        return self.requests if self.requests is not None else max(2 * concurrency, 100)


class RunConfig(_Strict):
    name: str = ""
    tags: list[str] = Field(default_factory=list)
    engine: EngineSpec
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    levels: list[int] = Field(min_length=1)
    gpu: str | None = Field(default=None, description="Catalog GPU id (sim GPU, or the detected/declared GPU)")
    gpu_count: int = Field(default=1, ge=1)
    price_per_gpu_hour: float | None = Field(default=None, ge=0)
    telemetry_hz: float = Field(default=4.0, ge=0, le=50,
                                description="GPU samples per second; 0 = no GPU sampling (engine /metrics still scraped)")
    client_procs: int | None = Field(default=None, ge=1, description="Load-generator processes; None = auto")

    @field_validator("levels")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x <= 0]
        if bad:
            raise ValueError(f"concurrency levels must be positive integers, got {bad}")
        return v


def stored_engine_command(config: dict) -> str | None:
    """The command a stored run config would make this machine execute beyond Melt's own defaults (a custom
    engine command and/or extra engine arguments), shell-quoted for display; None when there is none.
    "Run again" shows it and asks first: a shared history file is data from someone else."""
    import shlex

    engine = (config or {}).get("engine") or {}
    cmd, extra = engine.get("engine_cmd") or [], engine.get("extra_args") or []
    if not cmd and not extra:
        return None
    head = shlex.join(map(str, cmd)) if cmd else f"<{engine.get('kind', 'engine')} as detected here>"
    return f"{head} ... {shlex.join(map(str, extra))}".rstrip()
