"""Run configuration: the pydantic models stored (as JSON) on every run row and passed to the worker."""
from __future__ import annotations

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


class LengthRange(_Strict):
    """Token length: fixed (min == max) or uniform in [min, max]. Parsed from "128" or "128:1024"."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _order(self) -> "LengthRange":
        if self.min > self.max:
            raise ValueError(f"length range {self.min}:{self.max} has min > max")
        return self

    @classmethod
    def parse(cls, text: str) -> "LengthRange":
        parts = str(text).strip().split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"bad length {text!r}: expected N or MIN:MAX with whole numbers") from None
        if len(nums) == 1:
            nums = nums * 2
        if len(nums) != 2:
            raise ValueError(f"bad length {text!r}: expected N or MIN:MAX")
        if nums[0] < 1:
            raise ValueError(f"bad length {text!r}: lengths must be >= 1")
        return cls(min=nums[0], max=nums[1])

    def __str__(self) -> str:
        return str(self.min) if self.min == self.max else f"{self.min}:{self.max}"


class SLO(_Strict):
    """Goodput thresholds (milliseconds); a request is 'good' when it meets every one that is set."""

    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)


class WorkloadSpec(_Strict):
    input_len: LengthRange = Field(default_factory=lambda: LengthRange(min=512, max=512))
    output_len: LengthRange = Field(default_factory=lambda: LengthRange(min=128, max=128))
    endpoint: str = Field(default="completions", pattern="^(completions|chat)$")
    requests: int | None = Field(default=None, ge=1, description="Requests per level; default 2*C, at least 100")
    duration_s: float | None = Field(default=None, gt=0, description="Seconds per level instead of a request count")
    warmup_requests: int = Field(default=0, ge=0, description="Extra requests per level excluded from metrics")
    request_rate: float | None = Field(default=None, gt=0, description="Poisson arrivals (req/s) capped by concurrency")
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
    on_level_failure: Literal["continue", "stop"] = Field(
        default="stop", description="After a level fails (server stalled, load generator could not run it): go on "
                                    "with the next level, or end the run there")

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
