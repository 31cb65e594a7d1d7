"""The typed engine spec that crosses module lines (bench -> engines), and the launch plan an adapter returns.

Every adapter module (engines/vllm.py, engines/sglang.py, engines/trtllm.py, engines/sim/adapter.py) exposes a
pure `build_plan(spec, host, port, workdir) -> LaunchPlan`: no I/O besides writing files under workdir, testable
without a GPU. The supervisor (engines/supervisor.py) runs plans.
"""
from __future__ import annotations

import re

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EngineKind = Literal["sim", "openai", "vllm", "sglang", "trtllm", "llamacpp", "custom"]


class EngineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: EngineKind = "sim"
    model: str = Field(description="Catalog id, HF id or local path; the served model name")
    served_model_name: str | None = None
    # sim only: which catalog GPU the simulator emulates.
    sim_gpu: str | None = None
    # sim only: API-server host profile, an id in assets/hosts/ or a YAML path (None: the sim's default).
    sim_host_profile: str | None = None
    # openai only: an already running server; nothing is launched.
    base_url: str | None = None
    api_key: str | None = Field(default=None, description="Sent as Bearer token; never stored (redacted)")
    # real engines
    engine_cmd: list[str] | None = Field(default=None, description="argv prefix that starts the engine, no shell")
    dummy_weights: bool = False
    gpus: list[int] | None = None
    tp: int = Field(default=1, ge=1)
    dp: int = Field(default=1, ge=1)
    mem_fraction: float | None = Field(default=None, gt=0, le=1)
    max_seqs: int | None = Field(default=None, ge=1)
    max_model_len: int | None = Field(default=None, ge=16)
    dtype: str | None = None
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    extra_args: list[str] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535, description="None = pick a free port")
    startup_timeout_s: float = Field(default=900, gt=0)
    # custom only (a deployment's non-LLM service, engines/custom.py): ready when GET health_path answers 200
    health_path: str = Field(default="/health", pattern=r"^/")

    @field_validator("base_url")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @field_validator("model", "served_model_name")
    @classmethod
    def _not_a_flag(cls, v: str | None) -> str | None:
        # TRT-LLM takes the model as a positional argument: a name starting with "-" would be read as a flag
        if v is not None and (not v.strip() or v.startswith("-")):
            raise ValueError(f"model name {v!r} must be non-empty and must not start with '-'")
        return v

    @property
    def simulated(self) -> bool:
        return self.kind == "sim"

    @property
    def name_for_requests(self) -> str:
        return self.served_model_name or self.model


# Whole words of a name that say it carries a secret. Words, not substrings: "TOKEN" must not catch
# --max-num-batched-tokens or --tokenizer (their values are performance settings a user needs to see and re-run).
SECRET_WORDS = frozenset({"TOKEN", "KEY", "APIKEY", "SECRET", "PASS", "PASSWORD", "PASSWD", "PWD", "CREDENTIAL",
                          "CREDENTIALS", "AUTH", "COOKIE"})
REDACTED = "<redacted>"


def is_secret_name(name: str) -> bool:
    """An env variable or flag name that carries a secret (HF_TOKEN, OPENAI_API_KEY, --api-key, DB_PASS, ...)."""
    words = re.split(r"[-_.]+", name.upper().strip("-"))
    return any(w in SECRET_WORDS for w in words)


def redact_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in env.items()}


def redact_argv(argv: list[str]) -> list[str]:
    """argv for logs, the database and the UI: the value of a secret-named flag (`--api-key X`, `--api-key=X`) or of
    a secret-named `NAME=VALUE` word (`env HF_TOKEN=...`) replaced. A secret-named flag followed by another flag is a
    switch: nothing after it is hidden. The real argv is only ever handed to the process."""
    out: list[str] = []
    hide_next = False
    for a in argv:
        if hide_next and not a.startswith("-"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        name, eq, _ = a.partition("=")
        if a.startswith("-"):
            if is_secret_name(name.lstrip("-")):
                if eq:
                    out.append(f"{name}={REDACTED}")
                    continue
                hide_next = True
        elif eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and is_secret_name(name):
            out.append(f"{name}={REDACTED}")
            continue
        out.append(a)
    return out


class LaunchPlan(BaseModel):
    """What the supervisor needs to start one engine server: argv (never a shell string) and env additions."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    host: str = "127.0.0.1"
    port: int
    health_path: str = "/health"
    served_model_name: str
    simulated: bool = False
    # Regexes over log lines -> startup phase label shown in the UI ("loading weights", "capturing CUDA graphs").
    phase_patterns: list[tuple[str, str]] = Field(default_factory=list)
    # Where streamed token counts come from. "server": the stream's usage (stream_options.include_usage), the rule.
    # "finish-length": a server whose streams carry no usage (llama-cpp-python's): a stream that ends with
    # finish_reason "length" produced exactly max_tokens (held there with min_tokens), prompt tokens are the exact
    # length Melt made the prompt with (same tokenizer as the server's); levels say so (bench/loadgen.py).
    stream_usage: Literal["server", "finish-length"] = "server"
    metrics: bool = True  # the server has a Prometheus /metrics endpoint to scrape
    # Ready when: "completion" = health 200 and a real 1-token completion (an LLM server); "health" = health 200
    # alone (a non-LLM service of a deployment: engines/custom.py)
    probe: Literal["completion", "health"] = "completion"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
