"""telemetry.nvml without a GPU: the real no-driver path of this machine, and the wrapper's error-to-None rule.

This machine has no NVIDIA driver, so the first tests exercise the real pynvml failing to load libnvidia-ml.
The wrapper test swaps in a stand-in pynvml module (no real NVML exists here) whose functions raise the real
pynvml exception classes (NVMLError_NotSupported, ...) and return the real ctypes field-value structs."""
import types

import pynvml
import pytest

from storage.models import TelemetrySample
from telemetry import nvml, sampler


@pytest.fixture(autouse=True)
def _fresh_nvml():
    nvml._reset()
    yield
    nvml._reset()


def test_sample_keys_match_storage_columns():
    cols = {c.name for c in TelemetrySample.__table__.columns} - {"id", "run_id"}
    assert set(nvml.SAMPLE_KEYS) == cols - {"t_ns", "simulated"}
    assert set(sampler.ROW_KEYS) == cols


def test_no_driver_is_a_value_not_an_exception():
    ok, reason = nvml.nvml_status()
    assert ok is False
    assert "NVML library not found" in reason
    assert nvml.list_gpus() == []
    assert nvml.gpu_count() == 0
    row = nvml.read_sample(0)
    assert set(row) == set(nvml.SAMPLE_KEYS)
    assert all(row[k] is None for k in nvml.SAMPLE_KEYS if k != "extra")
    assert "NVML" in row["extra"]["error"]
    facts = nvml.health_facts("GPU-1234")
    assert facts["available"] is False and facts["reason"] == reason
    assert nvml.gpu_processes() == [] and nvml.gpu_processes(0) == []
    w = nvml.XidWatcher(lambda *a: None)
    assert w.start() is False and w.reason == reason
    assert w.stop()["registered"] == []
    assert nvml.make_reader(0) is None


def test_make_source_without_driver_carries_on():
    src, msg = sampler.make_source("vllm", "http://127.0.0.1:8000", [0])
    assert isinstance(src, sampler.NullSource)
    assert msg.startswith("no GPU telemetry available: NVML library not found")
    s = sampler.TelemetrySampler(src, hz=4.0, on_batch=lambda rows: pytest.fail("no rows expected"))
    s.start()
    stats = s.stop()
    assert stats["samples"] == 0 and stats["errors"] == 0 and stats["source"] == "none"
    assert "NVML" in stats["reason"]


def test_make_source_kinds():
    src, msg = sampler.make_source("sim", "http://127.0.0.1:9", None)
    assert isinstance(src, sampler.SimSource) and src.simulated and "SIMULATED" in msg
    src, msg = sampler.make_source("sim", None, None)
    assert isinstance(src, sampler.NullSource)
    src, msg = sampler.make_source("openai", "http://10.1.2.3:8000", [0])
    assert isinstance(src, sampler.NullSource) and "another host" in msg


def test_cuda_visible_mapping_without_nvml():
    # Integer entries are NVML indices only under PCI_BUS_ID order.
    assert nvml.nvml_indices_for_cuda_visible("2,0", device_order="PCI_BUS_ID") == [2, 0]
    assert nvml.nvml_indices_for_cuda_visible("1,-1,0", device_order="PCI_BUS_ID") == [1]
    # UUIDs need NVML to resolve: unknown without it.
    assert nvml.nvml_indices_for_cuda_visible("GPU-abc", device_order="PCI_BUS_ID") is None


# ------------------------------------------------------------------------------ stand-in pynvml for the wrapper

def _err(code):
    return pynvml.NVMLError(code)  # maps to the real subclass, e.g. NVMLError_NotSupported


def _fields(spec: dict[int, tuple[int, float | None]]):
    """Real c_nvmlFieldValue_t array: {field id: (nvml return code, value as double)}."""
    arr = (pynvml.c_nvmlFieldValue_t * len(spec))()
    for i, (fid, (ret, val)) in enumerate(spec.items()):
        arr[i].fieldId = fid
        arr[i].nvmlReturn = ret
        arr[i].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG if fid == 83 else pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
        if val is not None:
            if fid == 83:
                arr[i].value.ullVal = int(val)
            else:
                arr[i].value.uiVal = int(val)
    return arr


class FakeNvml(types.SimpleNamespace):
    """Answers like one H100-ish GPU where some queries are unsupported, forbidden, missing or broken."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}
        self.NVMLError = pynvml.NVMLError

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name.startswith("nvml") and callable(attr):
            object.__getattribute__(self, "_count")(name)
        return attr

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlSystemGetDriverVersion(self):
        return b"580.159.04"

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return 13000

    def nvmlDeviceGetHandleByIndex(self, i):
        if i != 0:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return "h0"

    def nvmlDeviceIsMigDeviceHandle(self, h):
        raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetIndex(self, h):
        return 0

    def nvmlDeviceGetUUID(self, h):
        return "GPU-0000-fake"

    def nvmlGpmQueryDeviceSupport(self, h):
        raise _err(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    def nvmlDeviceGetUtilizationRates(self, h):
        raise _err(pynvml.NVML_ERROR_NO_PERMISSION)

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(used=40 * 2**30, total=80 * 2**30, free=40 * 2**30)

    def nvmlDeviceGetFieldValues(self, h, ids):
        known = {186: (0, 776_000), 185: (0, 695_000), 82: (0, 61), 83: (0, 123_456_789),
                 197: (pynvml.NVML_ERROR_NOT_SUPPORTED, None), 198: (pynvml.NVML_ERROR_NOT_SUPPORTED, None)}
        return _fields({i: known.get(i, (pynvml.NVML_ERROR_NOT_SUPPORTED, None)) for i in ids})

    # nvmlDeviceGetTemperatureV deliberately missing (older binding): the wrapper falls back.
    def nvmlDeviceGetTemperature(self, h, sensor):
        return 54

    def nvmlDeviceGetClockInfo(self, h, clock):
        raise RuntimeError("driver hiccup")  # not an NVMLError: still None, never raised

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return 0x4

    def nvmlDeviceGetPerformanceState(self, h):
        return 0

    def nvmlDeviceGetPcieThroughput(self, h, counter):
        raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetTotalEccErrors(self, h, err_type, counter):
        raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [types.SimpleNamespace(pid=4242, usedGpuMemory=2**30), types.SimpleNamespace(pid=77, usedGpuMemory=None)]


@pytest.fixture
def fake(monkeypatch):
    f = FakeNvml()
    monkeypatch.setattr(nvml, "_pynvml", f)
    nvml._reset()
    return f


def test_wrapper_turns_nvml_errors_into_none(fake):
    ok, reason = nvml.nvml_status()
    assert ok and "580.159.04" in reason and "CUDA 13.0" in reason
    row = nvml.read_sample(0)
    assert set(row) == set(nvml.SAMPLE_KEYS)
    assert row["gpu_index"] == 0 and row["gpu_uuid"] == "GPU-0000-fake"
    assert row["util_gpu"] is None and row["util_mem"] is None          # NoPermission
    assert row["sm_clock_mhz"] is None and row["mem_clock_mhz"] is None  # arbitrary exception
    assert row["sm_active"] is None and row["tensor_active"] is None     # GPM FunctionNotFound
    assert row["pcie_tx_kbs"] is None                                    # NotSupported
    assert row["power_w"] == pytest.approx(776.0)                        # field 186, mW -> W
    assert row["power_avg_w"] == pytest.approx(695.0)                    # field 185
    assert row["energy_j"] == pytest.approx(123_456.789)                 # field 83, mJ -> J
    assert row["temp_mem_c"] == 61 and row["temp_gpu_c"] == 54
    assert row["mem_used_mb"] == 40 * 1024 and row["mem_total_mb"] == 80 * 1024
    assert row["throttle_reasons"] == 0x4 and row["pstate"] == 0
    assert row["extra"]["power_w_source"] == "instant"


def test_unsupported_calls_are_not_repeated(fake):
    for _ in range(5):
        nvml.read_sample(0)
    # NotSupported / NoPermission are remembered per device: asked once, then skipped (cheap 4 Hz sampling).
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 1
    assert fake.calls["nvmlDeviceGetPcieThroughput"] == 2  # tx and rx, once each
    # A non-NVML failure may be transient: asked every time.
    assert fake.calls["nvmlDeviceGetClockInfo"] == 10
    assert nvml._S.errors >= 10 and "driver hiccup" in nvml._S.last_error


def test_facts_and_processes_through_the_wrapper(fake):
    facts = nvml.health_facts(0)
    assert facts["available"] is True and facts["index"] == 0
    assert facts["ecc_volatile_uncorrected"] is None   # NotSupported -> None
    assert facts["driver"] == "580.159.04"
    assert facts["power_limit_w"] is None              # function missing from the stand-in -> None
    assert nvml.gpu_processes(0) == [(77, None), (4242, 2**30)]
    assert nvml.gpu_processes() == [(77, None), (4242, 2**30)]
    gpus = nvml.list_gpus()
    assert len(gpus) == 1 and gpus[0]["uuid"] == "GPU-0000-fake" and gpus[0]["memory_total_mb"] == 80 * 1024
    src, msg = sampler.make_source("vllm", "http://127.0.0.1:8000", None)
    assert isinstance(src, sampler.NvmlSource) and msg == "GPU telemetry: NVML: GPU(s) 0"
    assert src.health_facts()["0"]["uuid"] == "GPU-0000-fake"
    rows = src.read()
    assert len(rows) == 1 and rows[0]["energy_j"] is not None   # first read takes the energy counter...
    assert src.read()[0]["energy_j"] is None                    # ...then at most once per energy_interval_s
    src.close()
    # Unknown GPU: a value saying so, no exception.
    assert nvml.health_facts(3)["available"] is False
    assert nvml.read_sample(3)["extra"]["error"].startswith("GPU 3")


def test_memory_holders_without_driver():
    from engines.supervisor import _gpu_pids

    found, why = nvml.memory_holders()
    assert found == [] and why.startswith("NVML unavailable (NVML library not found")
    assert why.endswith("GPU memory holders cannot be listed")
    assert nvml.memory_holders([0, 1])[0] == []
    assert _gpu_pids() is None          # the supervisor's reading of the same answer


def test_memory_holders_through_the_wrapper(fake):
    from engines.supervisor import _gpu_pids

    assert nvml.memory_holders() == ([(77, None), (4242, 2**30)], None)
    assert nvml.memory_holders([]) == nvml.memory_holders(None) == nvml.memory_holders([0])
    assert _gpu_pids() == {77, 4242}


def test_memory_holders_sums_a_pid_over_the_gpus_asked(fake, monkeypatch):
    from engines.supervisor import _gpu_pids

    per_gpu = {0: [(5, 10), (7, None), (9, None)], 1: [(5, 4), (7, 3), (9, None)], 2: [(11, 1)]}
    monkeypatch.setattr(nvml, "gpu_processes", lambda g=None: per_gpu.get(g, [(1, 1)]))
    assert nvml.memory_holders([1, 0]) == ([(5, 14), (7, 3), (9, None)], None)
    assert nvml.memory_holders([2]) == ([(11, 1)], None)
    assert nvml.memory_holders() == ([(1, 1)], None)     # every GPU: gpu_processes(None) as it answers
    assert _gpu_pids() == {1}

    def broken(g=None):
        raise RuntimeError("driver hiccup")
    monkeypatch.setattr(nvml, "gpu_processes", broken)
    with pytest.raises(RuntimeError):
        nvml.memory_holders()
    assert _gpu_pids() is None          # a broken driver must not break stop()
