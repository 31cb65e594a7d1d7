"""Melt's GPU sampling without Melt's load generator: NvmlSource at 4 Hz plus the XID watcher, exactly as a sweep
starts them (bench/sweep.py), until SIGTERM. vllm_compare.py runs it beside `vllm bench serve` (tool "vllm+nvml")
to see whether sampling the GPU slows the server down."""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from telemetry.nvml import XidWatcher  # noqa: E402
from telemetry.sampler import TelemetrySampler, make_source  # noqa: E402

if __name__ == "__main__":
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    source, note = make_source("vllm", None, None)
    print(note, flush=True)
    sampler = TelemetrySampler(source, hz=4.0, on_batch=lambda rows: None)
    sampler.start()
    watch = XidWatcher(lambda *a, **k: None, gpus=None)
    watch.start()
    done.wait()
    sampler.stop()
    watch.stop()
