"""Selected frames -> spool items, with neighbour frames t-k and t+k, in a writer thread.

t+k is in the future when frame t is selected, so the item waits in a small pending list until k more
frames have arrived (a ring buffer of the last 2k+1 frames supplies t-k). Encoding and the atomic writes
happen in a writer thread behind a bounded queue: when it is full the item is dropped and counted, so
the loop never waits on the disk. `flush()` writes what is pending (with the neighbours that exist)
and waits for the writer: call it on shutdown.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple

import cv2
import numpy as np

from edgedepth.errors import ConfigError, EdgeDepthError
from edgedepth.modelmeta import ModelInfo
from edgedepth.runtime.sources import Frame

log = logging.getLogger(__name__)


def encode_rgb(rgb: np.ndarray, jpeg_quality: Optional[int]) -> Tuple[bytes, str]:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if jpeg_quality:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        ext = "jpg"
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        ext = "png"
    if not ok:
        raise EdgeDepthError("image encoding failed")
    return buf.tobytes(), ext


def depth_to_png_mm(depth_m: np.ndarray) -> bytes:
    """Metric depth (metres, 0 = invalid) -> 16-bit PNG in millimetres (0 = invalid, max 65.535 m)."""
    mm = np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * 1000.0
    ok, buf = cv2.imencode(".png", np.clip(np.rint(mm), 0, 65535).astype(np.uint16))
    if not ok:
        raise EdgeDepthError("depth PNG encoding failed")
    return buf.tobytes()


def _iso(t: float) -> str:
    try:
        from edgedepth.spool import captured_at

        return captured_at(t)
    except ImportError:  # pragma: no cover - older spool module
        import datetime as dt

        d = dt.datetime.fromtimestamp(t, tz=dt.timezone.utc)
        return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


class SpoolCollector:
    """Builds and writes spool items for selected frames (see the module docstring)."""

    def __init__(
        self,
        spool,
        device_id: str,
        source_uri: str,
        info: ModelInfo,
        model_sha256: str = "",
        neighbors: int = 0,
        jpeg_quality: Optional[int] = None,
        selection_mode: str = "hard",
        queue_size: int = 16,
        count: Optional[Callable[[str, int], None]] = None,
    ):
        if neighbors < 0:
            raise ConfigError("--neighbors must be >= 0")
        if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
            raise ConfigError("--jpeg-quality must be in 1..100")
        self.spool = spool
        self.device_id, self.source_uri = device_id, source_uri
        self.info, self.model_sha256 = info, model_sha256
        self.k = int(neighbors)
        self.jpeg_quality = jpeg_quality
        self.selection_mode = selection_mode
        self._count = count or (lambda name, n=1: None)
        self._ring: Deque[Tuple[int, Frame]] = deque(maxlen=max(1, self.k))  # frames seq-k .. seq-1
        self._pending: List[Tuple[int, Frame, Dict[str, float], float, Optional[Frame]]] = []
        self._queue: "queue.Queue[Optional[dict]]" = queue.Queue(maxsize=queue_size)
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._evicted_seen = int(getattr(spool, "evicted", 0) or 0)
        self._thread = threading.Thread(target=self._writer, name="edgedepth-spool", daemon=True)
        self._thread.start()

    def set_model(self, info: ModelInfo, model_sha256: str) -> None:
        self.info, self.model_sha256 = info, model_sha256

    # -- called for every frame, from the loop's postprocessing thread ------------------------------
    def observe(
        self,
        seq: int,
        frame: Frame,
        keep: bool,
        score: float = 0.0,
        scores: Optional[Dict[str, float]] = None,
    ) -> None:
        if self.k:
            still = []
            for item in self._pending:
                if seq - item[0] >= self.k:
                    self._submit(*item[:4], prev=item[4], nxt=frame)
                else:
                    still.append(item)
            self._pending = still
        prev = self._ring[0][1] if self.k and len(self._ring) == self._ring.maxlen else None
        if keep:
            if self.k:
                self._pending.append((seq, frame, dict(scores or {}), float(score), prev))
            else:
                self._submit(seq, frame, dict(scores or {}), float(score), None, None)
        self._ring.append((seq, frame))

    def _job(self, seq, frame, scores, score, prev, nxt) -> dict:
        """One write job for the writer thread: the frame, its neighbours and the model identity."""
        return {"seq": seq, "frame": frame, "scores": scores, "score": score, "prev": prev, "next": nxt,
                "info": self.info, "sha": self.model_sha256}

    def _submit(
        self,
        seq: int,
        frame: Frame,
        scores: Dict[str, float],
        score: float,
        prev: Optional[Frame],
        nxt: Optional[Frame],
    ) -> None:
        try:
            self._queue.put_nowait(self._job(seq, frame, scores, score, prev, nxt))
        except queue.Full:
            self.dropped += 1
            self._count("spool_dropped", 1)
            log.warning("spool writer busy: dropped selected frame %d (%d dropped so far)", seq, self.dropped)

    # -- writer thread ------------------------------------------------------------------------------
    def _writer(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._write(job)
            except (EdgeDepthError, OSError, ValueError) as exc:
                self.errors += 1
                log.error("spool write failed for frame %s: %s", job.get("seq") if job else "?", exc)
            finally:
                self._queue.task_done()

    def build_item(self, job: dict) -> Tuple[Dict[str, tuple], dict]:
        frame: Frame = job["frame"]
        files: Dict[str, tuple] = {}
        data, ext = encode_rgb(frame.rgb, self.jpeg_quality)
        files[f"rgb.{ext}"] = (data, "rgb", 0)
        for key, offset in (("prev", -self.k), ("next", self.k)):
            nb: Optional[Frame] = job.get(key)
            if nb is not None:
                nb_data, nb_ext = encode_rgb(nb.rgb, self.jpeg_quality)
                files[f"{key}.{nb_ext}"] = (nb_data, "rgb_neighbor", offset)
        labels = []
        if frame.depth_gt is not None:
            files["depth.png"] = (depth_to_png_mm(frame.depth_gt), "depth_gt", 0, "mm_uint16")
            labels.append("depth_gt")
        info: ModelInfo = job["info"]
        h, w = frame.rgb.shape[:2]
        meta = {
            "device_id": self.device_id,
            "model": {"name": info.name, "version": info.version, "sha256": job["sha"]},
            "captured_at": _iso(frame.wall_time),
            "score": float(job["score"]),
            "scores": {k: float(v) for k, v in job["scores"].items() if np.isfinite(v)},
            "selection": self.selection_mode,
            "source": self.source_uri,
            "domain": frame.domain,
            "width": int(w),
            "height": int(h),
            "intrinsics": frame.intrinsics.tolist() if frame.intrinsics is not None else None,
            "pose": frame.pose.tolist() if frame.pose is not None else None,
            "labels": labels,
            "frame_index": int(frame.index),
            "depth_units": "metres",
        }
        if self.k:
            meta["neighbors"] = {"k": self.k}
            for key in ("prev", "next"):
                nb = job.get(key)
                meta["neighbors"][key] = nb is not None
                if nb is not None and nb.pose is not None:  # for self-supervised labels (rounds/selfsup.py)
                    meta["neighbors"][f"{key}_pose"] = nb.pose.tolist()
        return files, meta

    def _write(self, job: dict) -> None:
        files, meta = self.build_item(job)
        item_id = self.spool.put(files, meta)
        self.written += 1
        self._count("spool_written", 1)
        evicted = int(getattr(self.spool, "evicted", 0) or 0)
        if evicted > self._evicted_seen:
            n = evicted - self._evicted_seen
            self._evicted_seen = evicted
            self._count("spool_evicted", n)
            log.info("spool over its cap: evicted %d lowest-score item(s) (%d in total)", n, evicted)
        log.debug("spooled frame %d as %s", job["seq"], item_id[:12])

    # -- shutdown -----------------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> None:
        """Write pending items (with the neighbours available) and wait until the writer is idle."""
        for seq, frame, scores, score, prev in self._pending:
            nxt = self._ring[-1][1] if self._ring and self._ring[-1][0] > seq else None
            job = self._job(seq, frame, scores, score, prev, nxt)
            self._queue.put(job, timeout=timeout)  # blocking here: nothing selected is lost at shutdown
        self._pending = []
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=10.0)
