"""Per-device token buckets for the ingest server (uploads per second, with a burst allowance)."""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Dict, Tuple

from edgedepth.fleet.ratelimit import TokenBucket


class DeviceRateLimiter:
    """`take(device)` spends one token of that device's bucket: refills at `rate` per second up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._buckets: Dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, device: str) -> Tuple[bool, int]:
        """(allowed, retry_after_s). When refused, retry_after_s is when one token will be there."""
        with self._lock:
            bucket = self._buckets.get(device)
            if bucket is None:
                bucket = self._buckets[device] = TokenBucket(self.rate, self.burst, clock=self._clock)
            allowed, wait = bucket.try_consume(1.0)
        return allowed, 0 if allowed else max(1, math.ceil(wait))
