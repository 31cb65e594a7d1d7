"""Per-instance and whole-box figures of a deployment's levels, for the CLI tables and the pages (pure, no I/O).

A level of a deployment of several instances keeps the box's figures at the top of its summary and each instance's
in summary["instances"] (bench.metrics.per_instance: rates over the level's wall time, so the instances add up to
the box). `breakdown` turns summaries into rows: one per instance and one "whole box" per level, the box's row with
its $ per 1M output tokens (all the box's GPUs at the run's price over the box's output throughput; one instance's
share of a shared GPU has no price of its own, so the instance rows carry none). `service_rows`: the non-LLM
services' own traffic per level (summary["services"]), and with a price the whole box's $ per 1,000 ok requests of
each service (SERVICE_COST_NOTE says what that figure is and is not). `asked_rates`: the rate each service was asked
for, from the stored config.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.cost import money_digits, usd_per_million_tokens, usd_per_thousand_requests

BOX = "whole box"
SERVICE_USD = "box $/1K ok req"
# What SERVICE_USD means, said wherever it is shown (Cost page, `show`, the HTML report, docs/ARCHITECTURE.md).
SERVICE_COST_NOTE = ("$ per 1,000 ok requests of a service = the whole box's $/hour (every GPU at the price) / 3,600 "
                     "/ that service's ok req/s x 1,000: what the service's measured rate would cost if it alone "
                     "paid for the box it shared with the LLMs. It charges the same box-seconds as $ per 1M LLM "
                     "tokens, so the two overlap and do not add up. Only ok requests count: failed ones (err) make "
                     "each ok request dearer; a level without an ok request has no figure.")


def _p(summary: Mapping, key: str, stat: str = "p50"):
    return (summary.get(key) or {}).get(stat)


def is_mix(summaries: Sequence[Mapping]) -> bool:
    """Any level with per-instance figures (a deployment of several instances)."""
    return any((s or {}).get("instances") for s in summaries)


def breakdown(summaries: Sequence[Mapping], gpu_count: int = 1, price_per_gpu_hour: float | None = None) -> list[dict]:
    """Rows (dicts of plain values) per level: each instance, then the whole box."""
    rows: list[dict] = []
    for s in summaries:
        s = s or {}
        insts = s.get("instances") or {}
        if not insts:
            continue
        head = {"concurrency": s.get("concurrency"), "rate": s.get("request_rate"),
                "repeat": (s.get("repeat") or 0) + 1}
        for name, i in insts.items():
            rows.append({**head, "instance": name, "model": i.get("model"),
                         "weight %": 100 * (i.get("weight_share") or 0),
                         "requests %": 100 * (i.get("request_share") or 0), "sent": i.get("n_sent"),
                         "ok": i.get("n_ok"), "err": i.get("n_err"), "out tok/s": i.get("output_tok_s"),
                         "req/s": i.get("req_s"), "TTFT p50 ms": _p(i, "ttft_ms"),
                         "TTFT p99 ms": _p(i, "ttft_ms", "p99"),
                         "TPOT p50 ms": _p(i, "tpot_ms"), "E2E p50 ms": _p(i, "e2e_ms"), "$/1M out tok": None})
        usd = (usd_per_million_tokens(s.get("output_tok_s"), gpu_count, price_per_gpu_hour)
               if price_per_gpu_hour is not None else None)
        rows.append({**head, "instance": BOX, "model": "", "weight %": 100.0, "requests %": 100.0,
                     "sent": s.get("n_sent"), "ok": s.get("n_ok"), "err": s.get("n_err"),
                     "out tok/s": s.get("output_tok_s"), "req/s": s.get("req_s"), "TTFT p50 ms": _p(s, "ttft_ms"),
                     "TTFT p99 ms": _p(s, "ttft_ms", "p99"), "TPOT p50 ms": _p(s, "tpot_ms"),
                     "E2E p50 ms": _p(s, "e2e_ms"), "$/1M out tok": usd})
    return rows


def service_rows(summaries: Sequence[Mapping], gpu_count: int = 1,
                 price_per_gpu_hour: float | None = None) -> list[dict]:
    """Rows per level and non-LLM service (summary["services"], bench/service_load.py): what each service was sent
    beside the level's LLM traffic and how it answered. No tokens: a service's answers are not LLM output. "ok req/s"
    is ok requests per second over the level's window. With a price, SERVICE_USD: the whole box's $ per 1,000 ok
    requests of that service (SERVICE_COST_NOTE; None where none was ok)."""
    rows: list[dict] = []
    for s in summaries:
        s = s or {}
        for sv in s.get("services") or []:
            lat = sv.get("latency_ms") or {}
            top = sv.get("error") or next(iter(sv.get("errors") or {}), "")   # the load's own failure first
            row = {"concurrency": s.get("concurrency"), "rate": s.get("request_rate"),
                   "repeat": (s.get("repeat") or 0) + 1, "service": sv.get("name"), "sent": sv.get("sent"),
                   "ok": sv.get("ok"), "err": sv.get("err"), "ok req/s": sv.get("req_s"),
                   "latency p50 ms": lat.get("p50"), "latency p99 ms": lat.get("p99")}
            if price_per_gpu_hour is not None:
                row[SERVICE_USD] = usd_per_thousand_requests(sv.get("req_s"), max(1, int(gpu_count or 1)),
                                                             price_per_gpu_hour)
            rows.append({**row, "top error": top})
    return rows


def has_services(summaries: Sequence[Mapping]) -> bool:
    """Any level with the services' own traffic (summary["services"])."""
    return any((s or {}).get("services") for s in summaries)


def asked_rates(config: Mapping | None) -> dict[str, float]:
    """{service name: the req/s its recipe `request` asked for} from a stored run config (RunConfig.services);
    services without a request are left out."""
    services = config.get("services") if isinstance(config, Mapping) else None
    out: dict[str, float] = {}
    for sv in services or []:
        if not isinstance(sv, Mapping):
            continue
        rate = (sv.get("request") or {}).get("rate")
        if sv.get("name") and rate is not None:
            out[str(sv["name"])] = float(rate)
    return out


def readable(rows: Sequence[Mapping]) -> list[dict[str, str]]:
    """The same rows as display strings ("-" for missing)."""
    def f(k: str, v) -> str:
        if v is None or v == "":
            return "-" if v is None else ""
        if isinstance(v, float) and k == SERVICE_USD:
            return money_digits(v)
        if isinstance(v, float):
            nd = (2 if k in ("req/s", "ok req/s", "asked req/s", "TPOT p50 ms", "$/1M out tok") else 1)
            return f"{v:,.{nd}f}"
        return f"{v:,}" if isinstance(v, int) else str(v)
    return [{k: f(k, v) for k, v in r.items()} for r in rows]


def instance_rows(instances: Sequence) -> list[dict[str, str]]:
    """The instances of a run (storage.queries.InstanceRow or anything alike) as display rows: name, engine, model,
    state / startup phase, startup seconds, URL, traffic weight."""
    out = []
    for i in instances:
        state = i.state if i.ready_at is not None or i.stopped_at is not None else (i.phase or i.state)
        out.append({"instance": i.name or "engine", "engine": i.kind, "model": i.model, "state": state,
                    "startup s": "-" if i.startup_s is None else f"{i.startup_s:.1f}", "URL": i.base_url or "-",
                    "weight": "-" if i.weight is None else f"{i.weight:g}", "error": (i.error or "")[:200]})
    return out
