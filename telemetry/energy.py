"""Energy and power accounting over a time window (a load level), from recorded telemetry rows.

Energy per GPU comes from the driver's cumulative energy counter when there are readings of it (difference of the
counter, linearly interpolated to the window edges; NvmlSource reads it ~1 Hz because each read costs ~4 ms CPU, and
any edge piece beyond the first/last reading is filled with ∫P dt): that is what the board measured. Without it,
energy = ∫ power dt by the trapezoid rule over `power_w` (instantaneous where the driver offers it). Both are returned
so they can be compared (on an H100 under a matmul loop they agreed within 0.3%).
`avg_power_w` is energy / covered time, so it is consistent with `energy_j`; `peak_power_w` is the highest reading
of a sample, instantaneous (`power_w`) or averaged (`power_avg_w`), whichever is higher.

Throttling is time-weighted: each sample's clocks-event reasons count for the time until the next sample.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

# NVML clocks-event ("throttle") reason bits, nvml.h nvmlClocksEventReason*.
THROTTLE_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}
THROTTLE_WORDS: dict[str, str] = {
    "gpu_idle": "GPU idle",
    "applications_clocks_setting": "application clocks setting",
    "sw_power_cap": "software power cap (at its power limit)",
    "hw_slowdown": "hardware slowdown",
    "sync_boost": "sync boost (held to a slower GPU of its group)",
    "sw_thermal_slowdown": "software thermal slowdown",
    "hw_thermal_slowdown": "hardware thermal slowdown",
    "hw_power_brake_slowdown": "hardware power brake (external power signal)",
    "display_clock_setting": "display clock setting",
    "board_limit": "board limit",
    "reliability": "reliability limit",
}
# Reasons that mean "clocks held below what the work asked for". Idle, a user's clock setting and the display clock
# are not the hardware holding the work back.
LIMITING_MASK = sum(b for b, n in THROTTLE_BITS.items()
                    if n not in ("gpu_idle", "applications_clocks_setting", "display_clock_setting"))


def decode_throttle(mask: int | None) -> list[str]:
    """Bitmask -> reason names, e.g. 0x24 -> ["sw_power_cap", "sw_thermal_slowdown"]. Unknown bits -> "bit_0x..."."""
    if not mask:
        return []
    out = [n for b, n in THROTTLE_BITS.items() if mask & b]
    unknown = mask & ~sum(THROTTLE_BITS)
    b = 1
    while unknown:
        if unknown & b:
            out.append(f"bit_{b:#x}")
            unknown &= ~b
        b <<= 1
    return out


def _interp(t0: int, v0: float, t1: int, v1: float, t: int) -> float:
    if t1 == t0:
        return v0
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def _clip_series(points: list[tuple[int, float]], start_ns: int, end_ns: int) -> list[tuple[int, float]]:
    """Points inside [start, end], plus values linearly interpolated at the edges where a neighbour outside exists.
    Without a neighbour the series simply starts/ends at its first/last point (coverage < window)."""
    if not points:
        return []
    inside = [(t, v) for t, v in points if start_ns <= t <= end_ns]
    before = [(t, v) for t, v in points if t < start_ns]
    after = [(t, v) for t, v in points if t > end_ns]
    out = list(inside)
    if before:
        nxt = inside[0] if inside else (after[0] if after else None)
        if nxt is not None:
            out.insert(0, (start_ns, _interp(*before[-1], *nxt, start_ns)))
    if after:
        prv = out[-1] if out else (before[-1] if before else None)
        if prv is not None:
            out.append((end_ns, _interp(*prv, *after[0], end_ns)))
    return out


def _trapezoid_j(points: list[tuple[int, float]]) -> float:
    return sum((t1 - t0) / 1e9 * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(points, points[1:]))


def _peak(r: dict) -> float | None:
    """A sample's best lower bound on the power peak: the higher of its instantaneous and averaged readings (the true
    peak is at least the average; 4 Hz instantaneous samples can all fall in gaps between bursts)."""
    vals = [v for v in (r.get("power_w"), r.get("power_avg_w")) if v is not None]
    return max(vals) if vals else None


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _r(x: float | None, nd: int = 3) -> float | None:
    return round(x, nd) if x is not None else None


def _gpu_summary(rows: list[dict], start_ns: int, end_ns: int) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: r["t_ns"])
    win = [r for r in rows if start_ns <= r["t_ns"] <= end_ns]

    def series(key: str) -> list[tuple[int, float]]:
        return [(r["t_ns"], float(r[key])) for r in rows if r.get(key) is not None]

    p_inst = _clip_series(series("power_w"), start_ns, end_ns)
    p_avg = _clip_series(series("power_avg_w"), start_ns, end_ns)
    e_series = series("energy_j")
    integ = _trapezoid_j(p_inst) if len(p_inst) >= 2 else None
    integ_avg = _trapezoid_j(p_avg) if len(p_avg) >= 2 else None

    counter = None
    e_pts = _clip_series(e_series, start_ns, end_ns)
    # The counter may be read less often than power (it is expensive on NVML) and may not reach the window edges:
    # counter difference over [first, last] reading, plus ∫P dt for the edge pieces the power samples cover beyond
    # it. Not used if it ever went backwards (a driver reload resets it).
    if len(e_pts) >= 2 and all(b[1] >= a[1] for a, b in zip(e_pts, e_pts[1:])):
        counter = e_pts[-1][1] - e_pts[0][1]
        c0, c1 = e_pts[0][0], e_pts[-1][0]
        if len(p_inst) >= 2:
            counter += _trapezoid_j(_clip_series(p_inst, p_inst[0][0], c0)) if p_inst[0][0] < c0 else 0.0
            counter += _trapezoid_j(_clip_series(p_inst, c1, p_inst[-1][0])) if p_inst[-1][0] > c1 else 0.0
            c0, c1 = min(c0, p_inst[0][0]), max(c1, p_inst[-1][0])
    if counter is not None:
        energy, source, cov = counter, "counter", (c1 - c0) / 1e9
    elif integ is not None:
        energy, source, cov = integ, "integrated", (p_inst[-1][0] - p_inst[0][0]) / 1e9
    else:
        energy, source, cov = None, None, 0.0

    # Time-weighted throttle shares over the window: each sample holds until the next one (or the window end).
    reason_s: dict[str, float] = defaultdict(float)
    limited_s = 0.0
    known_s = 0.0
    tr = [(r["t_ns"], r["throttle_reasons"]) for r in rows if r.get("throttle_reasons") is not None]
    for i, (t, mask) in enumerate(tr):
        t_next = tr[i + 1][0] if i + 1 < len(tr) else end_ns
        a, b = max(t, start_ns), min(t_next, end_ns)
        if b <= a:
            continue
        dt = (b - a) / 1e9
        known_s += dt
        for name in decode_throttle(mask):
            reason_s[name] += dt
        if mask & LIMITING_MASK:
            limited_s += dt

    power_vals = [r["power_w"] for r in win if r.get("power_w") is not None]
    peaks = [p for p in (_peak(r) for r in win) if p is not None]
    util = [r["util_gpu"] for r in win if r.get("util_gpu") is not None]
    clocks = [r["sm_clock_mhz"] for r in win if r.get("sm_clock_mhz") is not None]
    first = rows[0] if rows else {}
    return {
        "gpu_index": first.get("gpu_index"),
        "gpu_uuid": first.get("gpu_uuid"),
        "n_samples": len(win),
        "covered_s": _r(cov),
        "energy_j": _r(energy),
        "energy_source": source,
        "energy_counter_j": _r(counter),
        "energy_integrated_j": _r(integ),           # ∫ power_w dt
        "energy_integrated_avg_j": _r(integ_avg),   # ∫ power_avg_w dt
        "avg_power_w": _r(energy / cov) if energy is not None and cov > 0 else _r(_mean(power_vals)),
        "peak_power_w": _r(max(peaks)) if peaks else None,
        "avg_util_gpu": _r(_mean(util), 1),
        "avg_sm_active": _r(_mean([r["sm_active"] for r in win if r.get("sm_active") is not None]), 1),
        "avg_tensor_active": _r(_mean([r["tensor_active"] for r in win if r.get("tensor_active") is not None]), 1),
        "avg_dram_bw_util": _r(_mean([r["dram_bw_util"] for r in win if r.get("dram_bw_util") is not None]), 1),
        "peak_mem_used_mb": _r(max([r["mem_used_mb"] for r in win if r.get("mem_used_mb") is not None], default=None), 0),
        "peak_temp_gpu_c": max([r["temp_gpu_c"] for r in win if r.get("temp_gpu_c") is not None], default=None),
        "peak_temp_mem_c": max([r["temp_mem_c"] for r in win if r.get("temp_mem_c") is not None], default=None),
        "avg_sm_clock_mhz": _r(_mean(clocks), 0),
        "min_sm_clock_mhz": min(clocks) if clocks else None,
        "throttled_pct": _r(100 * limited_s / known_s, 1) if known_s > 0 else None,
        "throttle_reasons_pct": {k: _r(100 * v / known_s, 1) for k, v in sorted(reason_s.items())} if known_s else {},
    }


def summarize_window(samples: list[dict], start_ns: int, end_ns: int, output_tokens: int | None) -> dict:
    """Per GPU and total over [start_ns, end_ns]. `samples`: TelemetrySample-like dicts; pass a little margin
    on both sides of the window so the energy counter and power can be interpolated at its edges.

    Returns {window_s, simulated, n_samples, energy_source, gpus: [per GPU], total: {avg_power_w, peak_power_w,
    energy_j, joules_per_output_token, ...}}. Everything None where the data are missing (e.g. no telemetry)."""
    if end_ns < start_ns:
        start_ns, end_ns = end_ns, start_ns
    by_gpu: dict[Any, list[dict]] = defaultdict(list)
    for r in samples:
        if r.get("t_ns") is None:
            continue
        by_gpu[r.get("gpu_index") if r.get("gpu_index") is not None else r.get("gpu_uuid")].append(r)
    gpus = [_gpu_summary(rows, start_ns, end_ns) for _, rows in sorted(by_gpu.items(), key=lambda kv: str(kv[0]))]
    gpus = [g for g in gpus if g["n_samples"] or g["energy_j"] is not None]
    in_win = [r for r in samples if r.get("t_ns") is not None and start_ns <= r["t_ns"] <= end_ns]

    energies = [g["energy_j"] for g in gpus]
    energy = sum(energies) if gpus and all(e is not None for e in energies) else None
    # Peak of the summed power: rows of one tick share t_ns (the sampler's one clock).
    tick_power: dict[int, float] = defaultdict(float)
    for r in in_win:
        if _peak(r) is not None:
            tick_power[r["t_ns"]] += _peak(r)
    avg_powers = [g["avg_power_w"] for g in gpus]
    sources = {g["energy_source"] for g in gpus}
    throttled = [g["throttled_pct"] for g in gpus if g["throttled_pct"] is not None]
    total = {
        "energy_j": _r(energy),
        "avg_power_w": _r(sum(avg_powers)) if gpus and all(p is not None for p in avg_powers) else None,
        "peak_power_w": _r(max(tick_power.values())) if tick_power else None,
        "joules_per_output_token": _r(energy / output_tokens, 6) if energy is not None and output_tokens else None,
        "avg_util_gpu": _r(_mean([g["avg_util_gpu"] for g in gpus if g["avg_util_gpu"] is not None]), 1),
        "peak_temp_gpu_c": max([g["peak_temp_gpu_c"] for g in gpus if g["peak_temp_gpu_c"] is not None], default=None),
        "peak_temp_mem_c": max([g["peak_temp_mem_c"] for g in gpus if g["peak_temp_mem_c"] is not None], default=None),
        "throttled_pct": max(throttled) if throttled else None,  # the worst GPU: one slow GPU slows a TP group
        "throttle_reasons": sorted({k for g in gpus for k, v in g["throttle_reasons_pct"].items()
                                    if v and k not in ("gpu_idle",)}),
    }
    return {
        "window_s": _r((end_ns - start_ns) / 1e9),
        "simulated": any(bool(r.get("simulated")) for r in in_win),
        "n_samples": len(in_win),
        "n_gpus": len(gpus),
        "output_tokens": output_tokens,
        "energy_source": sources.pop() if len(sources) == 1 else ("mixed" if sources else None),
        "power_note": "peak_power_w = highest sampled reading (instantaneous or 1 s average); "
                      "avg_power_w = energy_j / time",
        "gpus": gpus,
        "total": total,
    }
