"""The dashboard as a subprocess for the perf scripts: one Streamlit server on a free loopback port."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engines.supervisor import direct_opener, free_port

ROOT = Path(__file__).resolve().parents[2]
# Chromium flags for a quiet headless browser (no background traffic, no GPU)
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    """Until `url` answers 200; raises if `proc` exits first or `timeout` passes."""
    opener = direct_opener()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with opener.open(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not up after {timeout:.0f} s")


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


@contextmanager
def dashboard(env: dict[str, str] | None = None, ready_s: float = 60.0) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start `streamlit run app/main.py` on 127.0.0.1, wait for its health endpoint, yield (process, base URL);
    on exit stop its whole process group."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.address",
                             "127.0.0.1", "--server.port", str(port), "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/_stcore/health", ready_s, proc)
        yield proc, base
    finally:
        stop_group(proc)
