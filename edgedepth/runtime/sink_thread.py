"""Outputs that write off the loop's hot path: a bounded queue and one writer thread per output.

The loop's postprocessing thread only takes a snapshot of the result (depth and uncertainty are copied:
backends reuse their output buffers) and appends it to a bounded backlog without waiting or waking the
writer, which drains the backlog every few milliseconds; when the writer falls behind and the backlog is
full the frame is dropped for that output and counted, so a slow viewer, network or disk never slows the
depth loop. Recorded outputs (Rerun, MCAP) derive from `BackgroundSink`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Optional, Tuple

import numpy as np

from edgedepth.runtime.pointcloud import result_intrinsics
from edgedepth.runtime.postprocess import DepthResult
from edgedepth.runtime.sink_base import Sink

log = logging.getLogger(__name__)


@dataclass
class ViewerFrame:
    """What a recorded output needs from one result, detached from the loop's reusable buffers.

    `rgb` is the source's frame itself (sources hand out a new array per frame and nothing writes into
    it); `K_depth` / `K_rgb` are the intrinsics at the depth map's and at the colour image's size."""

    seq: int
    index: int
    t: float  # the source's clock, seconds
    wall_time: float  # capture time, seconds since the epoch
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (h, w) float32 metres
    uncertainty: np.ndarray  # (h, w) float32 log b (exp = expected relative error)
    confidence: np.ndarray  # (h, w) bool: the loop's confident pixels
    K_depth: Optional[np.ndarray]
    K_rgb: Optional[np.ndarray]
    selected: bool
    reliable: bool
    confident_fraction: float
    infer_ms: float
    model_version: str
    scores: Dict[str, float] = field(default_factory=dict)


def snapshot(result: DepthResult, intrinsics=None, device=None) -> ViewerFrame:
    frame = result.frame
    K_depth = result_intrinsics(result, intrinsics, device)
    K_rgb = result_intrinsics(result, intrinsics, device, size=frame.rgb.shape[:2]) if K_depth is not None \
        else None
    return ViewerFrame(
        seq=result.seq,
        index=frame.index,
        t=float(frame.t),
        wall_time=float(frame.wall_time),
        rgb=frame.rgb,
        depth=np.array(result.depth, dtype=np.float32, copy=True),
        uncertainty=np.array(result.uncertainty, dtype=np.float32, copy=True),
        confidence=np.array(result.confidence, dtype=bool, copy=True),
        K_depth=K_depth,
        K_rgb=K_rgb,
        selected=bool(result.selected),
        reliable=bool(result.reliable),
        confident_fraction=float(result.confident_fraction),
        infer_ms=float(result.infer_ms),
        model_version=str(result.model_version),
        scores={k: float(v) for k, v in result.scores.items()},
    )


class BackgroundSink(Sink):
    """Snapshot in `write`, `emit` in a writer thread; subclasses implement `emit` and `finish`.

    A failure in the writer thread (disk full, a closed connection the SDK cannot recover) is logged and
    re-raised by the next `write`, so the loop disables this output and goes on."""

    name = "output"

    def __init__(self, intrinsics: Optional[Tuple[np.ndarray, Optional[Tuple[int, int]]]] = None,
                 device=None, queue_size: int = 64, poll_s: float = 0.02):
        self.intrinsics, self.device = intrinsics, device
        self.written = 0
        self.dropped = 0
        self._error: Optional[BaseException] = None
        self._warned_no_K = False
        # A deque the loop appends to without waking anyone; the writer drains it every poll_s. Waking
        # the writer per frame (a Queue) costs the loop GIL hand-offs at hundreds of frames per second.
        self._backlog: Deque[ViewerFrame] = deque()
        self._capacity = max(1, int(queue_size))
        self._poll_s = float(poll_s)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"edgedepth-{self.name}", daemon=True)
        self._thread.start()

    # -- loop side (postprocessing thread) ------------------------------------------------------------
    def write(self, result: DepthResult, view: Optional[np.ndarray]) -> None:
        if self._error is not None:
            raise self._error
        if len(self._backlog) >= self._capacity:
            self.dropped += 1
            return
        item = snapshot(result, self.intrinsics, self.device)
        if item.K_depth is None and not self._warned_no_K:
            log.warning("%s: no intrinsics (the source has none, no --intrinsics file and no camera "
                        "intrinsics in the device config); writing images without a camera model", self.name)
            self._warned_no_K = True
        self._backlog.append(item)

    @property
    def backlog(self) -> int:
        """Frames handed over and not yet taken by the writer."""
        return len(self._backlog)

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.finish()
        finally:
            if self.dropped:
                log.warning("%s: %d frame(s) dropped because the writer fell behind (%d written)",
                            self.name, self.dropped, self.written)

    # -- writer thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        pending = self._backlog
        while True:
            if not pending:
                if self._closing.is_set():
                    return
                self._closing.wait(self._poll_s)
                continue
            item = pending.popleft()
            if self._error is not None:
                continue  # drain: the loop stops feeding this output on its next write
            try:
                self.emit(item)
                self.written += 1
            except Exception as exc:  # reported through write(); the loop disables this output
                log.error("%s failed on frame %d: %s: %s", self.name, item.seq, type(exc).__name__, exc)
                self._error = exc

    def emit(self, frame: ViewerFrame) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Flush and close the file or connection (after the writer thread has ended)."""
