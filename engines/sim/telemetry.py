"""Modelled GPU telemetry of the simulated GPU: what NVML would report if the steps the scheduler ran were real.

Pure (times are passed in). Model:
  * util_gpu = % of the last WINDOW_S seconds covered by engine steps (NVML utilization is "a kernel was running").
  * util_mem = bytes the steps moved in the window / (peak bandwidth x window), as a %.
  * power = idle + (TDP - idle) x activity, activity = busy fraction x (0.55 + 0.45 x intensity), intensity = the
    higher of achieved/peak compute and achieved/peak bandwidth while busy: a busy GPU doing memory-bound decode
    draws well under TDP, compute-bound prefill approaches it. Idle draw is IDLE_FRACTION x TDP.
  * energy_j = the exact integral of that power (idle between steps, per-step power during steps).
  * temperature follows the power with a first-order lag (time constant TAU_S) toward
    AMBIENT_C + RISE_C x power / TDP; memory runs MEM_OFFSET_C warmer.
  * clocks: boost clock while busy, idle clock otherwise (nominal figures, display only).
  * throttle_reasons: NVML clocks-event bits: 0x1 GPU idle, 0x4 software power cap (power >= 98 % TDP).
  * memory used: vLLM preallocates mem_fraction x memory at start, so it is constant.
The keys of each GPU dict are EXACTLY storage's TelemetrySample columns (see GPU_KEYS).
"""
from __future__ import annotations

import math
import uuid
from collections import deque

from catalog import GPUSpec

GPU_KEYS = ("gpu_index", "gpu_uuid", "util_gpu", "util_mem", "mem_used_mb", "mem_total_mb", "power_w", "power_avg_w",
            "energy_j", "temp_gpu_c", "temp_mem_c", "sm_clock_mhz", "mem_clock_mhz", "throttle_reasons", "pstate")

WINDOW_S = 1.0
IDLE_FRACTION = 0.10
AMBIENT_C = 30.0
RISE_C = 45.0
MEM_OFFSET_C = 5.0
TAU_S = 45.0
THROTTLE_IDLE = 0x1
THROTTLE_SW_POWER_CAP = 0x4
MIB = 1024 * 1024

# (boost SM clock, idle SM clock, memory clock) in MHz, nominal; fallback for GPUs not listed.
_CLOCKS = {
    "RTX-5090": (2407, 210, 14001),
    "L40S": (2520, 210, 9001),
    "A100-80GB": (1410, 210, 1593),
    "H100-SXM-80GB": (1980, 345, 2619),
    "H100-PCIe-80GB": (1755, 345, 1593),
    "H200-141GB": (1980, 345, 3201),
    "B200-180GB": (1965, 345, 3996),
}
_DEFAULT_CLOCKS = (1800, 300, 2000)


class GpuTelemetryModel:
    def __init__(self, gpu: GPUSpec, t0: float, mem_fraction: float, index: int = 0, peak_flops: float | None = None,
                 bandwidth_bytes_s: float | None = None):
        self.gpu = gpu
        self.index = index
        self.uuid = "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"melt-sim/{gpu.id}/{index}"))
        self.peak_flops = peak_flops or gpu.bf16_tflops * 1e12
        self.peak_bw = bandwidth_bytes_s or gpu.mem_bandwidth_gbs * 1e9
        self.idle_w = IDLE_FRACTION * gpu.tdp_w
        self.mem_total_mb = gpu.memory_gb * 1e9 / MIB
        self.mem_used_mb = min(self.mem_total_mb, gpu.memory_gb * 1e9 * mem_fraction / MIB)
        self.boost_mhz, self.idle_mhz, self.mem_mhz = _CLOCKS.get(gpu.id, _DEFAULT_CLOCKS)
        self.t0 = t0
        self.steps: deque[tuple[float, float, float, float]] = deque()  # (start, end, bytes, power_w) in window
        self.busy_extra_j = 0.0  # sum over finished steps of (step power - idle) x duration
        self.temp_c = AMBIENT_C + RISE_C * IDLE_FRACTION
        self.temp_t = t0

    def step_power(self, duration_s: float, bytes_moved: float, flops: float) -> float:
        if duration_s <= 0:
            return self.idle_w
        intensity = min(1.0, max(flops / duration_s / self.peak_flops, bytes_moved / duration_s / self.peak_bw))
        return self.idle_w + (self.gpu.tdp_w - self.idle_w) * (0.55 + 0.45 * intensity)

    def on_step(self, start: float, end: float, bytes_moved: float, flops: float) -> None:
        p = self.step_power(end - start, bytes_moved, flops)
        self.steps.append((start, end, bytes_moved, p))
        self.busy_extra_j += (p - self.idle_w) * (end - start)
        lo = end - 2 * WINDOW_S  # bounded memory even if nobody samples
        while self.steps[0][1] < lo:
            self.steps.popleft()

    def _window(self, now: float) -> tuple[float, float, float]:
        """(busy seconds, bytes, energy above idle) of steps overlapping [now - WINDOW_S, now]."""
        lo = now - WINDOW_S
        while self.steps and self.steps[0][1] < lo:
            self.steps.popleft()
        busy = nbytes = extra_j = 0.0
        for s, e, b, p in self.steps:
            ov = min(e, now) - max(s, lo)
            if ov > 0:
                frac = ov / (e - s) if e > s else 0.0
                busy += ov
                nbytes += b * frac
                extra_j += (p - self.idle_w) * ov
        return busy, nbytes, extra_j

    def sample(self, now: float) -> dict:
        busy, nbytes, extra_j = self._window(now)
        span = min(WINDOW_S, max(now - self.t0, 1e-9))
        busy_frac = min(1.0, busy / span)
        power_avg = self.idle_w + extra_j / span
        # Steps are recorded when they finish, so "now" is normally just past the last one: the GPU still counts as
        # busy (drawing that step's power) when the gap since it ended is short next to a step.
        current = []
        if self.steps:
            s0, e0, _, p0 = self.steps[-1]
            if s0 <= now < e0 + max(0.05, 2 * (e0 - s0)):
                current = [p0]
        power_now = current[-1] if current else self.idle_w
        # First-order thermal lag toward the steady state of the recent average power.
        dt = max(0.0, now - self.temp_t)
        target = AMBIENT_C + RISE_C * power_avg / self.gpu.tdp_w
        self.temp_c += (target - self.temp_c) * (1.0 - math.exp(-dt / TAU_S))
        self.temp_t = now
        # Energy since start: idle draw all along plus the extra of every finished step (steps end <= now).
        energy = self.idle_w * max(0.0, now - self.t0) + self.busy_extra_j
        busy_now = bool(current) or busy_frac > 0.5
        throttle = 0 if busy_now else THROTTLE_IDLE
        if power_now >= 0.98 * self.gpu.tdp_w:
            throttle |= THROTTLE_SW_POWER_CAP
        return {
            "gpu_index": self.index,
            "gpu_uuid": self.uuid,
            "util_gpu": round(100.0 * busy_frac, 2),
            "util_mem": round(min(100.0, 100.0 * nbytes / (self.peak_bw * span)), 2),
            "mem_used_mb": round(self.mem_used_mb, 1),
            "mem_total_mb": round(self.mem_total_mb, 1),
            "power_w": round(power_now, 2),
            "power_avg_w": round(power_avg, 2),
            "energy_j": round(energy, 3),
            "temp_gpu_c": round(self.temp_c, 2),
            "temp_mem_c": round(self.temp_c + MEM_OFFSET_C, 2),
            "sm_clock_mhz": float(self.boost_mhz if busy_now else self.idle_mhz),
            "mem_clock_mhz": float(self.mem_mhz),
            "throttle_reasons": throttle,
            "pstate": 0,
        }
