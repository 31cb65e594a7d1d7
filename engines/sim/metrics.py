"""Prometheus text exposition for the simulator, with vLLM V1's metric names so the same scraper reads both.

Histogram buckets are vLLM's. Every vLLM sample carries `engine="0"` and `model_name=...` labels. Times observed
here are MODELLED times (virtual clock), which is what a real engine would report; the simulator's own CPU lag is
exposed separately as melt:sim_* gauges.
"""
from __future__ import annotations

from bisect import bisect_left

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)


class Histogram:
    __slots__ = ("name", "help", "bounds", "counts", "sum", "count")

    def __init__(self, name: str, help_: str, bounds: tuple[float, ...]):
        self.name, self.help, self.bounds = name, help_, bounds
        self.counts = [0] * (len(bounds) + 1)  # last = +Inf overflow
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = less than or equal)
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n
        self.count += n

    def render(self, labels: str) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cum = 0
        for bound, c in zip(self.bounds, self.counts):
            cum += c
            out.append(f'{self.name}_bucket{{{labels},le="{bound}"}} {cum}')
        out.append(f'{self.name}_bucket{{{labels},le="+Inf"}} {self.count}')
        out.append(f"{self.name}_sum{{{labels}}} {self.sum!r}")
        out.append(f"{self.name}_count{{{labels}}} {self.count}")
        return out


def label_str(**labels: str) -> str:
    def esc(v: str) -> str:
        return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{k}="{esc(v)}"' for k, v in labels.items())


def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> list[str]:
    """One metric family. `samples` are (label string, value). For counters `name` is the family name and the
    sample name gets the `_total` suffix, as prometheus_client writes it."""
    sample_name = name + "_total" if kind == "counter" else name
    out = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    out += [f"{sample_name}{{{labels}}} {float(value)!r}" for labels, value in samples]
    return out
