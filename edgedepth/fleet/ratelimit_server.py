"""Limits of the ingest server against floods and slow clients.

- `DeviceRateLimiter`: per-device token buckets (uploads per second, with a burst allowance);
- `UploadSlots`: bodies in flight, in all and per device, and the bytes they hold in memory;
- `guarded_h11_protocol`: uvicorn's HTTP/1.1 protocol with a deadline on the request head.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from edgedepth.fleet.ratelimit import TokenBucket

log = logging.getLogger("edgedepth.ingest")


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


class Busy(Exception):
    """Over a concurrency or memory limit: 429 (this device) or 503 (the server); retry later."""

    def __init__(self, status: int, reason: str, message: str, retry_after: int = 2,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status, self.reason, self.retry_after, self.close = status, reason, retry_after, close


class UploadSlots:
    """Bodies in flight: at most N in all, M per device, and a byte budget charged as bytes arrive.

    Runs on the event loop only (no locks needed); `slot()` releases everything on exit.
    """

    def __init__(self, max_total: int, max_per_device: int, max_bytes: int, metrics=None) -> None:
        self.max_total, self.max_per_device, self.max_bytes = max_total, max_per_device, max_bytes
        self.metrics = metrics  # gets .uploads_in_flight and .body_bytes_held
        self.total = 0
        self.per_device: Dict[str, int] = {}
        self.held = 0
        self._charged: Dict[int, int] = {}  # id(request) -> bytes charged

    @contextlib.contextmanager
    def slot(self, request, device: str):
        if self.per_device.get(device, 0) >= self.max_per_device:
            raise Busy(429, "device_busy", f"device {device} already sends "
                        f"{self.max_per_device} uploads; wait for them", retry_after=1)
        if self.total >= self.max_total:
            raise Busy(503, "busy", "too many uploads in progress")
        self.total += 1
        self.per_device[device] = self.per_device.get(device, 0) + 1
        self._charged[id(request)] = 0
        self._publish()
        try:
            yield
        finally:
            self.total -= 1
            self.per_device[device] -= 1
            if self.per_device[device] <= 0:
                del self.per_device[device]
            self.held -= self._charged.pop(id(request), 0)
            self._publish()

    def charge(self, request, nbytes: int) -> None:
        if self.held + nbytes > self.max_bytes:
            raise Busy(503, "busy", "upload memory budget in use by other uploads", close=True)
        self.held += nbytes
        self._charged[id(request)] = self._charged.get(id(request), 0) + nbytes
        self._publish()

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.uploads_in_flight = self.total
            self.metrics.body_bytes_held = self.held


def guarded_h11_protocol(header_timeout_s: float, on_timeout: Optional[Callable[[], None]] = None):
    """uvicorn's h11 protocol with a deadline on the request head.

    uvicorn arms its keep-alive timer only after a response and cancels it on any byte received, so a
    client that sends a request head one byte at a time holds its connection (and a slot of
    `limit_concurrency`) for ever. Here the head must be complete `header_timeout_s` after the
    connection opens or after the first byte of a following request; else the connection is closed
    (and `on_timeout` called, e.g. to count it).
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_too_slow)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.warning("closing a connection from %s: request head not complete within %g s",
                            self.client[0] if self.client else "?", header_timeout_s)
                self.transport.close()
                if on_timeout is not None:
                    on_timeout()

    return GuardedH11Protocol
