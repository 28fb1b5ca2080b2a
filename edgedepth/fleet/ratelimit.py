"""The token bucket (the daemon's bandwidth cap, the server's per-device upload rate) and the parser for
`--max-bandwidth 2MB/s`."""

from __future__ import annotations

import re
import time
from typing import Callable, Optional, Tuple

from edgedepth.errors import ConfigError

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}
_RATE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*(?:/\s*s|ps)?\s*$", re.IGNORECASE)


def parse_bandwidth(text: Optional[str]) -> Optional[float]:
    """Bytes per second from '2MB/s', '500KiB/s', '1.5 MiB', '250000' (bytes); None for '', 0, 'none'.

    Units are bytes: KB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024.
    """
    if text is None:
        return None
    t = str(text).strip()
    if t.lower() in ("", "0", "none", "off", "unlimited"):
        return None
    m = _RATE_RE.match(t)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ConfigError(f"cannot read bandwidth {text!r}: use e.g. 2MB/s, 500KiB/s or a byte count")
    value = float(m.group(1)) * _UNITS[unit]
    if value <= 0:
        return None
    return value


class TokenBucket:
    """Allows `rate` bytes/s on average with bursts of at most `burst` bytes.

    `consume(n)` takes n tokens, sleeping for the debt when the bucket runs dry, so a stream of chunks
    paces itself to the rate; tokens accumulate while idle only up to `burst`.
    """

    def __init__(self, rate: float, burst: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ConfigError(f"token bucket rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst) if burst else max(16 * 1024.0, self.rate / 10.0)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    def chunk_size(self, default: int = 64 * 1024) -> int:
        """A chunk size that keeps pacing smooth (no more than a quarter of the burst per chunk)."""
        return int(max(1024, min(default, self.burst / 4)))

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def consume(self, n: float) -> float:
        """Take `n` tokens, sleeping as long as needed; returns the seconds slept."""
        self._refill()
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self._sleep(wait)
        return wait

    def try_consume(self, n: float = 1.0) -> Tuple[bool, float]:
        """Take `n` tokens if the bucket holds them, never sleeping: (True, 0.0), or (False, seconds until
        it will hold them) with nothing taken."""
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True, 0.0
        return False, (n - self._tokens) / self.rate
