"""THE one NVML choke point (nvidia-ml-py, module `pynvml`). Nothing else in Melt calls pynvml.

Every NVML call goes through `_call`, which turns NotSupported / NoPermission / FunctionNotFound / any NVML error
(and a binding too old to have the function at all) into None. Callers never see an exception; "no NVML" is a value:
`nvml_status() -> (False, reason)`.

Only the standard library and pynvml are imported here, so telemetry/ runs on the bare GPU machine.

GPU selection. Melt names GPUs by NVML index (what `list_gpus()` and `python -m bench gpus` show) or by UUID
("GPU-…", or "MIG-…" for a MIG slice). NVML indices are in PCI bus order and ignore CUDA_VISIBLE_DEVICES; CUDA's own
order is "fastest first" unless CUDA_DEVICE_ORDER=PCI_BUS_ID. So a process started with CUDA_VISIBLE_DEVICES=1 does
not necessarily run on NVML GPU 1 unless CUDA_DEVICE_ORDER=PCI_BUS_ID is also set (or UUIDs are used).
`nvml_indices_for_cuda_visible()` maps a CUDA_VISIBLE_DEVICES string to NVML indices under that rule.

MIG. A MIG slice has no power/temperature/clock sensors of its own, and NVML reports no utilisation for it: samples of
a MIG slice read memory from the slice and everything else from its parent GPU (so two slices of one GPU both show the
whole board's power). `gpu_index` of such a sample is the parent's index; `extra` says which slice it was.

Units: memory in MiB (the `*_mb` columns, as nvidia-smi shows), power in W, energy in J, temperatures in °C, clocks in
MHz, PCIe in kB/s, util_* / sm_active / tensor_active / dram_bw_util in percent (0..100).
Power: `power_w` is the instantaneous reading (field 186) where the driver offers it, else the averaged one;
`power_avg_w` is the driver's ~1 s average (field 185, else nvmlDeviceGetPowerUsage). Seen on an H100 under a bf16
matmul loop at its 700 W cap: instantaneous samples swing up to 776 W while their mean (695.6 W) and the averaged
reading (698.2 W) agree; the energy counter (`energy_j`) is the ground truth for joules and matched ∫power_w dt
within 0.3%. Charts of power over time should plot `power_avg_w` (smooth, no 4 Hz aliasing) and may mark peaks from
`power_w`.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

try:  # nvidia-ml-py is an app dependency, but Melt must run (simulated) without it.
    import pynvml as _pynvml
except Exception:  # pragma: no cover - exercised only where the package is missing
    _pynvml = None

# Columns of storage.models.TelemetrySample that read_sample fills (the sampler adds t_ns and simulated).
SAMPLE_KEYS = (
    "gpu_index", "gpu_uuid", "util_gpu", "util_mem", "mem_used_mb", "mem_total_mb", "power_w", "power_avg_w",
    "energy_j", "temp_gpu_c", "temp_mem_c", "sm_clock_mhz", "mem_clock_mhz", "throttle_reasons", "pstate",
    "pcie_tx_kbs", "pcie_rx_kbs", "sm_active", "tensor_active", "dram_bw_util", "extra",
)

MIB = 1024 * 1024

# NVML field ids (nvml.h). Spelled out so this module does not depend on how new the binding is.
FI_MEMORY_TEMP = 82            # HBM temperature, °C
FI_TOTAL_ENERGY = 83           # mJ since driver load
FI_RETIRED_PENDING = 31
FI_PCIE_REPLAY_COUNTER = 94
FI_REMAPPED_COR, FI_REMAPPED_UNC, FI_REMAPPED_PENDING, FI_REMAPPED_FAILURE = 142, 143, 144, 145
FI_POWER_AVERAGE = 185         # mW, driver's ~1 s average
FI_POWER_INSTANT = 186         # mW
FI_PCIE_COUNT_TX_BYTES = 197   # cumulative bytes (newer drivers); a rate is taken between samples
FI_PCIE_COUNT_RX_BYTES = 198
_SAMPLE_FIELDS = (FI_POWER_INSTANT, FI_POWER_AVERAGE, FI_MEMORY_TEMP)
# Measured on an H100 (driver 580): reading the energy counter (field 83 or nvmlDeviceGetTotalEnergyConsumption) costs
# ~4 ms of CPU per call, every other sampled query ~0.002-0.05 ms, the PCIe byte-counter fields ~0.3 ms. So the
# sampler reads the counter about once a second (NvmlSource energy_interval_s) rather than at every 4 Hz tick: it is
# cumulative, nothing is lost, and energy.summarize_window interpolates it to window edges.

# GPM metric ids (Hopper+): percentages over the interval between two GPM samples.
GPM_SM_UTIL, GPM_ANY_TENSOR_UTIL, GPM_DRAM_BW_UTIL = 2, 5, 10
GPM_PCIE_TX_PER_SEC, GPM_PCIE_RX_PER_SEC = 20, 21   # MiB/s
_GPM_METRICS = (GPM_SM_UTIL, GPM_ANY_TENSOR_UTIL, GPM_DRAM_BW_UTIL, GPM_PCIE_TX_PER_SEC, GPM_PCIE_RX_PER_SEC)

XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError

_ARCH = {2: "Kepler", 3: "Maxwell", 4: "Pascal", 5: "Volta", 6: "Turing", 7: "Ampere", 8: "Ada",
         9: "Hopper", 10: "Blackwell", 13: "Rubin"}

# NVML error codes whose answer does not change while the process lives: remember them and skip the call next time,
# which keeps a 4 Hz sampler cheap on GPUs that lack a sensor.
_STICKY_ERRORS = {3, 4, 13}  # NotSupported, NoPermission, FunctionNotFound


class _State:
    """Process-wide NVML state: NVML itself is process-global, so this is too. Guarded by `lock`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.inited: bool | None = None      # None = not tried yet
        self.reason = ""
        self.sticky: set[tuple] = set()      # (function name, device key, args) known unsupported
        self.readers: dict[Any, "_Reader"] = {}
        self.errors = 0                      # NVML errors turned into None (diagnostics only)
        self.last_error = ""


_S = _State()


def _reset() -> None:
    """Forget init state and caches (tests swap the pynvml module; a driver may appear after a failed init)."""
    with _S.lock:
        for r in list(_S.readers.values()):
            r.close()
        _S.__init__()


def _err_code(e: BaseException) -> int | None:
    return getattr(e, "value", None)


def _try(fn_name: str, *args) -> tuple[bool, Any, BaseException | None]:
    """The one place pynvml functions are called: (ok, value, error). Never raises."""
    nv = _pynvml
    if nv is None:
        return False, None, None
    fn = getattr(nv, fn_name, None)
    if fn is None:  # binding older than the function: same as NVML's FunctionNotFound
        return False, None, None
    try:
        return True, fn(*args), None
    except Exception as e:  # NVMLError and its subclasses, ctypes errors, anything: never raise to callers
        return False, None, e


def _call(fn_name: str, *args, key: Any = None) -> Any:
    """pynvml.<fn_name>(*args), or None on any failure (NotSupported, NoPermission, FunctionNotFound, ...).
    With `key` (a device key), a call that failed for good is remembered and not repeated (handle arg excluded)."""
    sticky = (fn_name, key, args[1:]) if key is not None else None
    try:
        known_bad = sticky is not None and sticky in _S.sticky
    except TypeError:  # unhashable argument: no caching for this call
        sticky, known_bad = None, False
    if known_bad:
        return None
    ok, value, err = _try(fn_name, *args)
    if ok:
        return value
    code = _err_code(err) if err is not None else 13  # missing function == FunctionNotFound
    if sticky is not None and code in _STICKY_ERRORS:
        _S.sticky.add(sticky)
    elif err is not None:
        _S.errors += 1
        _S.last_error = f"{fn_name}: {err}"
    return None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _init() -> bool:
    with _S.lock:
        if _S.inited is not None:
            return _S.inited
        nv = _pynvml
        if nv is None:
            _S.inited, _S.reason = False, "nvidia-ml-py (pynvml) is not installed"
            return False
        try:
            nv.nvmlInit()
        except Exception as e:
            _S.inited, _S.reason = False, _init_reason(e)
            return False
        count = _call("nvmlDeviceGetCount")
        if not count:
            _S.inited, _S.reason = False, "NVML found no NVIDIA GPU"
            return False
        _S.inited, _S.reason = True, ""
        return True


def _init_reason(e: BaseException) -> str:
    code = _err_code(e)
    return {
        12: "NVML library not found: no NVIDIA driver",
        9: "NVIDIA driver not loaded",
        4: "no permission to use NVML",
        18: "NVIDIA driver/library version mismatch (reboot or reload the driver)",
        28: "NVML found no NVIDIA GPU",
    }.get(code, f"NVML init failed: {e}")


def nvml_status() -> tuple[bool, str]:
    """(available, reason). With NVML up the reason is a one-line description (driver, GPU count)."""
    if not _init():
        return False, _S.reason
    drv = _text(_call("nvmlSystemGetDriverVersion")) or "?"
    n = _call("nvmlDeviceGetCount") or 0
    return True, f"NVML ok: driver {drv}, CUDA {_cuda_version() or '?'}, {n} GPU(s)"


def _cuda_version() -> str | None:
    v = _call("nvmlSystemGetCudaDriverVersion_v2") or _call("nvmlSystemGetCudaDriverVersion")
    if not v:
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def gpu_count() -> int:
    return (_call("nvmlDeviceGetCount") or 0) if _init() else 0


# ---------------------------------------------------------------------------------------------- device resolution

class _Dev:
    """A resolved device: the handle we read, the physical parent (itself unless MIG) and identity."""

    def __init__(self, handle, parent, index: int | None, uuid: str | None, mig: bool, gi_id: int | None):
        self.handle, self.parent, self.index, self.uuid, self.mig, self.gi_id = handle, parent, index, uuid, mig, gi_id


def _resolve(index_or_uuid: int | str) -> _Dev | None:
    if not _init():
        return None
    key = index_or_uuid
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key.strip())
    if isinstance(key, int):
        h = _call("nvmlDeviceGetHandleByIndex", key)
    else:
        h = _call("nvmlDeviceGetHandleByUUID", str(key).strip())
    if h is None:
        return None
    mig = bool(_call("nvmlDeviceIsMigDeviceHandle", h))
    parent = _call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", h) if mig else h
    if parent is None:
        parent = h
    index = _call("nvmlDeviceGetIndex", parent)
    uuid = _text(_call("nvmlDeviceGetUUID", h))
    gi_id = _call("nvmlDeviceGetGpuInstanceId", h) if mig else None
    return _Dev(h, parent, index, uuid, mig, gi_id)


def nvml_indices_for_cuda_visible(cuda_visible: str | None, device_order: str | None = None) -> list[int] | None:
    """NVML indices of the GPUs a process with this CUDA_VISIBLE_DEVICES sees, in CUDA order. None = cannot tell.

    Integer entries equal NVML indices only when CUDA_DEVICE_ORDER=PCI_BUS_ID (NVML's order); under CUDA's default
    FASTEST_FIRST order they may not (mixed GPU models), so None is returned for them. UUID entries always map.
    An unset CUDA_VISIBLE_DEVICES means every GPU."""
    order = device_order if device_order is not None else os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    if cuda_visible is None:
        n = gpu_count()
        return list(range(n)) if order == "PCI_BUS_ID" or n <= 1 else None
    out: list[int] = []
    for tok in [t.strip() for t in cuda_visible.split(",") if t.strip()]:
        if tok.lstrip("-").isdigit():
            if int(tok) < 0:
                break  # CUDA stops at the first invalid entry
            if order != "PCI_BUS_ID" and gpu_count() > 1:
                return None
            out.append(int(tok))
        else:
            d = _resolve(tok)
            if d is None or d.index is None:
                return None
            out.append(d.index)
    return out


# ---------------------------------------------------------------------------------------------------- sampling

def _field_values(handle, ids: tuple[int, ...], key) -> dict[int, float | None]:
    vals = _call("nvmlDeviceGetFieldValues", handle, tuple(ids), key=key)
    out: dict[int, float | None] = {i: None for i in ids}
    if vals is None:
        return out
    for fv in vals:
        try:
            if fv.nvmlReturn != 0:
                continue
            u, t = fv.value, fv.valueType
            v = {0: u.dVal, 1: u.uiVal, 2: u.ulVal, 3: u.ullVal, 4: u.sllVal, 5: u.siVal, 6: u.usVal}.get(t)
            if v is not None:
                out[int(fv.fieldId)] = float(v)
        except Exception:
            continue
    return out


class _Reader:
    """Reads one device. Holds what a rate needs between samples (GPM samples, PCIe byte counters)."""

    def __init__(self, key: int | str, energy_interval_s: float = 0.0):
        self.key = key
        self.energy_interval_s = energy_interval_s
        self._energy_t: float | None = None     # monotonic time of the last energy-counter read
        self.dev = _resolve(key)
        self.gpm_ok = False
        self._gpm_prev = None
        self._pcie_prev: tuple[float, float, float] | None = None  # (t, tx bytes, rx bytes)
        if self.dev is None:
            return
        d = self.dev
        sup = _call("nvmlGpmQueryDeviceSupport", d.parent, key=self._k(d.parent))
        self.gpm_ok = bool(sup is not None and getattr(sup, "isSupportedDevice", 0))

    def _k(self, h) -> tuple:
        return ("dev", self.key, h is self.dev.parent)

    def _gpm_sample(self):
        d = self.dev
        s = _call("nvmlGpmSampleAlloc")
        if s is None:
            return None
        if d.mig and d.gi_id is not None:
            ok = _call("nvmlGpmMigSampleGet", d.parent, d.gi_id, s)
        else:
            ok = _call("nvmlGpmSampleGet", d.parent, s)
        if ok is None:
            _call("nvmlGpmSampleFree", s)
            return None
        return s

    def _gpm_metrics(self) -> dict[int, float | None]:
        out: dict[int, float | None] = {m: None for m in _GPM_METRICS}
        if not self.gpm_ok or _pynvml is None:
            return out
        cur = self._gpm_sample()
        prev, self._gpm_prev = self._gpm_prev, cur
        if prev is None or cur is None:
            if prev is not None:
                _call("nvmlGpmSampleFree", prev)
            return out
        try:
            mg = _pynvml.c_nvmlGpmMetricsGet_t()
            mg.version = getattr(_pynvml, "NVML_GPM_METRICS_GET_VERSION", 1)
            mg.numMetrics = len(_GPM_METRICS)
            mg.sample1, mg.sample2 = prev, cur
            for i, m in enumerate(_GPM_METRICS):
                mg.metrics[i].metricId = m
            res = _call("nvmlGpmMetricsGet", mg)
            if res is not None:
                for i, m in enumerate(_GPM_METRICS):
                    if res.metrics[i].nvmlReturn == 0:
                        out[m] = float(res.metrics[i].value)
        except Exception as e:
            _S.errors += 1
            _S.last_error = f"GPM: {e}"
        finally:
            _call("nvmlGpmSampleFree", prev)
        return out

    def sample(self) -> dict:
        row: dict[str, Any] = {k: None for k in SAMPLE_KEYS}
        d = self.dev
        if d is None:
            self.dev = _resolve(self.key)  # a GPU can come back (driver reload); try again next time
            row["extra"] = {"error": f"GPU {self.key!r} not found"}
            return row
        h, p = d.handle, d.parent
        kh, kp = self._k(h), self._k(p)
        row["gpu_index"] = d.index
        row["gpu_uuid"] = d.uuid if not d.mig else _text(_call("nvmlDeviceGetUUID", p, key=kp))
        extra: dict[str, Any] = {}
        if d.mig:
            extra.update(mig=True, mig_uuid=d.uuid, gpu_instance_id=d.gi_id)

        util = None if d.mig else _call("nvmlDeviceGetUtilizationRates", h, key=kh)
        if util is not None:
            row["util_gpu"], row["util_mem"] = float(util.gpu), float(util.memory)
        mem = _call("nvmlDeviceGetMemoryInfo", h, key=kh)
        if mem is not None:
            row["mem_used_mb"], row["mem_total_mb"] = mem.used / MIB, mem.total / MIB

        t_now = time.monotonic()
        energy_due = self._energy_t is None or t_now - self._energy_t >= self.energy_interval_s
        fields = _SAMPLE_FIELDS + ((FI_TOTAL_ENERGY,) if energy_due else ()) + (
            () if self.gpm_ok else (FI_PCIE_COUNT_TX_BYTES, FI_PCIE_COUNT_RX_BYTES))
        f = {FI_TOTAL_ENERGY: None, FI_PCIE_COUNT_TX_BYTES: None, FI_PCIE_COUNT_RX_BYTES: None,
             **_field_values(p, fields, kp)}
        inst = f[FI_POWER_INSTANT] / 1000 if f[FI_POWER_INSTANT] is not None else None
        avg = f[FI_POWER_AVERAGE] / 1000 if f[FI_POWER_AVERAGE] is not None else None
        if avg is None:
            mw = _call("nvmlDeviceGetPowerUsage", p, key=kp)
            avg = mw / 1000 if mw is not None else None
        row["power_avg_w"] = avg
        row["power_w"] = inst if inst is not None else avg
        extra["power_w_source"] = "instant" if inst is not None else ("average" if avg is not None else None)
        if energy_due:
            self._energy_t = t_now
            if f[FI_TOTAL_ENERGY] is not None:
                row["energy_j"] = f[FI_TOTAL_ENERGY] / 1000
            else:
                mj = _call("nvmlDeviceGetTotalEnergyConsumption", p, key=kp)
                row["energy_j"] = mj / 1000 if mj is not None else None
        row["temp_mem_c"] = f[FI_MEMORY_TEMP] if f[FI_MEMORY_TEMP] else None  # 0 = no HBM sensor

        temp = _call("nvmlDeviceGetTemperatureV", p, 0, key=kp)  # NVML_TEMPERATURE_GPU
        if temp is None:  # older driver/binding
            temp = _call("nvmlDeviceGetTemperature", p, 0, key=kp)
        row["temp_gpu_c"] = float(temp) if temp is not None else None
        sm = _call("nvmlDeviceGetClockInfo", p, 1, key=kp)      # NVML_CLOCK_SM
        mc = _call("nvmlDeviceGetClockInfo", p, 2, key=kp)      # NVML_CLOCK_MEM
        row["sm_clock_mhz"] = float(sm) if sm is not None else None
        row["mem_clock_mhz"] = float(mc) if mc is not None else None
        reasons = _call("nvmlDeviceGetCurrentClocksEventReasons", p, key=kp)
        if reasons is None:
            reasons = _call("nvmlDeviceGetCurrentClocksThrottleReasons", p, key=kp)
        row["throttle_reasons"] = int(reasons) if reasons is not None else None
        ps = _call("nvmlDeviceGetPerformanceState", p, key=kp)
        row["pstate"] = int(ps) if ps is not None and ps != 32 else None  # 32 = NVML_PSTATE_UNKNOWN

        g = self._gpm_metrics()
        row["sm_active"], row["tensor_active"], row["dram_bw_util"] = (
            g[GPM_SM_UTIL], g[GPM_ANY_TENSOR_UTIL], g[GPM_DRAM_BW_UTIL])

        # PCIe: GPM rates (cheap) > byte-counter deltas (cheap, newer drivers) > nvmlDeviceGetPcieThroughput
        # (blocks ~20 ms per direction inside the driver, so it is the last resort).
        tx = rx = None
        if g[GPM_PCIE_TX_PER_SEC] is not None and g[GPM_PCIE_RX_PER_SEC] is not None:
            tx, rx = g[GPM_PCIE_TX_PER_SEC] * MIB / 1000, g[GPM_PCIE_RX_PER_SEC] * MIB / 1000
            extra["pcie_source"] = "gpm"
        elif f[FI_PCIE_COUNT_TX_BYTES] is not None and f[FI_PCIE_COUNT_RX_BYTES] is not None:
            cur = (t_now, f[FI_PCIE_COUNT_TX_BYTES], f[FI_PCIE_COUNT_RX_BYTES])
            prev, self._pcie_prev = self._pcie_prev, cur
            if prev is not None and cur[0] > prev[0] and cur[1] >= prev[1] and cur[2] >= prev[2]:
                dt = cur[0] - prev[0]
                tx, rx = (cur[1] - prev[1]) / dt / 1000, (cur[2] - prev[2]) / dt / 1000
            extra["pcie_source"] = "counter"
        elif not self.gpm_ok:
            t1 = _call("nvmlDeviceGetPcieThroughput", p, 0, key=kp)
            r1 = _call("nvmlDeviceGetPcieThroughput", p, 1, key=kp)
            tx, rx = (float(t1) if t1 is not None else None), (float(r1) if r1 is not None else None)
            extra["pcie_source"] = "throughput"
        row["pcie_tx_kbs"], row["pcie_rx_kbs"] = tx, rx
        row["extra"] = {k: v for k, v in extra.items() if v is not None} or None
        return row

    def close(self) -> None:
        if self._gpm_prev is not None:
            _call("nvmlGpmSampleFree", self._gpm_prev)
            self._gpm_prev = None


def make_reader(index_or_uuid: int | str, energy_interval_s: float = 0.0) -> _Reader | None:
    """A private reader (own GPM/PCIe rate state): what NvmlSource uses. None without NVML.
    energy_interval_s > 0: read the (expensive) energy counter at most that often; other rows get energy_j None."""
    return _Reader(index_or_uuid, energy_interval_s) if _init() else None


def read_sample(index_or_uuid: int | str) -> dict:
    """One sample of one GPU: keys exactly SAMPLE_KEYS; None where unsupported. Never raises.
    Rates (GPM, PCIe counters) are taken since this function's previous call for that GPU (None the first time)."""
    if not _init():
        row = {k: None for k in SAMPLE_KEYS}
        row["extra"] = {"error": _S.reason}
        return row
    with _S.lock:
        r = _S.readers.get(index_or_uuid)
        if r is None:
            r = _S.readers[index_or_uuid] = _Reader(index_or_uuid)
    try:
        return r.sample()
    except Exception as e:  # belt and braces: sample() only calls through _call, but never raise
        row = {k: None for k in SAMPLE_KEYS}
        row["extra"] = {"error": f"read_sample: {e}"}
        return row


# ------------------------------------------------------------------------------------------------ slow facts

def list_gpus() -> list[dict]:
    """Detected physical GPUs (NVML index order), with their MIG slices. [] without NVML."""
    if not _init():
        return []
    driver, cuda = _text(_call("nvmlSystemGetDriverVersion")), _cuda_version()
    out = []
    for i in range(gpu_count()):
        h = _call("nvmlDeviceGetHandleByIndex", i)
        if h is None:
            out.append({"index": i, "error": "handle not available"})
            continue
        mem = _call("nvmlDeviceGetMemoryInfo", h)
        mig = _call("nvmlDeviceGetMigMode", h)
        cc = _call("nvmlDeviceGetCudaComputeCapability", h)
        pci = _call("nvmlDeviceGetPciInfo", h)
        limit = _call("nvmlDeviceGetPowerManagementDefaultLimit", h)
        info = {
            "index": i,
            "uuid": _text(_call("nvmlDeviceGetUUID", h)),
            "name": _text(_call("nvmlDeviceGetName", h)),
            "memory_total_mb": mem.total / MIB if mem is not None else None,
            "mig_mode": bool(mig[0]) if mig else None,
            "mig_mode_pending": bool(mig[1]) if mig else None,
            "driver": driver,
            "cuda": cuda,
            "architecture": _ARCH.get(_call("nvmlDeviceGetArchitecture", h)),
            "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
            "pci_bus_id": _text(getattr(pci, "busId", None)) if pci is not None else None,
            "power_limit_default_w": limit / 1000 if limit is not None else None,
            "max_sm_clock_mhz": _call("nvmlDeviceGetMaxClockInfo", h, 1),
            "mig_devices": _mig_devices(h) if mig and mig[0] else [],
        }
        out.append(info)
    return out


def _mig_devices(h) -> list[dict]:
    out = []
    for j in range(_call("nvmlDeviceGetMaxMigDeviceCount", h) or 0):
        m = _call("nvmlDeviceGetMigDeviceHandleByIndex", h, j)
        if m is None:
            continue
        mem = _call("nvmlDeviceGetMemoryInfo", m)
        out.append({"uuid": _text(_call("nvmlDeviceGetUUID", m)), "gpu_instance_id": _call("nvmlDeviceGetGpuInstanceId", m),
                    "memory_total_mb": mem.total / MIB if mem is not None else None})
    return out


def health_facts(index_or_uuid: int | str) -> dict:
    """Slow-changing facts, taken at run start and end; health.verdict compares the two. None = not supported.
    Counters (ECC, remapped rows, retired pages, PCIe replays, violation times) are cumulative: compare, don't read."""
    d = _resolve(index_or_uuid)
    if d is None:
        return {"available": False, "reason": _S.reason or f"GPU {index_or_uuid!r} not found", "t_ns": time.time_ns()}
    h, p = d.handle, d.parent
    ecc_mode = _call("nvmlDeviceGetEccMode", p)
    mig = _call("nvmlDeviceGetMigMode", p)
    f = _field_values(p, (FI_RETIRED_PENDING, FI_PCIE_REPLAY_COUNTER, FI_REMAPPED_COR, FI_REMAPPED_UNC,
                          FI_REMAPPED_PENDING, FI_REMAPPED_FAILURE), None)
    remap = _call("nvmlDeviceGetRemappedRows", p)

    def ecc(err_type: int, counter: int):
        v = _call("nvmlDeviceGetTotalEccErrors", p, err_type, counter)
        return int(v) if v is not None else None

    def retired(cause: int):
        v = _call("nvmlDeviceGetRetiredPages", p, cause)
        return len(v) if v is not None else None

    def watts(fn: str):
        v = _call(fn, p)
        return v / 1000 if v is not None else None

    def violation(policy: int):
        v = _call("nvmlDeviceGetViolationStatus", p, policy)
        # violationTime is ns of clocks held down; referenceTime is a CPU timestamp in µs (nvml.h).
        return {"violation_ns": int(v.violationTime), "reference_us": int(v.referenceTime)} if v is not None else None

    def threshold(t: int):
        v = _call("nvmlDeviceGetTemperatureThreshold", p, t)
        return float(v) if v else None

    cons = _call("nvmlDeviceGetPowerManagementLimitConstraints", p)
    facts = {
        "available": True,
        "t_ns": time.time_ns(),
        "index": d.index,
        "uuid": _text(_call("nvmlDeviceGetUUID", p)),
        "mig_device_uuid": d.uuid if d.mig else None,
        "name": _text(_call("nvmlDeviceGetName", p)),
        "serial": _text(_call("nvmlDeviceGetSerial", p)),
        "vbios": _text(_call("nvmlDeviceGetVbiosVersion", p)),
        "driver": _text(_call("nvmlSystemGetDriverVersion")),
        "cuda": _cuda_version(),
        "nvml": _text(_call("nvmlSystemGetNVMLVersion")),
        "mig_mode": bool(mig[0]) if mig else None,
        "mig_mode_pending": bool(mig[1]) if mig else None,
        "persistence_mode": _call("nvmlDeviceGetPersistenceMode", p),
        "ecc_mode": bool(ecc_mode[0]) if ecc_mode else None,
        "ecc_mode_pending": bool(ecc_mode[1]) if ecc_mode else None,
        # (error type: 0 corrected, 1 uncorrected) x (counter: 0 volatile since boot, 1 aggregate lifetime)
        "ecc_volatile_corrected": ecc(0, 0),
        "ecc_volatile_uncorrected": ecc(1, 0),
        "ecc_aggregate_corrected": ecc(0, 1),
        "ecc_aggregate_uncorrected": ecc(1, 1),
        "retired_pages_sbe": retired(0),
        "retired_pages_dbe": retired(1),
        "retired_pages_pending": _as_int(f[FI_RETIRED_PENDING]),
        "remapped_rows_correctable": remap[0] if remap else _as_int(f[FI_REMAPPED_COR]),
        "remapped_rows_uncorrectable": remap[1] if remap else _as_int(f[FI_REMAPPED_UNC]),
        "remapped_rows_pending": bool(remap[2]) if remap else _as_bool(f[FI_REMAPPED_PENDING]),
        "remapped_rows_failure": bool(remap[3]) if remap else _as_bool(f[FI_REMAPPED_FAILURE]),
        "pcie_replay_counter": _as_int(f[FI_PCIE_REPLAY_COUNTER]),
        "pcie_link_gen": _call("nvmlDeviceGetCurrPcieLinkGeneration", p),
        "pcie_link_gen_max": _call("nvmlDeviceGetMaxPcieLinkGeneration", p),
        "pcie_link_width": _call("nvmlDeviceGetCurrPcieLinkWidth", p),
        "pcie_link_width_max": _call("nvmlDeviceGetMaxPcieLinkWidth", p),
        "power_limit_w": watts("nvmlDeviceGetPowerManagementLimit"),
        "power_limit_default_w": watts("nvmlDeviceGetPowerManagementDefaultLimit"),
        "power_limit_enforced_w": watts("nvmlDeviceGetEnforcedPowerLimit"),
        "power_limit_min_w": cons[0] / 1000 if cons else None,
        "power_limit_max_w": cons[1] / 1000 if cons else None,
        "max_sm_clock_mhz": _call("nvmlDeviceGetMaxClockInfo", p, 1),
        "max_mem_clock_mhz": _call("nvmlDeviceGetMaxClockInfo", p, 2),
        "temp_slowdown_c": threshold(1),   # NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        "temp_shutdown_c": threshold(0),
        "temp_gpu_max_c": threshold(3),    # max operating temperature for the GPU
        "temp_mem_max_c": threshold(2),    # max operating temperature for HBM
        # Cumulative time the clocks were held down by a policy (NVML_PERF_POLICY_POWER = 0, THERMAL = 1).
        "violation_power": violation(0),
        "violation_thermal": violation(1),
        "pstate": _call("nvmlDeviceGetPerformanceState", p),
        "architecture": _ARCH.get(_call("nvmlDeviceGetArchitecture", p)),
        "gpm_supported": bool(getattr(_call("nvmlGpmQueryDeviceSupport", p), "isSupportedDevice", 0)),
    }
    return facts


def _as_int(v: float | None) -> int | None:
    return int(v) if v is not None else None


def _as_bool(v: float | None) -> bool | None:
    return bool(v) if v is not None else None


def gpu_processes(index_or_uuid: int | str | None = None) -> list[tuple[int, int | None]]:
    """(pid, used GPU memory in bytes or None) of compute processes; index_or_uuid None = every GPU (and MIG slice).
    [] if none or unknown. PIDs are in NVML's view: inside a container without the host PID namespace they may not
    match this process's PIDs."""
    if not _init():
        return []
    if index_or_uuid is None:
        handles = []
        for i in range(gpu_count()):
            h = _call("nvmlDeviceGetHandleByIndex", i)
            if h is None:
                continue
            handles.append(h)
            mig = _call("nvmlDeviceGetMigMode", h)
            if mig and mig[0]:
                for j in range(_call("nvmlDeviceGetMaxMigDeviceCount", h) or 0):
                    m = _call("nvmlDeviceGetMigDeviceHandleByIndex", h, j)
                    if m is not None:
                        handles.append(m)
    else:
        d = _resolve(index_or_uuid)
        handles = [d.handle] if d is not None else []
    seen: dict[int, int | None] = {}
    for h in handles:
        for pr in _call("nvmlDeviceGetComputeRunningProcesses", h) or []:
            pid = int(getattr(pr, "pid", -1))
            mem = getattr(pr, "usedGpuMemory", None)
            if pid < 0:
                continue
            if pid not in seen or (seen[pid] is None and mem is not None):
                seen[pid] = int(mem) if mem is not None else None
            elif mem is not None and seen[pid] is not None:
                seen[pid] += int(mem)
    return sorted(seen.items())


def memory_holders(gpus: list[int] | None = None) -> tuple[list[tuple[int, int | None]], str | None]:
    """(pid, used bytes or None) of the processes holding memory on `gpus` (None or [] = every GPU), pids sorted,
    a pid's memory summed over the GPUs it holds; and why none could be read (None when NVML answered).
    The one adapter of gpu_processes for bench.gpu_holders (who holds a GPU before a launch) and engines.supervisor
    (which of an engine's pids still hold one after a stop)."""
    ok, why = nvml_status()
    if not ok:
        return [], f"NVML unavailable ({why}): GPU memory holders cannot be listed"
    if not gpus:
        return gpu_processes(None), None
    seen: dict[int, int | None] = {}
    for g in gpus:
        for pid, used in gpu_processes(g):
            prev = seen.get(pid)
            seen[pid] = used if prev is None else (prev + used if used is not None else prev)
    return sorted(seen.items()), None


# ----------------------------------------------------------------------------------------------------- XIDs

class XidWatcher:
    """Background thread: NVML critical-XID events -> on_xid(gpu_index, xid, t_ns). Never raises out of the thread.

    `start()` returns False (and sets `.reason`) when events cannot be registered (no NVML, not supported,
    not permitted); the run carries on without XID watching. Stop with `stop()`."""

    def __init__(self, on_xid: Callable[[int | None, int, int], None], gpus: list[int | str] | None = None,
                 poll_ms: int = 500):
        self.on_xid, self.gpus, self.poll_ms = on_xid, gpus, poll_ms
        self.reason = ""
        self.registered: list[int] = []
        self.events = 0
        self.callback_errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._set = None

    def start(self) -> bool:
        if not _init():
            self.reason = _S.reason
            return False
        es = _call("nvmlEventSetCreate")
        if es is None:
            self.reason = "NVML event sets not available"
            return False
        keys = self.gpus if self.gpus is not None else list(range(gpu_count()))
        for k in keys:
            d = _resolve(k)
            if d is None:
                continue
            # pynvml returns None on success, so success is told by `ok`, not by the value.
            ok, _, err = _try("nvmlDeviceRegisterEvents", d.parent, XID_EVENT, es)
            if ok:
                if d.index is not None and d.index not in self.registered:
                    self.registered.append(d.index)
            else:
                self.reason = f"GPU {k}: XID events not available ({err or 'not in this binding'})"
        if not self.registered:
            _call("nvmlEventSetFree", es)
            self.reason = self.reason or "no GPU accepted XID event registration"
            return False
        self._set = es
        self._thread = threading.Thread(target=self._run, name="melt-xid-watcher", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            ok, data, err = _try("nvmlEventSetWait_v2", self._set, self.poll_ms)
            if not ok:
                if err is not None and _err_code(err) == 10:  # NVML_ERROR_TIMEOUT: no event in this window
                    continue
                self.reason = f"XID wait failed: {err or 'nvmlEventSetWait_v2 missing'}"
                self._stop.wait(self.poll_ms / 1000)
                continue
            t_ns = time.time_ns()
            if not (int(getattr(data, "eventType", 0)) & XID_EVENT):
                continue
            idx = _call("nvmlDeviceGetIndex", data.device)
            self.events += 1
            try:
                self.on_xid(idx, int(data.eventData), t_ns)
            except Exception:
                self.callback_errors += 1

    def stop(self) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_ms / 1000 + 5)
        if self._set is not None:
            _call("nvmlEventSetFree", self._set)
            self._set = None
        return {"registered": self.registered, "events": self.events, "callback_errors": self.callback_errors,
                "reason": self.reason}
