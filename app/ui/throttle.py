"""Slows down repeated wrong dashboard passwords (the optional gate in app/ui/common.py).

The gate is for demos on a shared network, so the dashboard process keeps one counter for everyone (Streamlit gives
no trustworthy client identity, and a per-session counter is reset by opening a new tab): the first FREE wrong
guesses cost nothing, then each further guess is refused until BASE_S * 2^(n - FREE) seconds (at most MAX_S) after
the last wrong one. A right password resets it. No streamlit import: unit-tested on its own.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

FREE = 3
BASE_S = 1.0
MAX_S = 60.0


class LoginThrottle:
    def __init__(self, free: int = FREE, base_s: float = BASE_S, max_s: float = MAX_S,
                 clock: Callable[[], float] = time.monotonic):
        self.free, self.base_s, self.max_s, self.clock = free, base_s, max_s, clock
        self.fails = 0
        self.last_fail = 0.0
        self._lock = threading.Lock()  # one dashboard process serves every session from threads

    def wait_s(self) -> float:
        """Seconds until the next guess is looked at (0: now)."""
        with self._lock:
            if self.fails < self.free:
                return 0.0
            delay = min(self.max_s, self.base_s * 2 ** (self.fails - self.free))
            return max(0.0, self.last_fail + delay - self.clock())

    def failed(self) -> None:
        with self._lock:
            self.fails += 1
            self.last_fail = self.clock()

    def succeeded(self) -> None:
        with self._lock:
            self.fails = 0
