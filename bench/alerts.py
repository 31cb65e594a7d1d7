"""Alerts: warning / critical thresholds on a run's numbers, evaluated live (bench/live_monitor.py, once a second
over the last seconds of the running level) and per finished level (stored as summary["alerts"]).

Defaults are those of the deployment report in the product's source material: TTFT p99 > 100 / 200 ms, E2E p99 >
10 / 15 s, GPU utilisation < 70 % or > 95 %, GPU memory > 90 %, engine queue depth (vLLM's num_requests_waiting)
> 50 / 100, error rate > 1 % / 5 %, and an output tok/s floor that is off until a user sets one (no floor fits every
model and GPU). Every threshold is editable: `AlertThresholds` is a pydantic model (CLI `--alert RULE=WARN,CRIT`,
`--alerts-file FILE.yaml`, the Launch form) stored in RunConfig.alerts.

Pure: values in (a dict of floats), alerts out. `level_values` turns a level summary + the telemetry and engine
metric rows of its window into those values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Threshold(BaseModel):
    """Fires `warning` / `critical` when the value is above (or, direction below, under) the limit; None = off."""

    model_config = ConfigDict(extra="forbid")
    warning: float | None = None
    critical: float | None = None
    direction: Literal["above", "below"] = "above"

    @model_validator(mode="after")
    def _order(self) -> "Threshold":
        w, c = self.warning, self.critical
        if w is not None and c is not None and (c < w if self.direction == "above" else c > w):
            worse = "above" if self.direction == "above" else "below"
            raise ValueError(f"the critical limit ({c:g}) must be {worse} or equal to the warning limit ({w:g})")
        return self

    def severity(self, value: float | None) -> tuple[str, float] | None:
        if value is None:
            return None
        crossed = (lambda lim: value > lim) if self.direction == "above" else (lambda lim: value < lim)
        if self.critical is not None and crossed(self.critical):
            return "critical", self.critical
        if self.warning is not None and crossed(self.warning):
            return "warning", self.warning
        return None


def _above(w, c=None):
    return Field(default_factory=lambda: Threshold(warning=w, critical=c))


def _below(w, c=None):
    return Field(default_factory=lambda: Threshold(warning=w, critical=c, direction="below"))


# rule -> (label, unit) for messages and tables
RULES: dict[str, tuple[str, str]] = {
    "ttft_p99_ms": ("TTFT p99", "ms"),
    "e2e_p99_ms": ("E2E p99", "ms"),
    "output_tok_s": ("output tok/s", "tok/s"),
    "gpu_util_low_pct": ("GPU utilisation", "%"),
    "gpu_util_high_pct": ("GPU utilisation", "%"),
    "gpu_mem_pct": ("GPU memory", "%"),
    "queue_depth": ("engine queue (waiting requests)", ""),
    "error_rate_pct": ("error rate", "%"),
}
# rule -> the value it reads (two rules read GPU utilisation: the lowest GPU for "low", the busiest for "high")
VALUE_OF = {"gpu_util_low_pct": "gpu_util_min_pct", "gpu_util_high_pct": "gpu_util_max_pct"}


class AlertThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttft_p99_ms: Threshold = _above(100.0, 200.0)
    e2e_p99_ms: Threshold = _above(10_000.0, 15_000.0)
    output_tok_s: Threshold = _below(None, None)
    gpu_util_low_pct: Threshold = _below(70.0)
    gpu_util_high_pct: Threshold = _above(95.0)
    gpu_mem_pct: Threshold = _above(90.0)
    queue_depth: Threshold = _above(50.0, 100.0)
    error_rate_pct: Threshold = _above(1.0, 5.0)

    def with_override(self, text: str) -> "AlertThresholds":
        """'RULE=WARN,CRIT' (either may be empty or 'off'): a copy with that rule's limits replaced."""
        name, sep, vals = text.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in RULES:
            raise ValueError(f"alert {text!r}: expected RULE=WARN,CRIT with RULE one of {', '.join(RULES)}")
        parts = [p.strip() for p in vals.split(",")]
        if len(parts) > 2:
            raise ValueError(f"alert {text!r}: give at most a warning and a critical limit")
        parts += [""] * (2 - len(parts))
        try:
            w, c = (None if p in ("", "off", "none") else float(p) for p in parts)
        except ValueError:
            raise ValueError(f"alert {text!r}: limits must be numbers (or empty / off)") from None
        rule = getattr(self, name)
        return self.model_copy(update={name: Threshold(warning=w, critical=c, direction=rule.direction)})


def load_thresholds(path: str | Path) -> AlertThresholds:
    """A YAML file of {rule: {warning: X, critical: Y}} over the defaults (rules not named keep theirs)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of alert rules")
    base = AlertThresholds().model_dump()
    for name, v in data.items():
        if name not in RULES:
            raise ValueError(f"{path}: unknown alert rule {name!r} (known: {', '.join(RULES)})")
        if not isinstance(v, dict):
            raise ValueError(f"{path}: {name} must be a mapping with warning/critical")
        base[name] = {**base[name], **v}
    return AlertThresholds.model_validate(base)


def evaluate(values: dict[str, float | None], th: AlertThresholds) -> list[dict]:
    """The alerts that fire for `values` (keys as AlertThresholds' rules, GPU util as gpu_util_min/max_pct), worst
    first. A missing value (no GPU telemetry, no request finished yet) raises nothing."""
    out = []
    for rule, (label, unit) in RULES.items():
        value = values.get(VALUE_OF.get(rule, rule))
        hit = getattr(th, rule).severity(value)
        if hit is None:
            continue
        sev, limit = hit
        rel = ">" if getattr(th, rule).direction == "above" else "<"
        u = f" {unit}" if unit and unit != "%" else unit
        shown = f"{value:,.1f}" if unit == "%" else f"{value:,.4g}"
        out.append({"rule": rule, "severity": sev, "value": value, "limit": limit,
                    "message": f"{label} {shown}{u} {rel} {limit:,.4g}{u}"})
    out.sort(key=lambda a: a["severity"] != "critical")
    return out


def _pct(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) else None


def gpu_values(rows: list[dict]) -> dict[str, float | None]:
    """From telemetry rows (one window): the mean utilisation of the least and the most busy GPU, and the peak share
    of memory used over all GPUs."""
    util: dict[Any, list[float]] = {}
    mem = []
    for r in rows:
        key = r.get("gpu_uuid") or r.get("gpu_index")
        if (u := _pct(r.get("util_gpu"))) is not None:
            util.setdefault(key, []).append(u)
        used, total = _pct(r.get("mem_used_mb")), _pct(r.get("mem_total_mb"))
        if used is not None and total:
            mem.append(100.0 * used / total)
    means = [sum(v) / len(v) for v in util.values() if v]
    return {"gpu_util_min_pct": min(means) if means else None, "gpu_util_max_pct": max(means) if means else None,
            "gpu_mem_pct": max(mem) if mem else None}


def level_values(summary: dict, telemetry_rows: list[dict], engine_rows: list[dict]) -> dict[str, float | None]:
    """The values of one finished level: its summary's p99s, output tok/s and error rate, GPU numbers of the
    telemetry inside its window, and the engine's peak queue depth in that window."""
    sent = summary.get("n_sent") or 0
    waiting = [w for w in (_pct(r.get("waiting")) for r in engine_rows) if w is not None]
    return {
        "ttft_p99_ms": (summary.get("ttft_ms") or {}).get("p99"),
        "e2e_p99_ms": (summary.get("e2e_ms") or {}).get("p99"),
        "output_tok_s": summary.get("output_tok_s"),
        "error_rate_pct": 100.0 * (summary.get("n_err") or 0) / sent if sent else None,
        "queue_depth": max(waiting) if waiting else None,
        **gpu_values(telemetry_rows),
    }


def in_window(rows: list[dict], start_ns: int | None, end_ns: int | None) -> list[dict]:
    if start_ns is None or end_ns is None:
        return []
    return [r for r in rows if start_ns <= (r.get("t_ns") or 0) <= end_ns]


def summary_line(alerts: list[dict]) -> str:
    if not alerts:
        return "no alerts"
    return "; ".join(f"{a['severity'].upper()}: {a['message']}" for a in alerts)


def level_alert_rows(levels: list[tuple[int, int | None, dict | None]]) -> list[dict]:
    """Table rows (level #, concurrency, severity, alert) from (index, concurrency, summary) of finished levels;
    worst first within each level."""
    rows = []
    for idx, conc, summary in levels:
        for a in (summary or {}).get("alerts") or []:
            rows.append({"level": idx + 1, "concurrency": conc, "severity": a.get("severity", ""),
                         "alert": a.get("message", "")})
    return rows


def alert_counts(rows: list[dict]) -> str:
    """'2 critical, 1 warning' (or '' when nothing fired)."""
    n_crit = sum(1 for r in rows if r.get("severity") == "critical")
    n_warn = sum(1 for r in rows if r.get("severity") == "warning")
    return ", ".join(p for p in (f"{n_crit} critical" if n_crit else "", f"{n_warn} warning" if n_warn else "") if p)
