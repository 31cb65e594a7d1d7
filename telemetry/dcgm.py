"""GPU telemetry of a remote engine host from its DCGM exporter (or any Prometheus text endpoint that carries the
DCGM series, e.g. a Prometheus server's /federate), so a remote `--engine openai` run gets GPU telemetry too.

`DcgmSource(url)` is a sampler source like NvmlSource (telemetry/sampler.py): `read()` GETs the page, parses it with
telemetry.engine_metrics.parse_prometheus, and returns one row per GPU with exactly the TelemetrySample keys the NVML
sampler produces, in the same units:

  DCGM_FI_DEV_GPU_UTIL (%)                    -> util_gpu          DCGM_FI_DEV_MEM_COPY_UTIL (%) -> util_mem
  DCGM_FI_DEV_FB_USED / _FREE / _RESERVED (MiB) -> mem_used_mb, mem_total_mb (= used + free + reserved)
  DCGM_FI_DEV_POWER_USAGE (W)                 -> power_avg_w (and power_w unless _POWER_USAGE_INSTANT is there)
  DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ)   -> energy_j
  DCGM_FI_DEV_GPU_TEMP / _MEMORY_TEMP (C)     -> temp_gpu_c / temp_mem_c
  DCGM_FI_DEV_SM_CLOCK / _MEM_CLOCK (MHz)     -> sm_clock_mhz / mem_clock_mhz
  DCGM_FI_DEV_CLOCK_THROTTLE_REASONS or _CLOCKS_EVENT_REASONS (bitmask) -> throttle_reasons
  DCGM_FI_DEV_PSTATE                          -> pstate
  DCGM_FI_PROF_SM_ACTIVE / _PIPE_TENSOR_ACTIVE / _DRAM_ACTIVE (0..1) -> sm_active / tensor_active / dram_bw_util (%)
  DCGM_FI_PROF_PCIE_TX_BYTES / _RX_BYTES (B/s) -> pcie_tx_kbs / pcie_rx_kbs (kB/s, 1000 B as NVML's counters)
  DCGM_FI_DEV_XID_ERRORS (last XID), DCGM_FI_PROF_GR_ENGINE_ACTIVE, modelName, Hostname -> extra
`health_facts()` reads the ECC totals, retired pages and remapped rows (FACTS) at run start and end, so the health
verdict's ECC and memory-repair checks work on a remote host as on a local one (when the exporter serves them).

GPUs are told apart by the `gpu` label (index on that host) and `UUID`; rows come sorted by index. The exporter
refreshes its values on its own interval (dcgm-exporter: 30 s by default; `-c 1000` for 1 s), so a 4 Hz sampler
reads the same values several times: that is the remote host's resolution, said in `reason`.
"""
from __future__ import annotations

import math
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from telemetry.engine_metrics import parse_prometheus
from telemetry.nvml import SAMPLE_KEYS

# DCGM field -> (row key, scale)
DIRECT = {
    "DCGM_FI_DEV_GPU_UTIL": ("util_gpu", 1.0),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("util_mem", 1.0),
    "DCGM_FI_DEV_FB_USED": ("mem_used_mb", 1.0),
    "DCGM_FI_DEV_POWER_USAGE": ("power_avg_w", 1.0),
    "DCGM_FI_DEV_POWER_USAGE_INSTANT": ("power_w", 1.0),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_j", 1e-3),
    "DCGM_FI_DEV_GPU_TEMP": ("temp_gpu_c", 1.0),
    "DCGM_FI_DEV_MEMORY_TEMP": ("temp_mem_c", 1.0),
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", 1.0),
    "DCGM_FI_DEV_MEM_CLOCK": ("mem_clock_mhz", 1.0),
    "DCGM_FI_DEV_PSTATE": ("pstate", 1.0),
    "DCGM_FI_PROF_SM_ACTIVE": ("sm_active", 100.0),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": ("tensor_active", 100.0),
    "DCGM_FI_PROF_DRAM_ACTIVE": ("dram_bw_util", 100.0),
    "DCGM_FI_PROF_PCIE_TX_BYTES": ("pcie_tx_kbs", 1e-3),
    "DCGM_FI_PROF_PCIE_RX_BYTES": ("pcie_rx_kbs", 1e-3),
}
THROTTLE = ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS")
EXTRA = {"DCGM_FI_DEV_XID_ERRORS": "last_xid", "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "gr_engine_active"}
INT_KEYS = ("throttle_reasons", "pstate")
# DCGM counter -> the nvml.health_facts key health.verdict compares between run start and end (present when the
# exporter's counters file enables them: dcgm-exporter's default-counters.csv has the remapped-row ones, the ECC
# totals are commented out there; `-f` with a file that lists them turns them on)
FACTS = {
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "ecc_volatile_corrected",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "ecc_volatile_uncorrected",
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": "ecc_aggregate_corrected",
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": "ecc_aggregate_uncorrected",
    "DCGM_FI_DEV_RETIRED_SBE": "retired_pages_sbe",
    "DCGM_FI_DEV_RETIRED_DBE": "retired_pages_dbe",
    "DCGM_FI_DEV_RETIRED_PENDING": "retired_pages_pending",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "remapped_rows_correctable",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "remapped_rows_uncorrectable",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "remapped_rows_failure",
    "DCGM_FI_DEV_ROW_REMAP_PENDING": "remapped_rows_pending",
}
_BOOL_FACTS = ("remapped_rows_failure", "remapped_rows_pending")


def _gpu_key(labels: dict) -> tuple[int, str]:
    idx = labels.get("gpu")
    try:
        return int(idx), labels.get("UUID") or ""
    except (TypeError, ValueError):
        return 1 << 30, labels.get("UUID") or labels.get("device") or ""


def rows_from_text(text: str) -> list[dict]:
    """A DCGM exporter page -> one telemetry row per GPU (SAMPLE_KEYS, None where the page has no value)."""
    parsed = parse_prometheus(text)
    gpus: dict[tuple[int, str], dict[str, Any]] = {}
    meta: dict[tuple[int, str], dict[str, Any]] = {}

    def put(name: str, fn) -> None:
        for labels, value in parsed.get(name, []):
            key = _gpu_key(labels)
            row = gpus.setdefault(key, {k: None for k in SAMPLE_KEYS})
            m = meta.setdefault(key, {})
            for lab, out in (("modelName", "model"), ("Hostname", "hostname"), ("device", "device"),
                             ("pci_bus_id", "pci_bus_id")):
                if labels.get(lab):
                    m[out] = labels[lab]
            fn(row, m, value)

    for name, (col, scale) in DIRECT.items():
        put(name, lambda row, m, v, col=col, scale=scale: row.__setitem__(col, v * scale))
    for name in THROTTLE:
        put(name, lambda row, m, v: row.__setitem__("throttle_reasons", int(v)))
    for name, out in EXTRA.items():
        put(name, lambda row, m, v, out=out: m.__setitem__(out, v))
    free = {_gpu_key(lab): v for lab, v in parsed.get("DCGM_FI_DEV_FB_FREE", [])}
    reserved = {_gpu_key(lab): v for lab, v in parsed.get("DCGM_FI_DEV_FB_RESERVED", [])}
    out = []
    for key in sorted(gpus):
        row = gpus[key]
        idx, uuid = key
        row["gpu_index"] = idx if idx != 1 << 30 else None
        row["gpu_uuid"] = uuid or None
        if row["mem_used_mb"] is not None and key in free:
            row["mem_total_mb"] = row["mem_used_mb"] + free[key] + reserved.get(key, 0.0)
        if row["power_w"] is None:
            row["power_w"] = row["power_avg_w"]
        for k in INT_KEYS:
            if row[k] is not None:
                row[k] = int(row[k])
        row["extra"] = {"source": "dcgm", **meta.get(key, {})}
        out.append(row)
    return out


def facts_from_text(text: str) -> dict[str, dict]:
    """A DCGM exporter page -> {str(gpu index): facts} with the ECC / retired-page / remapped-row counters it carries
    (nvml.health_facts' keys, `available` True), for health.verdict's start/end comparison. GPUs with none of those
    counters are left out: nothing to compare is SKIP, not PASS."""
    parsed = parse_prometheus(text)
    out: dict[str, dict] = {}
    for name, key in FACTS.items():
        for labels, value in parsed.get(name, []):
            idx, uuid = _gpu_key(labels)
            if idx == 1 << 30 or idx < 0 or not math.isfinite(value) or value < 0:
                continue  # no usable index, or not a counter value (NaN, Inf, negative): that series says nothing
            f = out.setdefault(str(idx), {"available": True, "index": idx, "uuid": uuid or None, "source": "dcgm"})
            if f["uuid"] and uuid and uuid != f["uuid"]:
                f["available"] = False  # two GPUs claim one index: compare nothing rather than mix them
                f["reason"] = f"GPU index {idx} carries two UUIDs ({f['uuid']}, {uuid})"
                continue
            f[key] = value > 0 if key in _BOOL_FACTS else int(value)
    return out


class DcgmSource:
    """Reads a DCGM exporter's /metrics page at each sampler tick. Real (not simulated) telemetry of the remote
    host's GPUs; `gpus` (indices on that host) keeps only those."""

    kind = "dcgm"
    simulated = False

    def __init__(self, url: str, gpus: list[int] | None = None, timeout_s: float = 2.0):
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"--gpu-metrics-url needs an http(s) URL, got {url!r}")
        self.url = url if u.path not in ("", "/") else url.rstrip("/") + "/metrics"
        self.gpus = list(gpus) if gpus is not None else None
        self.timeout_s = timeout_s
        # never through an HTTP proxy (as every control-plane call of Melt's), never following redirects elsewhere
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.reason = f"DCGM exporter at {self.url} (the remote host's GPUs, at the exporter's refresh interval)"

    def _page(self) -> str:
        with self._opener.open(self.url, timeout=self.timeout_s) as resp:  # noqa: S310 (a URL the user gave)
            return resp.read(8 << 20).decode("utf-8", errors="replace")

    def read(self) -> list[dict]:
        rows = rows_from_text(self._page())
        if not rows:
            raise ValueError(f"{self.url}: no DCGM_FI_* GPU series on the page")
        if self.gpus is not None:
            rows = [r for r in rows if r["gpu_index"] in self.gpus]
        return rows

    def health_facts(self) -> dict:
        """The ECC / remap counters the exporter serves, at run start and end (facts_from_text); {} when none."""
        facts = facts_from_text(self._page())
        return {k: v for k, v in facts.items() if self.gpus is None or v["index"] in self.gpus}

    def close(self) -> None:
        pass
