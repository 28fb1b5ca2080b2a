"""Device model updates: poll the registry, fetch + verify a newer promoted version, remember bad ones.

The live loop owns the swap. Typical use (edgedepth.runtime.loop's seam)::

    updater = ModelUpdater(url, "signing.pub", cache_dir, current_version="3", poll_every_s=300)
    ...
    new_dir = updater.poll()                  # cheap unless it is time to poll; never raises
    if new_dir is not None:
        version = updater.pending_version
        loop.swap_backend(load_backend(new_dir),
                          health_check=HealthCheck(baseline_latency_ms=old_median_ms),
                          on_verdict=updater.verdict_handler(version))
    # healthy -> updater.confirm(version); unhealthy -> the loop swaps back, updater.mark_bad(version, why)

Bundles land in CACHE/versions/<V> (verified, renamed into place). Bad versions are stored in
CACHE/updater_state.json, so a restart does not retry them: a bundle whose complete content fails its
signature or hashes, or a model rolled back by its health check. A download that fails on the way (cut
connection, short file, registry unreachable) is not a verdict on the version: it is retried with
exponential back-off (retry_base_s, doubling up to retry_max_s). The highest signed registry state
accepted is kept in CACHE/registry_trust.json, so an older state replayed later, even after a restart, is
refused (edgedepth.registry.state).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

from edgedepth.errors import EdgeDepthError
from edgedepth.fsutil import write_bytes_atomic
from edgedepth.registry.client import RegistryClient
from edgedepth.registry.health import HealthCheck, HealthVerdict, assess  # noqa: F401 - one import point
from edgedepth.registry.index import check_version, version_key
from edgedepth.registry.keys import load_public_key  # noqa: F401 - re-exported for the runtime
from edgedepth.registry.signing import BundleRejected
from edgedepth.registry.state import StateRejected
from edgedepth.registry.storage import RegistryUnavailable

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
STATE_FILE = "updater_state.json"
TRUST_FILE = "registry_trust.json"
_SHORT_DOWNLOAD = "the file was modified or truncated"  # how earlier releases worded a short file
VERSIONS_SUBDIR = "versions"


class ModelUpdater:
    """Finds, downloads and authenticates newer promoted model versions for one device."""

    def __init__(self, registry_url: str, public_key_path: PathLike, cache_dir: PathLike,
                 current_version: Optional[str] = None, poll_every_s: float = 300.0,
                 client: Optional[RegistryClient] = None, clock: Callable[[], float] = time.monotonic,
                 endpoint_url: Optional[str] = None, wall_clock: Callable[[], float] = time.time,
                 retry_base_s: float = 30.0, retry_max_s: float = 3600.0):
        self.registry_url = str(registry_url)
        self.public_key = load_public_key(public_key_path)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.current_version = check_version(current_version) if current_version else None
        self.previous_version: Optional[str] = None
        self.pending_version: Optional[str] = None
        self.poll_every_s = float(poll_every_s)
        self.client = client or RegistryClient(self.registry_url, self.public_key, endpoint_url=endpoint_url,
                                               trust_path=self.cache_dir / TRUST_FILE, clock=wall_clock)
        self.clock = clock
        self.retry_base_s = float(retry_base_s)
        self.retry_max_s = float(retry_max_s)
        # version -> (failed attempts, clock time before which it is not tried again); memory only
        self._retry: Dict[str, Tuple[int, float]] = {}
        self._next_poll: Optional[float] = None
        self._lock = threading.Lock()  # confirm/mark_bad may come from the loop's inference thread
        self.bad_versions: Dict[str, Dict[str, Any]] = self._load_state()
        self._remove_interrupted_downloads()

    # ------------------------------------------------------------------ state on disk
    @property
    def versions_dir(self) -> Path:
        return self.cache_dir / VERSIONS_SUBDIR

    def _load_state(self) -> Dict[str, Dict[str, Any]]:
        path = self.cache_dir / STATE_FILE
        if not path.is_file():
            return {}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            bad = state.get("bad_versions", {})
            bad = {str(k): dict(v) for k, v in bad.items()} if isinstance(bad, dict) else {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("updater state %s is unreadable (%s); starting with no bad versions", path, exc)
            return {}
        # Earlier releases marked a version bad for a short download too ("... modified or truncated");
        # that is a transport failure, not a verdict on the version: give those versions another try.
        for v in [v for v, info in bad.items() if _SHORT_DOWNLOAD in str(info.get("reason", ""))]:
            log.info("version %s was marked bad for a short download; it will be tried again", v)
            del bad[v]
        return bad

    def _save_state(self) -> None:
        state = {"bad_versions": self.bad_versions, "current_version": self.current_version}
        write_bytes_atomic(self.cache_dir / STATE_FILE,
                           (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    # ------------------------------------------------------------------ polling
    def due(self, now: Optional[float] = None) -> bool:
        now = self.clock() if now is None else now
        return self._next_poll is None or now >= self._next_poll

    def poll(self, now: Optional[float] = None) -> Optional[Path]:
        """A verified bundle directory of a newer promoted version, when it is time to poll and one exists.

        Returns None when not due, while a returned version awaits confirm()/mark_bad(), when nothing
        newer is promoted, or when the registry is unreachable (logged; retried at the next poll).
        Never raises for registry or network trouble.
        """
        now = self.clock() if now is None else now
        if self.pending_version is not None or not self.due(now):
            return None
        self._next_poll = now + self.poll_every_s
        try:
            return self._check(now)
        except StateRejected as exc:
            log.error("model updates refused: %s (the running model is kept; checking again in %.0f s)",
                      exc, self.poll_every_s)
        except EdgeDepthError as exc:
            log.warning("model update check against %s failed: %s (retrying in %.0f s)",
                        self.registry_url, exc, self.poll_every_s)
        except OSError as exc:
            log.warning("model update check failed on local storage: %s (retrying in %.0f s)",
                        exc, self.poll_every_s)
        except Exception:  # a long-running loop must survive a surprise; logged with its traceback
            log.exception("unexpected error while checking %s for model updates", self.registry_url)
        return None

    def _is_newer(self, version: str) -> bool:
        return self.current_version is None or version_key(version) > version_key(self.current_version)

    def _check(self, now: float) -> Optional[Path]:
        for version, _entry in self.client.promoted():  # newest first, from the verified signed state
            if not self._is_newer(version):
                return None
            if version in self.bad_versions:
                log.debug("skipping version %s: marked bad (%s)", version,
                          self.bad_versions[version].get("reason"))
                continue
            failures, not_before = self._retry.get(version, (0, 0.0))
            if now < not_before:
                log.debug("version %s: retry %d due in %.0f s", version, failures + 1, not_before - now)
                continue
            try:
                path = self.client.download(version, self.versions_dir, self.public_key)
            except BundleRejected as exc:
                self.mark_bad(version, f"rejected: {exc}")
                continue
            except RegistryUnavailable as exc:  # transient: a cut download, a missing object, no network
                wait = min(self.retry_max_s, self.retry_base_s * 2 ** failures)
                self._retry[version] = (failures + 1, now + wait)
                log.warning("download of version %s failed (attempt %d): %s; retrying in %.0f s", version,
                            failures + 1, exc, wait)
                continue
            self._retry.pop(version, None)
            self.pending_version = version
            log.info("model version %s is ready at %s (current %s)", version, path, self.current_version)
            return path
        return None

    # ------------------------------------------------------------------ outcome of a swap
    def confirm(self, version: str) -> None:
        """The runtime swapped to `version` and it passed its health check: it becomes current."""
        v = check_version(version)
        with self._lock:
            if v != self.current_version:
                self.previous_version, self.current_version = self.current_version, v
            if self.pending_version == v:
                self.pending_version = None
            self._save_state()
            self.prune()

    def mark_bad(self, version: str, reason: str) -> None:
        """Never offer `version` again on this device (rejected download or rolled-back model)."""
        v = check_version(version)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        log.warning("model version %s marked bad: %s", v, reason)
        with self._lock:
            self.bad_versions[v] = {"reason": str(reason), "at": when}
            if self.pending_version == v:
                self.pending_version = None
            if self.current_version == v:  # rolled back after confirming: the previous one runs again
                self.current_version, self.previous_version = self.previous_version, None
            self._save_state()
            shutil.rmtree(self.versions_dir / v, ignore_errors=True)

    def verdict_handler(self, version: str) -> Callable[[Any], None]:
        """A callback for the loop's health-check verdict: confirm when healthy, else mark bad."""
        v = check_version(version)

        def handle(verdict: Any) -> None:
            if bool(getattr(verdict, "healthy", verdict)):
                self.confirm(v)
            else:
                self.mark_bad(v, f"rolled back: {getattr(verdict, 'reason', verdict)}")

        return handle

    def bundle_dir(self, version: str) -> Path:
        return self.versions_dir / check_version(version)

    def prune(self) -> None:
        """Delete cached versions other than the current, the previous (for rollback) and a pending one."""
        if not self.versions_dir.is_dir():
            return
        keep = {v for v in (self.current_version, self.previous_version, self.pending_version) if v}
        for child in self.versions_dir.iterdir():
            if child.is_dir() and not child.name.startswith(".") and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)

    def _remove_interrupted_downloads(self) -> None:
        """Temp directories left by a download cut off by power loss or kill -9."""
        if self.versions_dir.is_dir():
            for child in self.versions_dir.glob(".download-*"):
                shutil.rmtree(child, ignore_errors=True)


def installed_version(bundle_dir: PathLike) -> Optional[str]:
    """The registry version a bundle was published as (manifest "registry.version"), or None for a
    bundle that never went through `edgedepth publish` (e.g. a fresh local export)."""
    from edgedepth.bundle import read_manifest
    from edgedepth.registry.signing import manifest_version

    try:
        return manifest_version(read_manifest(bundle_dir))
    except EdgeDepthError:
        return None
