"""Text report of the machine's GPUs for `python -m bench gpus`: detected GPUs, live state, health facts."""
from __future__ import annotations

from telemetry import nvml
from telemetry.energy import decode_throttle

NO_GPU = "Melt will use simulated telemetry with the sim engine"


def _fmt(v, unit: str = "", nd: int = 0) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        v = round(v, nd) if nd else int(round(v))
    return f"{v}{unit}"


def gpus_report() -> str:
    ok, reason = nvml.nvml_status()
    if not ok:
        return f"no NVIDIA GPU/driver detected ({reason}): {NO_GPU}."
    lines = [reason, ""]
    for g in nvml.list_gpus():
        i = g["index"]
        s = nvml.read_sample(i)
        f = nvml.health_facts(i)
        lines.append(f"GPU {i}: {g.get('name') or '?'}  {g.get('uuid') or ''}")
        lines.append(f"  arch {g.get('architecture') or '?'}, compute {g.get('compute_capability') or '?'}, "
                     f"PCI {g.get('pci_bus_id') or '?'}, memory {_fmt(g.get('memory_total_mb'), ' MiB')}, "
                     f"MIG {'on' if g.get('mig_mode') else 'off'}"
                     + (" (change pending reset)" if g.get("mig_mode_pending") != g.get("mig_mode") else ""))
        for m in g.get("mig_devices") or []:
            lines.append(f"    MIG slice {m.get('uuid')} (GPU instance {m.get('gpu_instance_id')}, "
                         f"{_fmt(m.get('memory_total_mb'), ' MiB')})")
        reasons = decode_throttle(s.get("throttle_reasons"))
        lines.append(f"  now: util {_fmt(s.get('util_gpu'), '%')}, memory {_fmt(s.get('mem_used_mb'), ' MiB')} used, "
                     f"power {_fmt(s.get('power_w'), ' W')} (avg {_fmt(s.get('power_avg_w'), ' W')}), "
                     f"GPU {_fmt(s.get('temp_gpu_c'), ' °C')}, HBM {_fmt(s.get('temp_mem_c'), ' °C')}, "
                     f"SM {_fmt(s.get('sm_clock_mhz'), ' MHz')}, P{_fmt(s.get('pstate'))}, "
                     f"clock events: {', '.join(reasons) if reasons else 'none'}")
        lines.append(f"  power limit {_fmt(f.get('power_limit_w'), ' W')} (default {_fmt(f.get('power_limit_default_w'), ' W')}), "
                     f"max SM clock {_fmt(f.get('max_sm_clock_mhz'), ' MHz')}, "
                     f"slowdown at {_fmt(f.get('temp_slowdown_c'), ' °C')}, "
                     f"PCIe gen {_fmt(f.get('pcie_link_gen'))}/{_fmt(f.get('pcie_link_gen_max'))} "
                     f"x{_fmt(f.get('pcie_link_width'))}/x{_fmt(f.get('pcie_link_width_max'))}")
        lines.append(f"  ECC {'on' if f.get('ecc_mode') else 'off' if f.get('ecc_mode') is False else 'n/a'}: "
                     f"volatile uncorrected {_fmt(f.get('ecc_volatile_uncorrected'))}, "
                     f"aggregate uncorrected {_fmt(f.get('ecc_aggregate_uncorrected'))}, "
                     f"remapped rows {_fmt(f.get('remapped_rows_correctable'))} corr / "
                     f"{_fmt(f.get('remapped_rows_uncorrectable'))} unc"
                     + (", REMAP PENDING" if f.get("remapped_rows_pending") else "")
                     + (", REMAP FAILED" if f.get("remapped_rows_failure") else "")
                     + f", retired pages {_fmt(f.get('retired_pages_sbe'))} sbe / {_fmt(f.get('retired_pages_dbe'))} dbe")
        procs = nvml.gpu_processes(i)
        if procs:
            lines.append("  processes: " + ", ".join(
                f"pid {pid} ({_fmt(mem / 2**20 if mem is not None else None, ' MiB')})" for pid, mem in procs))
        lines.append("")
    lines.append("GPU numbers are NVML indices (PCI bus order). CUDA_VISIBLE_DEVICES uses the same numbers only "
                 "with CUDA_DEVICE_ORDER=PCI_BUS_ID (or use the UUIDs).")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(gpus_report(), end="")
