"""GPU health verdict for a run: PASS / WARN / FAIL with every rule explained in plain words.

Inputs are what the run recorded: telemetry rows, health_facts() per GPU at run start and end, XID events, and the
load windows (level start/end ns). The verdict is pure: no NVML here, so it is tested on recorded series.

Rules (each becomes one entry of `checks`, status PASS / WARN / FAIL / SKIP when the data needed are missing):
- telemetry:   no samples at all -> WARN (health unknown). Simulated samples are labelled so.
- xid:         any XID error -> FAIL, except application-level XIDs (13, 31, 43, 45, 68, ...: a program faulted or
               was killed, the GPU itself is fine) -> WARN.
- ecc:         new uncorrectable ECC errors during the run -> FAIL; new corrected errors -> WARN.
- memory_repair: row-remap failure -> FAIL; remap pending (needs a GPU reset), new remapped rows, new or pending
               retired pages -> WARN.
- hw_throttle: hardware slowdown / HW thermal / power brake while under load: > 2% of load time -> FAIL, any -> WARN.
- thermal:     software thermal slowdown under load > 1% of the time -> WARN; temperature within 5 °C of the
               slowdown (GPU) or max (HBM) limit -> WARN, at/over it -> FAIL.
- power_limit: power limit set below the default -> WARN (results describe a capped GPU). Time at the power cap
               under load is reported, not penalised: heavy load running into the limit is normal.
- clocks:      median SM clock under load (busy samples not at the power cap) < 70% of the GPU's max -> WARN.
               Clocks lowered by the power cap are normal (an H100 under a matmul loop runs at ~69% of max clock).
- pcie:        link narrower than its maximum, or PCIe replays increased during the run -> WARN.
- idle_under_load: GPU utilisation < 5% through the load windows -> WARN (is the engine on this GPU?).
"""
from __future__ import annotations

import statistics
from typing import Any, Iterable

from telemetry.energy import THROTTLE_BITS, decode_throttle

# XIDs caused by the application (bad memory access, killed context, ...) rather than by the hardware.
APP_XIDS = {13, 31, 43, 45, 68, 69, 109}
XID_WORDS = {
    13: "graphics engine exception (usually an application fault)",
    31: "GPU memory page fault (usually an application bug)",
    43: "GPU stopped processing (a program was stopped by the driver)",
    45: "preemptive cleanup (a process was killed)",
    48: "double-bit ECC error",
    61: "internal micro-controller breakpoint/warning",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping recorded",
    64: "ECC page retirement or row remapping failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}

HW_BITS = {b for b, n in THROTTLE_BITS.items() if n in ("hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")}
SW_THERMAL_BIT = next(b for b, n in THROTTLE_BITS.items() if n == "sw_thermal_slowdown")
SW_POWER_BIT = next(b for b, n in THROTTLE_BITS.items() if n == "sw_power_cap")
_ORDER = {"SKIP": -1, "PASS": 0, "WARN": 1, "FAIL": 2}


def _facts_by_gpu(facts: Any) -> dict[int, dict]:
    """Accept one facts dict, a list of them, or {index: facts}; -> {gpu index: facts} (only available ones)."""
    if not facts:
        return {}
    if isinstance(facts, dict) and "available" in facts:
        items: Iterable = [facts]
    elif isinstance(facts, dict):
        items = [dict(v, index=v["index"] if v.get("index") is not None else (int(k) if str(k).isdigit() else None))
                 for k, v in facts.items() if isinstance(v, dict)]
    else:
        items = facts
    return {f["index"]: f for f in items if isinstance(f, dict) and f.get("available") and f.get("index") is not None}


def _xid_list(xids: Any) -> list[dict]:
    out = []
    for x in xids or []:
        if isinstance(x, dict):
            out.append({"gpu": x.get("gpu", x.get("gpu_index")), "xid": int(x["xid"]), "t_ns": x.get("t_ns")})
        else:
            gpu, xid, t_ns = (list(x) + [None, None, None])[:3]
            out.append({"gpu": gpu, "xid": int(xid), "t_ns": t_ns})
    return out


def _in_windows(t: int, windows: list[tuple[int, int]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def _delta(a: dict, b: dict, key: str) -> int | None:
    x, y = a.get(key), b.get(key)
    if x is None or y is None:
        return None
    if isinstance(x, dict):  # violation status {"violation_ns": ...}
        x, y = x.get("violation_ns"), y.get("violation_ns")
        if x is None or y is None:
            return None
    return int(y) - int(x)


def _time_share(rows: list[dict], windows: list[tuple[int, int]], bits: set[int] | int) -> float | None:
    """Share of load time (time-weighted by sample spacing) whose throttle mask has any of `bits`."""
    mask = bits if isinstance(bits, int) else sum(bits)
    rows = sorted((r for r in rows if r.get("throttle_reasons") is not None), key=lambda r: r["t_ns"])
    total = hit = 0.0
    for i, r in enumerate(rows):
        if not _in_windows(r["t_ns"], windows):
            continue
        nxt = rows[i + 1]["t_ns"] if i + 1 < len(rows) else None
        end = next((b for a, b in windows if a <= r["t_ns"] <= b), r["t_ns"])
        # A sample holds until the next one, cut at the end of its window.
        dt = ((min(nxt, end) if nxt is not None else end) - r["t_ns"]) / 1e9
        if dt <= 0:
            continue
        total += dt
        if r["throttle_reasons"] & mask:
            hit += dt
    return hit / total if total > 0 else None


def verdict(samples: list[dict], facts_start: Any, facts_end: Any, xids: list | None,
            load_windows: list[tuple[int, int]] | None) -> dict:
    """-> {"status": "PASS"|"WARN"|"FAIL", "reasons": [plain words], "checks": [{id, status, title, detail, gpus}],
    "simulated": bool}. `load_windows`: [(start_ns, end_ns)] of the levels; None/[] = the whole run counts as load."""
    checks: list[dict] = []

    def add(cid: str, status: str, title: str, detail: str, gpus: list | None = None) -> None:
        checks.append({"id": cid, "status": status, "title": title, "detail": detail, "gpus": gpus or []})

    samples = [r for r in samples or [] if r.get("t_ns") is not None]
    simulated = any(r.get("simulated") for r in samples)
    windows = [(int(a), int(b)) for a, b in (load_windows or []) if a is not None and b is not None]
    if not windows and samples:
        windows = [(min(r["t_ns"] for r in samples), max(r["t_ns"] for r in samples))]
    fs, fe = _facts_by_gpu(facts_start), _facts_by_gpu(facts_end)
    by_gpu: dict[Any, list[dict]] = {}
    for r in samples:
        by_gpu.setdefault(r.get("gpu_index"), []).append(r)
    gpu_ids = sorted(set(by_gpu) | set(fs) | set(fe), key=lambda g: (g is None, g if g is not None else 0))

    # telemetry present
    if not samples:
        add("telemetry", "WARN", "No GPU telemetry",
            "No GPU telemetry was recorded, so GPU health during the run is unknown.")
    else:
        add("telemetry", "PASS", "GPU telemetry recorded",
            f"{len(samples)} samples of {len(by_gpu)} GPU(s)" + (" (SIMULATED: a model, not hardware)." if simulated else "."))

    # XIDs
    xl = _xid_list(xids)
    if not xl:
        add("xid", "PASS", "No XID errors", "The driver reported no XID errors during the run.")
    else:
        hard = [x for x in xl if x["xid"] not in APP_XIDS]
        words = "; ".join(f"GPU {x['gpu']}: XID {x['xid']} ({XID_WORDS.get(x['xid'], 'see NVIDIA XID catalog')})"
                          for x in xl[:6])
        if hard:
            add("xid", "FAIL", "GPU XID errors", f"The driver reported hardware/driver XID errors: {words}.",
                sorted({x["gpu"] for x in hard if x["gpu"] is not None}))
        else:
            add("xid", "WARN", "Application XID errors",
                f"The driver reported application-level XIDs (a program faulted or was stopped): {words}.",
                sorted({x["gpu"] for x in xl if x["gpu"] is not None}))

    # ECC and memory repair: compare counters at start and end
    both = [g for g in gpu_ids if g in fs and g in fe]
    if not both:
        add("ecc", "SKIP", "ECC not checked", "No GPU facts from both run start and end.")
        add("memory_repair", "SKIP", "Memory repair not checked", "No GPU facts from both run start and end.")
    else:
        unc, cor, read = [], [], False
        for g in both:
            du = [d for d in (_delta(fs[g], fe[g], "ecc_volatile_uncorrected"),
                              _delta(fs[g], fe[g], "ecc_aggregate_uncorrected")) if d is not None]
            dc = [d for d in (_delta(fs[g], fe[g], "ecc_volatile_corrected"),
                              _delta(fs[g], fe[g], "ecc_aggregate_corrected")) if d is not None]
            read = read or bool(du or dc)
            if du and max(du) > 0:
                unc.append((g, max(du)))
            if dc and max(dc) > 0:
                cor.append((g, max(dc)))
        if unc:
            add("ecc", "FAIL", "New uncorrectable memory errors",
                "Uncorrectable ECC errors appeared during the run: " +
                ", ".join(f"GPU {g}: +{n}" for g, n in unc) + ". Data on that GPU may be wrong; a reset is needed.",
                [g for g, _ in unc])
        elif cor:
            add("ecc", "WARN", "New corrected memory errors",
                "Corrected ECC errors appeared during the run (the data were fixed, but the memory is wearing): " +
                ", ".join(f"GPU {g}: +{n}" for g, n in cor) + ".", [g for g, _ in cor])
        elif not read:
            add("ecc", "SKIP", "ECC not checked", "No ECC error counters could be read (ECC off, not supported, or "
                "not served by the telemetry source).")
        else:
            add("ecc", "PASS", "No new ECC errors", "ECC error counters did not change during the run.")

        fail, warn = [], []
        for g in both:
            a, b = fs[g], fe[g]
            if b.get("remapped_rows_failure"):
                fail.append(f"GPU {g}: a row remapping failed (the memory could not be repaired)")
            if b.get("remapped_rows_pending"):
                warn.append(f"GPU {g}: a row remapping is pending until the GPU is reset")
            for key, label in (("remapped_rows_uncorrectable", "rows remapped after uncorrectable errors"),
                               ("remapped_rows_correctable", "rows remapped after corrected errors"),
                               ("retired_pages_dbe", "pages retired (double-bit errors)"),
                               ("retired_pages_sbe", "pages retired (single-bit errors)")):
                d = _delta(a, b, key)
                if d:
                    warn.append(f"GPU {g}: +{d} {label}")
            if b.get("retired_pages_pending"):
                warn.append(f"GPU {g}: page retirement pending until the GPU is reset")
        if fail:
            add("memory_repair", "FAIL", "GPU memory repair failed", "; ".join(fail + warn) + ".")
        elif warn:
            add("memory_repair", "WARN", "GPU memory repair activity", "; ".join(warn) + ".")
        else:
            add("memory_repair", "PASS", "No memory repair activity", "No new remapped rows or retired pages.")

    # Throttling under load
    if not any(r.get("throttle_reasons") is not None for r in samples):
        add("hw_throttle", "SKIP", "Throttling not checked", "No clocks-event reasons were recorded.")
        add("thermal", "SKIP", "Thermal throttling not checked", "No clocks-event reasons were recorded.")
    else:
        hw_fail, hw_warn, th_warn, pcap = [], [], [], []
        for g, rows in by_gpu.items():
            share = _time_share(rows, windows, HW_BITS)
            if share:
                names = sorted({n for r in rows if r.get("throttle_reasons") and _in_windows(r["t_ns"], windows)
                                for n in decode_throttle(r["throttle_reasons"] & sum(HW_BITS))})
                msg = f"GPU {g}: {', '.join(n.replace('_', ' ') for n in names)} for {share:.0%} of the load time"
                (hw_fail if share > 0.02 else hw_warn).append((g, msg))
            sw = _time_share(rows, windows, SW_THERMAL_BIT)
            if sw and sw > 0.01:
                th_warn.append((g, f"GPU {g}: software thermal slowdown for {sw:.0%} of the load time"))
            pc = _time_share(rows, windows, SW_POWER_BIT)
            if pc:
                pcap.append(f"GPU {g} at its power cap {pc:.0%} of the load time")
        for g in both:  # thermal violation time from the driver's own counter covers gaps between samples
            d = _delta(fs[g], fe[g], "violation_thermal")
            if d and d > 0 and not any(x[0] == g for x in th_warn + hw_fail + hw_warn):
                th_warn.append((g, f"GPU {g}: clocks held down by a thermal policy for {d / 1e9:.1f} s"))
        if hw_fail:
            add("hw_throttle", "FAIL", "Hardware slowdown under load",
                "; ".join(m for _, m in hw_fail + hw_warn) + ". Results on this GPU understate what it can do: "
                "check cooling, power delivery and the board.", [g for g, _ in hw_fail + hw_warn])
        elif hw_warn:
            add("hw_throttle", "WARN", "Brief hardware slowdown", "; ".join(m for _, m in hw_warn) + ".",
                [g for g, _ in hw_warn])
        else:
            add("hw_throttle", "PASS", "No hardware slowdown",
                "No hardware slowdown, HW thermal slowdown or power brake under load."
                + (f" ({'; '.join(pcap)}: normal under heavy load.)" if pcap else ""))
        if th_warn:
            add("thermal", "WARN", "Thermal throttling", "; ".join(m for _, m in th_warn) + ".", [g for g, _ in th_warn])
        else:
            add("thermal", "PASS", "No thermal throttling", "No thermal slowdown under load.")

    # Temperatures near limits
    temp_fail, temp_warn = [], []
    for g, rows in by_gpu.items():
        f = fe.get(g) or fs.get(g) or {}
        lim_gpu = f.get("temp_slowdown_c") or f.get("temp_gpu_max_c")
        lim_mem = f.get("temp_mem_max_c")
        tg = max([r["temp_gpu_c"] for r in rows if r.get("temp_gpu_c") is not None], default=None)
        tm = max([r["temp_mem_c"] for r in rows if r.get("temp_mem_c") is not None], default=None)
        for peak, lim, what in ((tg, lim_gpu, "GPU"), (tm, lim_mem, "memory (HBM)")):
            if peak is None or not lim:
                continue
            if peak >= lim:
                temp_fail.append((g, f"GPU {g}: {what} reached {peak:.0f} °C, at/over its {lim:.0f} °C limit"))
            elif peak >= lim - 5:
                temp_warn.append((g, f"GPU {g}: {what} reached {peak:.0f} °C, within 5 °C of its {lim:.0f} °C limit"))
    if temp_fail:
        add("temperature", "FAIL", "Temperature at its limit", "; ".join(m for _, m in temp_fail + temp_warn) + ".",
            [g for g, _ in temp_fail])
    elif temp_warn:
        add("temperature", "WARN", "Temperature near its limit", "; ".join(m for _, m in temp_warn) + ".",
            [g for g, _ in temp_warn])
    elif any(r.get("temp_gpu_c") is not None for r in samples):
        add("temperature", "PASS", "Temperatures fine",
            "Peak temperatures stayed more than 5 °C below the limits (where the GPU reports them).")
    else:
        add("temperature", "SKIP", "Temperatures not checked", "No temperatures were recorded.")

    # Power limit lowered
    capped = []
    for g, f in {**fs, **fe}.items():
        lim, dflt = f.get("power_limit_w"), f.get("power_limit_default_w")
        if lim and dflt and lim < 0.95 * dflt:
            capped.append((g, f"GPU {g}: power limit {lim:.0f} W, below its default {dflt:.0f} W"))
    if capped:
        add("power_limit", "WARN", "Power limit lowered",
            "; ".join(m for _, m in capped) + ". Results describe a power-capped GPU.", [g for g, _ in capped])
    elif fs or fe:
        add("power_limit", "PASS", "Power limit at default", "Power limits are at (or above) their defaults.")
    else:
        add("power_limit", "SKIP", "Power limit not checked", "No GPU facts.")

    # Clocks under load. A GPU at its power cap lowers its clocks to stay inside the limit: on an H100 under a bf16
    # matmul loop the SM clock sat at ~1370 of 1980 MHz (69%) with only the sw power cap reason set. That is normal,
    # so power-capped samples are left out; what remains low is unexplained.
    slow, capped_notes, checked = [], [], False
    for g, rows in by_gpu.items():
        f = fe.get(g) or fs.get(g) or {}
        mx = f.get("max_sm_clock_mhz")
        busy = [r for r in rows if r.get("sm_clock_mhz") is not None
                and _in_windows(r["t_ns"], windows) and (r.get("util_gpu") or 0) >= 50]
        if not mx or len(busy) < 3:
            continue
        checked = True
        free = [r["sm_clock_mhz"] for r in busy if not (r.get("throttle_reasons") or 0) & SW_POWER_BIT]
        if len(free) < 3:
            med = statistics.median(r["sm_clock_mhz"] for r in busy)
            capped_notes.append(f"GPU {g} at its power cap, median SM clock {med:.0f} MHz ({med / mx:.0%} of max)")
            continue
        med = statistics.median(free)
        if med < 0.7 * mx:
            slow.append((g, f"GPU {g}: median SM clock under load {med:.0f} MHz, {med / mx:.0%} of its {mx:.0f} MHz "
                            "max, with no power cap to explain it"))
    if slow:
        add("clocks", "WARN", "Clocks far below maximum under load", "; ".join(m for _, m in slow) + ".",
            [g for g, _ in slow])
    elif checked:
        add("clocks", "PASS", "Clocks normal under load",
            "Busy SM clocks stayed at 70% or more of their maximum"
            + (f" except where set by the power cap ({'; '.join(capped_notes)}: normal under heavy load)."
               if capped_notes else "."))
    else:
        add("clocks", "SKIP", "Clocks not checked", "Not enough busy samples with clocks, or no max clock known.")

    # PCIe link and replays
    pc_warn = []
    for g, f in fe.items():
        w, wm = f.get("pcie_link_width"), f.get("pcie_link_width_max")
        if w and wm and w < wm:
            pc_warn.append((g, f"GPU {g}: PCIe link x{w} of x{wm}"))
        if g in fs:
            d = _delta(fs[g], f, "pcie_replay_counter")
            if d and d > 0:
                pc_warn.append((g, f"GPU {g}: {d} PCIe replays during the run (link errors being retried)"))
    if pc_warn:
        add("pcie", "WARN", "PCIe link problems", "; ".join(m for _, m in pc_warn) + ".", [g for g, _ in pc_warn])
    elif fe:
        add("pcie", "PASS", "PCIe link fine", "Full link width and no new PCIe replays.")
    else:
        add("pcie", "SKIP", "PCIe not checked", "No GPU facts at run end.")

    # GPU idle while load was applied
    idle = []
    for g, rows in by_gpu.items():
        u = [r["util_gpu"] for r in rows if r.get("util_gpu") is not None and _in_windows(r["t_ns"], windows)]
        if len(u) >= 4 and statistics.fmean(u) < 5:
            idle.append((g, f"GPU {g}: average utilisation {statistics.fmean(u):.1f}% while load was applied"))
    if idle and load_windows:
        add("idle_under_load", "WARN", "GPU idle under load",
            "; ".join(m for _, m in idle) + ". Is the engine running on this GPU?", [g for g, _ in idle])

    # MIG note (information only)
    mig = [g for g, f in {**fs, **fe}.items() if f.get("mig_mode")]
    if mig:
        add("mig", "PASS", "MIG mode on", f"GPU(s) {', '.join(map(str, mig))} run in MIG mode: power and temperature "
            "are the whole board's, shared by every slice.", mig)

    worst = max((c["status"] for c in checks), key=lambda s: _ORDER[s], default="PASS")
    status = worst if worst in ("WARN", "FAIL") else "PASS"
    bad = sorted((c for c in checks if c["status"] in ("WARN", "FAIL")), key=lambda c: -_ORDER[c["status"]])
    reasons = [f"{c['title']}: {c['detail']}" for c in bad]
    if simulated:
        reasons.insert(0, "SIMULATED telemetry: this verdict checks the simulator's model, not real hardware.")
    if status == "PASS" and not simulated:
        reasons = ["No GPU health problems found."]
    return {"status": status, "reasons": reasons, "checks": checks, "simulated": simulated}
