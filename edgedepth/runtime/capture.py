"""Capture in its own thread, with latest-frame semantics and reconnection, for any `RawSource`.

Live sources (cameras, streams, paced synthetic scenes) overwrite a one-frame mailbox: a frame the loop
did not take in time is stale, dropped and counted; nothing ever queues up. Non-live sources (files,
unpaced synthetic scenes) have no thread: `capture()` reads the next frame in the caller's thread, so
every frame of a file is processed and no frame pays for a hand-over between threads (two thread
wake-ups per frame, which a fast model on a small CPU notices).
A live source that fails (camera unplugged, stream lost) is reopened with exponential back-off while
the loop keeps going; a file that ends ends the stream (or starts again with loop=True).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Dict, Optional, Tuple

from edgedepth.errors import EdgeDepthError, SourceError
from edgedepth.runtime.sources import Frame, RawSource, make_raw_source

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_ERRORS = 25  # a finite source that fails this often in a row is treated as ended


class Source:
    """`while source.is_streaming(): frame = source.capture()` over a raw reader in a thread."""

    def __init__(
        self,
        raw: RawSource,
        loop: bool = False,
        reconnect: bool = True,
        backoff: Tuple[float, float] = (0.5, 10.0),
    ):
        self.raw = raw
        self.uri = raw.uri
        self.loop = loop
        self.reconnect = reconnect
        self.backoff = backoff
        self._cond = threading.Condition()
        self._slot: Optional[Frame] = None
        self._stop = threading.Event()
        self._ended = False
        self._thread: Optional[threading.Thread] = None
        self.frames_read = 0
        self.dropped = 0
        self.reconnects = 0
        self.read_errors = 0
        self.error: Optional[str] = None
        self._consecutive_errors = 0
        self._read_lock = threading.Lock()  # non-live sources: one reader at a time

    @property
    def live(self) -> bool:
        return bool(self.raw.live)

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> "Source":
        """Open the reader now (so a bad URI fails before the loop starts) and start the thread."""
        self.raw.open()
        if self.raw.live:
            self._thread = threading.Thread(target=self._run, name="edgedepth-capture", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._read_lock:
            self.raw.close()

    def __enter__(self) -> "Source":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- consumer side ------------------------------------------------------------------------------
    def is_streaming(self) -> bool:
        with self._cond:
            return not self._stop.is_set() and not (self._ended and self._slot is None)

    def capture(self, timeout: float = 0.1) -> Optional[Frame]:
        """The newest frame not yet taken, or None after `timeout` seconds without one (a non-live
        source: its next frame, read now; None at its end)."""
        if not self.raw.live:
            return self._read_now()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._ended or self._stop.is_set():
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
        return frame

    def _read_now(self) -> Optional[Frame]:
        with self._read_lock:
            while not self._stop.is_set() and not self._ended:
                frame = self._pull()
                if frame is not None:
                    # a file frame has no age of its own: its latency clock starts when the loop takes it
                    frame.captured = time.monotonic()
                    return frame
                if self._ended:
                    break
            return None

    def stats(self) -> Dict[str, float]:
        return {
            "frames_read": self.frames_read,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "read_errors": self.read_errors,
        }

    # -- producer side ------------------------------------------------------------------------------
    def _pull(self) -> Optional[Frame]:
        """Read one frame, handling read errors and gaps; None when there is none this time (and
        `_ended` set once the stream is over)."""
        try:
            frame = self.raw.read()
        except Exception as exc:  # a reader failing must not end the capture
            self.read_errors += 1
            self._consecutive_errors += 1
            log.warning("source %s: read failed (%s: %s)", self.uri, type(exc).__name__, exc)
            frame = None
            if (self.raw.finite and not self.raw.live
                    and self._consecutive_errors < MAX_CONSECUTIVE_ERRORS):
                return None  # one bad frame of a file: skip it
        if frame is None:
            if not self._handle_gap():
                with self._cond:
                    self._ended = True
                    self._cond.notify_all()
            return None
        self._consecutive_errors = 0
        self.frames_read += 1
        return frame

    def _run(self) -> None:
        while not self._stop.is_set() and not self._ended:
            frame = self._pull()
            if frame is not None:
                self._publish(frame)
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if self._slot is not None:
                self.dropped += 1  # the loop did not take the previous frame in time: it is stale
            self._slot = frame
            self._cond.notify_all()

    def _handle_gap(self) -> bool:
        """No frame: end of a file, or a lost camera/stream. Returns False when the stream is over."""
        if self.raw.finite and not self.raw.live:
            if not self.loop:
                log.info("source %s: end of stream after %d frames", self.uri, self.frames_read)
                return False
            try:
                self.raw.close()
                self.raw.open()
                log.info("source %s: looping back to the start", self.uri)
                return True
            except EdgeDepthError as exc:
                self.error = str(exc)
                log.error("source %s: cannot reopen for --loop: %s", self.uri, exc)
                return False
        if not self.reconnect:
            self.error = "stream lost"
            log.error("source %s: stream lost and reconnection is off", self.uri)
            return False
        return self._reconnect()

    def _reconnect(self) -> bool:
        delay, max_delay = self.backoff
        attempt = 0
        log.warning(
            "source %s: stream lost; reconnecting (back-off %.1f s .. %.1f s)", self.uri, delay, max_delay
        )
        self.raw.close()
        while not self._stop.is_set():
            attempt += 1
            if self._stop.wait(delay):
                return False
            try:
                self.raw.open()
            except (EdgeDepthError, OSError) as exc:
                log.warning(
                    "source %s: reconnect attempt %d failed (%s); next try in %.1f s",
                    self.uri,
                    attempt,
                    exc,
                    min(delay * 2, max_delay),
                )
                delay = min(delay * 2, max_delay)
                continue
            self.reconnects += 1
            log.warning("source %s: reconnected after %d attempt(s)", self.uri, attempt)
            return True
        return False


def open_source(
    uri: str,
    device=None,
    default_size: Tuple[int, int] = (224, 224),
    loop: bool = False,
    reconnect: bool = True,
    start: bool = True,
) -> Source:
    """Parse `uri`, open it and start its capture thread. SourceError/ConfigError say what is wrong."""
    raw = make_raw_source(uri, device=device, default_size=default_size)
    source = Source(raw, loop=loop, reconnect=reconnect)
    if start:
        try:
            source.start()
        except EdgeDepthError:
            raise
        except Exception as exc:  # OpenCV and generators raise assorted types on a bad source
            raise SourceError(f"cannot open source {uri}: {type(exc).__name__}: {exc}") from exc
    return source
