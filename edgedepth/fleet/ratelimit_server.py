"""Per-device token buckets for the ingest server (uploads per second, with a burst allowance)."""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Dict, Tuple


class DeviceRateLimiter:
    """`take(device)` spends one token of that device's bucket: refills at `rate` per second up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._buckets: Dict[str, Tuple[float, float]] = {}  # device -> (tokens, time of last update)
        self._lock = threading.Lock()

    def take(self, device: str) -> Tuple[bool, int]:
        """(allowed, retry_after_s). When refused, retry_after_s is when one token will be there."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(device, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[device] = (tokens - 1.0, now)
                return True, 0
            self._buckets[device] = (tokens, now)
            return False, max(1, math.ceil((1.0 - tokens) / self.rate))
