"""Over-the-air model updates for the live loop (`edgedepth run --registry URL --update-every 10m`).

A background thread asks the ModelUpdater (signed registry client) for a newer promoted version. A
verified bundle is loaded into a backend off the hot path, then handed to the loop's `swap_backend`
with a HealthCheck: the loop swaps between frames, judges the first frames of the new model (NaNs,
blank output, latency over budget) and rolls back on its own; the verdict goes back to the updater,
which confirms the version or marks it bad so it is not tried again. A load error (for example an
engine that cannot be built for this board) marks the version bad and the old model keeps running.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from edgedepth.errors import EdgeDepthError

log = logging.getLogger(__name__)


class RegistryWatcher:
    """Polls a registry and swaps verified newer models into a running DepthLoop."""

    def __init__(self, loop, updater, make_backend: Callable[[str], object], *, health_frames: int = 20,
                 latency_budget_factor: float = 2.0, wake_every_s: float = 1.0,
                 echo: Callable[[str], None] = log.info) -> None:
        self.loop = loop
        self.updater = updater
        self.make_backend = make_backend
        self.health_frames = int(health_frames)
        self.latency_budget_factor = float(latency_budget_factor)
        self.wake_every_s = float(wake_every_s)
        self.echo = echo
        self.swaps = 0
        self.load_failures = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "RegistryWatcher":
        self._thread = threading.Thread(target=self._run, name="edgedepth-updates", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def check_once(self) -> Optional[str]:
        """One poll; returns the version handed to the loop, if any. Never raises."""
        path = self.updater.poll()
        if path is None:
            return None
        version = self.updater.pending_version
        try:
            backend = self.make_backend(str(path))
        except EdgeDepthError as exc:
            self.load_failures += 1
            self.updater.mark_bad(version, f"load failed: {exc}")
            self.echo(f"update {version}: cannot load ({exc}); keeping the current model")
            return None
        except Exception as exc:  # a broken download must never stop the live loop
            self.load_failures += 1
            log.exception("update %s: unexpected load error", version)
            self.updater.mark_bad(version, f"load failed: {exc}")
            return None
        from edgedepth.registry.health import HealthCheck

        baseline = float(self.loop.stats.snapshot().get("infer_ms_p50", 0.0) or 0.0)
        check = HealthCheck(frames=self.health_frames, latency_budget_factor=self.latency_budget_factor,
                            baseline_latency_ms=baseline or None)
        confirm = self.updater.verdict_handler(version)

        def on_verdict(verdict) -> None:
            confirm(verdict)
            healthy = bool(getattr(verdict, "healthy", verdict))
            self.echo(f"update {version}: " + ("healthy, now running" if healthy else
                                               f"rolled back ({getattr(verdict, 'reason', '')})"))

        self.loop.swap_backend(backend, health_check=check, on_verdict=on_verdict)
        self.swaps += 1
        self.echo(f"update {version}: verified, swapping in between frames")
        return version

    def _run(self) -> None:
        while not self._stop.wait(self.wake_every_s):
            try:
                self.check_once()
            except Exception:  # the updater already logs registry trouble; this is a last guard
                log.exception("model update check failed; will retry")
