"""The simulated fleet: devices running the real live loop, a real ingest server, the real upload daemon.

A device = a spool, an upload token, a ModelUpdater polling the signed registry, and the ONNX backend
it currently runs. Each round it plays a pre-rendered synthetic video (unpaced: every frame is
processed, as fast as the loop goes) through `edgedepth.runtime.loop.DepthLoop` with the round's
selection strategy; the loop's SpoolCollector writes the kept frames (with their ground-truth depth)
to the spool and the upload daemon drains the spool into the ingest server (a subprocess on
127.0.0.1). A newly promoted model is swapped in by the loop itself, under a health check.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from edgedepth.errors import EdgeDepthError
from edgedepth.runtime.sources import Frame, RawSource

log = logging.getLogger(__name__)

LATENCY_FLOOR_MS = 5.0  # health check: a swap is judged slow only beyond max(4x previous median, this)


# ---------------------------------------------------------------------------------------------------
# Video: one device's frames for one round


SIM_CLOCK_START = 1_790_000_000.0  # 2026-09-21 UTC: the stream clock the simulated cameras stamp frames with


def stream_clock(r: int) -> float:
    """Wall-clock time of round r's first frame. Fixed, not time.time(): the round's train/val split goes
    by (device, time block) of these stamps, so a wall-clock start shifted the blocks against the videos
    and the same seed gave different splits, and different results, on every run."""
    return SIM_CLOCK_START + 86400.0 * r


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def render_clip(mix: Dict[str, float], seed: int, frames: int, height: int, width: int,
                scene_length: int = 30, segment_length: int = 15,
                progress: Optional[Callable] = None) -> list:
    """A device's video: `frames` SynthFrames of a domain mix, a new scene every `scene_length` frames."""
    from edgedepth.data.synth import MixedStream

    stream = MixedStream(mix, seed=seed, height=height, width=width, segment_length=segment_length)
    for sub in stream.streams.values():
        sub.scene_length = int(scene_length)
    out = []
    for _ in range(int(frames)):
        out.append(stream.next())
        if progress is not None:
            progress(1)
    return out


class ClipSource(RawSource):
    """A pre-rendered synthetic clip as a camera: finite, not paced, ground truth on every frame.

    Frame times follow a 30 fps camera clock starting at `start_time` (wall-clock seconds), so capture
    times (and the round build's time blocks) are those of the video, not of the simulation's speed.
    """

    live = False
    finite = True

    def __init__(self, uri: str, frames: list, start_time: float, fps: float = 30.0, t_offset: float = 0.0):
        self.uri, self.frames, self.start_time, self.fps = uri, frames, float(start_time), float(fps)
        self.t_offset = float(t_offset)  # stream clock (Frame.t) of the first frame
        self.i = 0

    def open(self) -> None:
        self.i = 0

    def read(self) -> Optional[Frame]:
        if self.i >= len(self.frames):
            return None
        sf = self.frames[self.i]
        t = self.i / self.fps
        frame = Frame(rgb=sf.rgb, index=self.i, t=self.t_offset + t, captured=time.monotonic(),
                      wall_time=self.start_time + t,
                      depth_gt=sf.depth, intrinsics=sf.intrinsics, pose=sf.pose, domain=sf.domain,
                      extra={"scene_seed": sf.scene_seed})
        self.i += 1
        return frame


# ---------------------------------------------------------------------------------------------------
# The ingest server (a real subprocess)


@contextlib.contextmanager
def sigterm_as_exit():
    """SIGTERM raises SystemExit inside the block (main thread only), so `finally` clauses stop the
    ingest servers this process started instead of leaving them orphaned."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("EDGEDEPTH_TOKEN", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IngestServer:
    """`edgedepth ingest serve` on 127.0.0.1 as a subprocess, with its devices registered first."""

    def __init__(self, store: Path, devices: List[str], log_path: Path):
        from edgedepth.fleet.auth import DeviceRegistry, default_auth_db

        self.store = Path(store)
        self.store.mkdir(parents=True, exist_ok=True)
        registry = DeviceRegistry(default_auth_db(str(self.store), None))
        try:
            self.tokens = {name: registry.add_device(name, replace=True) for name in devices}
        finally:
            registry.close()
        self.log_path = Path(log_path)
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> "IngestServer":
        import httpx

        last = ""
        for _attempt in range(3):  # a free port can be taken between choosing and binding it
            port = free_port()
            logf = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgedepth", "ingest", "serve", "--store", str(self.store),
                 "--host", "127.0.0.1", "--port", str(port), "--rate", "1000", "--burst", "1000",
                 "--min-free-mb", "0", "--log-level", "warning"],
                stdout=logf, stderr=subprocess.STDOUT, env=_python_env())
            logf.close()
            self.url = f"http://127.0.0.1:{port}"
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout and self.proc.poll() is None:
                try:
                    if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            last = f"exit code {self.proc.poll()}" if self.proc.poll() is not None else "no answer"
            self.stop()
        raise EdgeDepthError(f"the ingest server did not start ({last}); see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "IngestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------
# A device


@dataclass
class RunStats:
    """What one device did in one round."""

    frames: int = 0
    fps: float = 0.0
    infer_ms_p50: float = 0.0
    selected: int = 0
    spooled: int = 0
    selected_domains: Dict[str, int] = field(default_factory=dict)
    seen_domains: Dict[str, int] = field(default_factory=dict)
    model_version: Optional[str] = None
    swap: Optional[dict] = None  # the health-check verdict of a swap in this run
    uploaded: int = 0
    upload_bytes: int = 0  # bytes the upload daemon sent (payload of the uploaded items)
    upload_duplicates: int = 0
    upload_failed: int = 0
    errors: int = 0


class SimDevice:
    """One simulated device (see the module docstring)."""

    def __init__(self, name: str, root: Path, registry: str, public_key: Path, threads: int = 1):
        from edgedepth.registry.updater import ModelUpdater

        self.name = name
        self.root = Path(root)
        self.spool_dir = self.root / "spool"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.threads = threads
        self.updater = ModelUpdater(registry, public_key, self.root / "models", current_version=None,
                                    poll_every_s=0.0)
        self.backend = None
        self.version: Optional[str] = None
        self._pending = None  # (backend, version) to swap in at the next run
        self.token = ""
        self.server = ""
        self.verdicts: List[dict] = []

    # -- model updates ------------------------------------------------------------------------------
    def check_for_update(self) -> Optional[str]:
        """Poll the registry; a newer promoted version is installed at once on a fresh device, or swapped
        in by the loop (under a health check) at the next run. Returns the version found, if any."""
        from edgedepth.runtime.backends import load_backend

        path = self.updater.poll()
        if path is None:
            return None
        version = self.updater.pending_version
        backend = load_backend(path, backend="ort-cpu", threads=self.threads)
        if self.backend is None:  # first install: nothing to compare against or roll back to
            self.backend, self.version = backend, version
            self.updater.confirm(version)
        else:
            if self._pending is not None:
                self._pending[0].close()
            self._pending = (backend, version)
        return version

    def _on_verdict(self, version: str) -> Callable:
        confirm = self.updater.verdict_handler(version)

        def handle(verdict) -> None:
            self.verdicts.append({"version": version, "healthy": bool(getattr(verdict, "healthy", verdict)),
                                  "reason": str(getattr(verdict, "reason", ""))})
            confirm(verdict)

        return handle

    # -- the live loop ------------------------------------------------------------------------------
    @property
    def next_backend(self):
        """The backend the next run will use (a pending update, else the current one)."""
        return self._pending[0] if self._pending is not None else self.backend

    def run(self, frames: list, selection, start_time: float, health_frames: int = 10,
            progress: Optional[Callable] = None, t_offset: float = 0.0) -> RunStats:
        """Play `frames` through the real loop with `selection` (a SelectionConfig or a ready FrameSelector);
        spool kept frames. `t_offset` is the stream clock of the first frame (selection budgets use it)."""
        from edgedepth.registry.health import HealthCheck
        from edgedepth.runtime.capture import Source
        from edgedepth.runtime.collect import SpoolCollector
        from edgedepth.runtime.loop import DepthLoop
        from edgedepth.runtime.selection import FrameSelector
        from edgedepth.runtime.stats import LoopStats
        from edgedepth.spool import Spool

        if self.backend is None:
            raise EdgeDepthError(f"device {self.name} has no model: publish and promote one first")
        stats = LoopStats()
        uri = f"synthetic://clip/{self.name}"
        collector = SpoolCollector(Spool(self.spool_dir), device_id=self.name, source_uri=uri,
                                   info=self.backend.info, model_sha256=self.backend.model_sha256,
                                   selection_mode=getattr(selection, "cfg", selection).mode,
                                   count=stats.count)
        source = Source(ClipSource(uri, frames, start_time, t_offset=t_offset), reconnect=False).start()
        stats.source_stats = source.stats
        out = RunStats()

        def on_result(result) -> None:
            d = result.frame.domain or "unknown"
            out.seen_domains[d] = out.seen_domains.get(d, 0) + 1
            if result.selected:
                out.selected_domains[d] = out.selected_domains.get(d, 0) + 1
            if progress is not None:
                progress(1)

        selector = selection if isinstance(selection, FrameSelector) else FrameSelector(selection)
        loop = DepthLoop(source, self.backend, selector=selector, collector=collector,
                         stats=stats, on_result=on_result)
        swap_version = None
        if self._pending is not None:
            new, swap_version = self._pending
            self._pending = None
            # at sub-millisecond inference on a shared CPU scheduler jitter alone exceeds 2-4x: the
            # health check's absolute floor (min_latency_budget_ms) keeps that from rolling back
            check = HealthCheck(frames=max(1, min(health_frames, len(frames) // 2)),
                                latency_budget_factor=4.0, baseline_latency_ms=self._last_infer_ms or None,
                                min_latency_budget_ms=LATENCY_FLOOR_MS)
            loop.swap_backend(new, health_check=check, on_verdict=self._on_verdict(swap_version))
        try:
            summary = loop.run()
        finally:
            source.close()
            collector.close()
        self.backend = loop.backend
        self.version = self.updater.current_version
        snap = summary.stats
        self._last_infer_ms = float(snap.get("infer_ms_p50", 0.0) or 0.0)
        out.frames, out.errors = summary.frames, summary.errors
        out.fps, out.infer_ms_p50 = float(snap.get("fps", 0.0)), self._last_infer_ms
        out.selected, out.spooled = int(snap.get("selected", 0)), collector.written
        out.model_version = self.version
        if swap_version is not None:
            none = {"version": swap_version, "healthy": None, "reason": "no verdict (too few frames)"}
            out.swap = next((v for v in reversed(self.verdicts) if v["version"] == swap_version), none)
        return out

    _last_infer_ms: Optional[float] = None

    def spool_copies(self, samples: list, start_time: float) -> int:
        """The 'duplicate' strategy: put copies of existing training frames into the spool for upload."""
        from edgedepth.runtime.collect import depth_to_png_mm, encode_rgb
        from edgedepth.spool import Spool, captured_at

        spool = Spool(self.spool_dir)
        for i, s in enumerate(samples):
            rgb, ext = encode_rgb(s.rgb, None)
            files = {f"rgb.{ext}": (rgb, "rgb"), "depth.png": (depth_to_png_mm(s.depth), "depth_gt", 0,
                                                                 "mm_uint16")}
            h, w = s.rgb.shape[:2]
            spool.put(files, {"device_id": self.name, "captured_at": captured_at(start_time + i / 30.0),
                              "score": 0.0, "selection": "duplicate", "source": f"copy://{s.name}",
                              "domain": s.domain, "width": w, "height": h, "labels": ["depth_gt"],
                              "model": {"name": "edgedepth", "version": self.version or "0"}})
        return len(samples)

    # -- upload ---------------------------------------------------------------------------------------
    def upload(self, how: str = "inprocess", timeout: float = 300.0) -> Dict[str, int]:
        """Drain the spool into the ingest server with the upload daemon (--once)."""
        token_file = self.root / "token"
        token_file.write_text(self.token + "\n")
        os.chmod(token_file, 0o600)
        if how == "subprocess":
            cmd = [sys.executable, "-m", "edgedepth", "upload", "--spool", str(self.spool_dir), "--server",
                   self.server, "--token-file", str(token_file), "--once", "--once-timeout", str(timeout),
                   "--poll-interval", "0.1", "--backoff-base", "0.2", "--backoff-max", "2",
                   "--log-level", "WARNING"]
            before, before_bytes = self._spool_count(), self._spool_bytes()
            res = subprocess.run(cmd, capture_output=True, text=True, env=_python_env(), timeout=timeout + 60)
            left = self._spool_count()
            if res.returncode != 0:
                raise EdgeDepthError(f"upload daemon for {self.name} exited {res.returncode}: "
                                     f"{res.stderr.strip()[-500:]}")
            return {"uploaded": before - left, "duplicates": 0, "failed": 0, "left": left,
                    "bytes": before_bytes - self._spool_bytes()}
        from edgedepth.fleet.daemon import Daemon, DaemonConfig

        cfg = DaemonConfig(spool=self.spool_dir, server=self.server, token=self.token, once=True,
                           once_timeout=timeout, poll_interval=0.05, backoff_base=0.2, backoff_max=2.0,
                           stats_interval=3600.0)
        daemon = Daemon(cfg)
        import threading

        main = threading.current_thread() is threading.main_thread()
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        try:
            code = daemon.run()
        finally:
            for s, h in handlers.items():  # the daemon installs its own; give the caller's back
                signal.signal(s, h)
        st = daemon.stats
        if code != 0:
            raise EdgeDepthError(f"upload daemon for {self.name} exited {code} "
                                 f"({self._spool_count()} items left in {self.spool_dir})")
        return {"uploaded": st.uploaded, "duplicates": st.duplicates, "failed": st.failures,
                "left": self._spool_count(), "bytes": st.bytes_sent}

    def _spool_count(self) -> int:
        from edgedepth.spool import Spool

        return len(Spool(self.spool_dir).item_ids())

    def _spool_bytes(self) -> int:
        from edgedepth.spool import Spool

        return Spool(self.spool_dir).total_bytes()

    def close(self) -> None:
        for b in (self.backend, self._pending[0] if self._pending else None):
            if b is not None:
                b.close()
        self.backend, self._pending = None, None
