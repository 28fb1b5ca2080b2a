"""Blocking source calls (open a stream, wait for a camera's first frame) that say what they wait for.

A network stream that accepts the connection and then stays silent, or a camera that opens but never
delivers, blocks inside OpenCV/FFmpeg without a word. `call_with_deadline` runs such a call in a helper
thread, logs what it is waiting for every `every` seconds, and raises SourceError after `timeout` seconds
with a message that says what to check. A call that cannot be interrupted keeps running in its thread
after the timeout; whatever it returns late is handed to `cleanup` (e.g. a VideoCapture's release).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, TypeVar

from edgedepth.errors import SourceError

log = logging.getLogger(__name__)

T = TypeVar("T")


def call_with_deadline(
    fn: Callable[[], T],
    what: str,
    timeout: float,
    every: float = 3.0,
    hint: str = "",
    cleanup: Optional[Callable[[T], None]] = None,
    stop: Optional[threading.Event] = None,
) -> T:
    """fn() within `timeout` seconds, logging "<what> (N s so far, giving up after T s)" every `every`
    seconds; SourceError("<what>: nothing after T s. <hint>") at the deadline, or when `stop` is set."""
    lock = threading.Lock()
    box: dict = {}
    done = threading.Event()

    def work() -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the caller's thread, re-raised there
            with lock:
                box["error"] = exc
            done.set()
            return
        with lock:
            late = box.get("abandoned", False)
            box["value"] = value
        done.set()
        if late and cleanup is not None:
            try:
                cleanup(value)
            except Exception:  # best effort on a call nobody waits for any more
                log.debug("cleanup after an abandoned call failed", exc_info=True)

    thread = threading.Thread(target=work, name="edgedepth-source-wait", daemon=True)
    t0 = time.monotonic()
    thread.start()
    deadline = t0 + max(0.0, float(timeout))
    while True:
        now = time.monotonic()
        if done.wait(max(0.0, min(every, deadline - now))):
            break
        elapsed = time.monotonic() - t0
        if elapsed >= timeout or (stop is not None and stop.is_set()):
            with lock:
                if "value" in box or "error" in box:
                    break  # it finished just now after all
                box["abandoned"] = True
            why = "stopped" if elapsed < timeout else f"nothing after {timeout:g} s"
            raise SourceError(f"{what}: {why}." + (f" {hint}" if hint else ""))
        log.warning("%s (%.1f s so far, giving up after %g s)", what, elapsed, timeout)
    if "error" in box:
        raise box["error"]
    return box["value"]
