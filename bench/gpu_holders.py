"""Melt engines still holding GPU memory that no live run owns: named before a launch, ended when the user says so.

Why: an engine that outlives its run (a sweep killed before its guardian could act, a `serve` left running by a
script, a run from another Melt history on the same box) keeps most of the GPU's memory. A new engine started there
fails minutes later with an out-of-memory error that does not say who holds the memory. So before launching on a GPU,
Melt asks NVML which processes hold memory, keeps those that carry a Melt launch tag (MELT_ENGINE_TAG in their
environment, set by engines.supervisor for every engine process), and names each with its pid, command, memory and
the run it belongs to. Dead runs are reaped first (bench.runs.reap_stale ends their engines), so what is left is
either an engine of a live run (listed, never ended: another run is using the GPU on purpose) or an orphan (no live
run of this history owns its tag), which `./melt engines orphans --end`, `./melt sweep --end-orphans` or the
Launch page's button ends — by tag, so exactly that launch's processes and never someone else's.

Processes without a Melt tag are listed too (as "not Melt's") but never ended: only processes Melt started are
Melt's to end. Without NVML (no driver, a CPU machine) there is nothing to find and `holders()` says why.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

from engines.supervisor import _tag_of, kill_tagged


@dataclass(frozen=True)
class GpuHolder:
    pid: int
    used_mib: float | None
    name: str
    cmdline: str
    tag: str | None           # MELT_ENGINE_TAG of the launch it belongs to; None = not a Melt engine
    run_id: int | None        # the run of this history whose instance carries that tag
    live: bool                # that run is alive (queued/starting/running): in use, not an orphan

    @property
    def orphan(self) -> bool:
        return self.tag is not None and not self.live

    def describe(self) -> str:
        mem = f"{self.used_mib:,.0f} MiB" if self.used_mib is not None else "GPU memory"
        who = (f"Melt engine of live run #{self.run_id}" if self.live else
               f"orphaned Melt engine (run #{self.run_id})" if self.orphan and self.run_id else
               "orphaned Melt engine (no live run of this history)" if self.orphan else "not a Melt process")
        return f"pid {self.pid} holds {mem}: {who} — {self.cmdline[:120]}"


def nvml_holders(gpus: list[int] | None = None) -> tuple[list[tuple[int, int | None]], str | None]:
    """(pid, used bytes) of the GPU processes on `gpus` (None = every GPU), and why none could be read (or None)."""
    from telemetry.nvml import memory_holders

    return memory_holders(gpus)


def _tag_runs(db: str | Path | None) -> dict[str, tuple[int, bool]]:
    """proc_tag -> (run id, run alive?) for every engine instance in the history."""
    from sqlalchemy import select

    from storage.db import open_db
    from storage.models import EngineInstance, Run, RunStatus

    alive = {RunStatus.queued, RunStatus.starting, RunStatus.running}
    with open_db(db)() as s:
        rows = s.execute(select(EngineInstance.proc_tag, Run.id, Run.status)
                         .join(Run, EngineInstance.run_id == Run.id)
                         .where(EngineInstance.proc_tag.is_not(None))).all()
    return {tag: (rid, status in alive) for tag, rid, status in rows}


def holders(db: str | Path | None = None, gpus: list[int] | None = None,
            found: list[tuple[int, int | None]] | None = None) -> tuple[list[GpuHolder], str | None]:
    """Every process holding memory on `gpus`, Melt's named with their run, after reaping dead runs.
    `found` replaces the NVML query (pid, used bytes), for a caller that already has it."""
    from bench.runs import reap_stale

    reap_stale(db)
    why = None
    if found is None:
        found, why = nvml_holders(gpus)
    tags = _tag_runs(db)
    out = []
    for pid, used in found:
        try:
            p = psutil.Process(pid)
            name, cmd = p.name(), " ".join(p.cmdline())
        except psutil.Error:
            continue  # gone since NVML answered (or not visible from here)
        tag = _tag_of(p)
        rid, live = tags.get(tag, (None, False)) if tag else (None, False)
        out.append(GpuHolder(pid=pid, used_mib=None if used is None else used / 2**20, name=name, cmdline=cmd,
                             tag=tag, run_id=rid, live=live))
    return out, why


def end_orphans(found: list[GpuHolder]) -> list[int]:
    """End every orphan's whole launch (SIGKILL to each process carrying its tag); returns the pids ended."""
    ended: list[int] = []
    for tag in dict.fromkeys(h.tag for h in found if h.orphan):
        ended += kill_tagged(tag)
    return ended


def launch_warning(found: list[GpuHolder]) -> str | None:
    """One message for the user before a launch, or None when nothing Melt started is holding the GPU."""
    orphans = [h for h in found if h.orphan]
    if not orphans:
        return None
    lines = "\n".join(f"  - {h.describe()}" for h in orphans)
    return ("GPU memory is held by Melt engines that no live run owns; a new engine there may run out of memory:\n"
            f"{lines}\nEnd them with `./melt engines orphans --end` (or `./melt sweep --end-orphans ...`).")


__all__ = ["GpuHolder", "holders", "end_orphans", "launch_warning", "nvml_holders"]
