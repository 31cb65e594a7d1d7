"""The Level.telemetry JSON: what one load level cost in power and energy, and whether the GPUs stayed healthy.

Flat keys first (what tables and tiles read), detail after:
  simulated, avg_power_w, peak_power_w, energy_j, energy_source, joules_per_output_token, avg_util_gpu,
  peak_temp_gpu_c, peak_temp_mem_c, throttled_pct, throttle_reasons, verdict {status, reasons}, gpus [...],
  telemetry ("nvml" | "sim" | "none" + why).
The run-level verdict (ECC/remap facts at run start and end) is computed separately with health.verdict and stored as
an Event(kind="verdict"); the per-level one here sees only that level's samples and XIDs.
"""
from __future__ import annotations

from telemetry.energy import summarize_window
from telemetry.health import verdict


def level_telemetry(samples: list[dict], start_ns: int, end_ns: int, output_tokens: int | None,
                    xids: list | None = None, source_note: str = "") -> dict:
    """Summary of [start_ns, end_ns]. `samples` may include rows a little outside the window (edge interpolation)."""
    s = summarize_window(samples, start_ns, end_ns, output_tokens)
    in_win = [r for r in samples if r.get("t_ns") is not None and start_ns <= r["t_ns"] <= end_ns]
    xl = [x for x in (xids or [])
          if start_ns <= ((x.get("t_ns") if isinstance(x, dict) else x[2]) or start_ns) <= end_ns]
    v = verdict(in_win, None, None, xl, [(start_ns, end_ns)])
    t = s["total"]
    return {
        "simulated": s["simulated"],
        "avg_power_w": t["avg_power_w"],
        "peak_power_w": t["peak_power_w"],
        "energy_j": t["energy_j"],
        "energy_source": s["energy_source"],
        "joules_per_output_token": t["joules_per_output_token"],
        "avg_util_gpu": t["avg_util_gpu"],
        "peak_temp_gpu_c": t["peak_temp_gpu_c"],
        "peak_temp_mem_c": t["peak_temp_mem_c"],
        "throttled_pct": t["throttled_pct"],
        "throttle_reasons": t["throttle_reasons"],
        "verdict": {"status": v["status"], "reasons": v["reasons"]},
        "n_samples": s["n_samples"],
        "window_s": s["window_s"],
        "power_note": s["power_note"],
        "telemetry": source_note,
        "gpus": s["gpus"],
    }
