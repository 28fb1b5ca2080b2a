"""`edgedepth data import`: recordings into the folder dataset format (torch-free).

Inputs: a ROS 2 bag (MCAP / sqlite3 file or rosbag2 folder) or a ROS 1 .bag (edgedepth.data.bagfile),
a video file (OpenCV), or a folder of images. Output (edgedepth.data.formats): rgb/NAME.png|jpg,
depth/NAME.png (uint16 mm, from 16UC1 depth) or depth/NAME.npy (float32 m, from 32FC1 depth) where the
recording has depth, and meta.json with the source, the intrinsics and, per frame, its time `t`
(seconds since the recording's start), its header stamp and its position in the source (`source_index`).

Names map outputs back to inputs: an image folder keeps its file names; videos and bags number frames by
their position in the source (000123 = the 124th colour frame), so subsampling leaves gaps.
Subsampling: `every` keeps a frame when at least that many seconds passed since the last kept one;
`change` keeps it when its mean absolute difference to the last kept frame (grey 32x24 thumbnails,
intensities 0..1) is at least that much.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Union

import cv2
import numpy as np

from edgedepth.data.formats import IMAGE_EXTS, write_meta, write_sample
from edgedepth.errors import ConfigError, DataError

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".h264", ".h265")
FOLDER_IMAGE_EXTS = IMAGE_EXTS + (".bmp", ".tif", ".tiff", ".webp")


class FrameSelector:
    """Keeps frames by elapsed time (`every` seconds) and/or by image change (`change`, 0..1)."""

    def __init__(self, every: Optional[float] = None, change: Optional[float] = None):
        if change is not None and not 0 <= change <= 1:
            raise ConfigError(f"--change must be in [0, 1] (mean absolute grey difference), got {change}")
        self.every, self.change = every, change
        self.last_t: Optional[float] = None
        self.last_thumb: Optional[np.ndarray] = None

    def due(self, t: Optional[float]) -> bool:
        """The time test, before the frame is decoded."""
        if not self.every or self.last_t is None:
            return True
        if t is None:
            raise ConfigError("--every needs timestamps; an image folder has none (use --change)")
        return t - self.last_t >= self.every - 1e-9

    @staticmethod
    def thumbnail(rgb: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    def changed(self, rgb: np.ndarray) -> bool:
        if self.change is None or self.last_thumb is None:
            return True
        return float(np.mean(np.abs(self.thumbnail(rgb) - self.last_thumb))) >= self.change

    def keep(self, t: Optional[float], rgb: np.ndarray) -> None:
        self.last_t = t
        if self.change is not None:
            self.last_thumb = self.thumbnail(rgb)


@dataclass
class Candidate:
    """One source frame before it is written; rgb/depth decode lazily."""

    name: str
    index: int
    t: Optional[float]
    rgb: Callable[[], np.ndarray]
    depth: Callable[[], Optional[np.ndarray]] = lambda: None
    intrinsics: Optional[np.ndarray] = None
    encoded: Optional[Callable[[], Optional[bytes]]] = None  # JPEG bytes to pass through unchanged
    meta: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportReport:
    source: str
    kind: str
    out: str
    read: int = 0
    written: int = 0
    with_depth: int = 0
    seconds: float = 0.0
    topics: Dict[str, Optional[str]] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        depth = f", {self.with_depth} with depth" if self.written else ""
        return (f"imported {self.written} of {self.read} {self.kind} frames{depth} into {self.out} in "
                f"{self.seconds:.2f} s ({self.fps:.1f} source frames/s)")


# -- sources -------------------------------------------------------------------------------------------
def source_kind(path: Path) -> str:
    from edgedepth.data.bagfile import is_recording

    if not path.exists():
        raise DataError(f"{path} does not exist")
    if is_recording(path):
        return "bag"
    if path.is_dir():
        return "images"
    if path.suffix.lower() in VIDEO_EXTS:
        return "video"
    raise DataError(f"cannot import {path}: give a ROS bag (.mcap, .db3, .bag or a rosbag2 folder), a video "
                    f"({', '.join(VIDEO_EXTS)}) or a folder of images")


def _image_candidates(folder: Path) -> Iterator[Candidate]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FOLDER_IMAGE_EXTS
                   and not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(FOLDER_IMAGE_EXTS)})")
    stems: Dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise DataError(f"{p.name} and {stems[p.stem].name} share the name {p.stem!r}; the dataset keeps "
                            "names, so rename one")
        stems[p.stem] = p

    for i, p in enumerate(files):
        def rgb(p=p) -> np.ndarray:
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DataError(f"cannot decode image {p}")
            return np.ascontiguousarray(bgr[..., ::-1])

        jpeg = p.suffix.lower() in (".jpg", ".jpeg")
        yield Candidate(p.stem, i, None, rgb, encoded=(lambda p=p: p.read_bytes()) if jpeg else None,
                        meta={"source_file": p.name})


def _video_candidates(path: Path, start: Optional[float], end: Optional[float]) -> Iterator[Candidate]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"cannot open video {path} (OpenCV could not decode it)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
    try:
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            t = i / fps
            if end is not None and t >= end:
                break
            if start is None or t >= start:
                rgb = np.ascontiguousarray(bgr[..., ::-1]) if bgr.ndim == 3 else cv2.cvtColor(
                    bgr, cv2.COLOR_GRAY2RGB)
                yield Candidate(f"{i:06d}", i, t, lambda rgb=rgb: rgb)
            i += 1
    finally:
        cap.release()


def _bag_candidates(rec, topics, start, end, tolerance) -> Iterator[Candidate]:
    from edgedepth.data.bagfile import COMPRESSED

    for f in rec.frames(topics, start=start, end=end, tolerance=tolerance):
        def encoded(f=f) -> Optional[bytes]:
            fmt = str(getattr(f.rgb_msg, "format", "")).lower()
            if f.rgb_type == COMPRESSED and ("jpeg" in fmt or "jpg" in fmt):
                return np.asarray(f.rgb_msg.data, np.uint8).tobytes()
            return None

        meta = {"stamp_ns": f.stamp_ns}
        if f.depth_dt is not None:
            meta["depth_dt"] = round(f.depth_dt, 6)
        yield Candidate(f"{f.index:06d}", f.index, f.t, f.rgb, f.depth, f.intrinsics, encoded, meta)


# -- the import ----------------------------------------------------------------------------------------
def import_recording(source: Union[str, Path], out: Union[str, Path], *, topic: Optional[str] = None,
                     depth_topic: Optional[str] = None, info_topic: Optional[str] = None,
                     start: Optional[float] = None, end: Optional[float] = None,
                     every: Optional[float] = None, change: Optional[float] = None,
                     max_frames: Optional[int] = None, tolerance: float = 0.02,
                     image_format: str = "auto", depth_format: str = "auto", domain: Optional[str] = None,
                     writers: int = 4, progress: Optional[Callable[[int], None]] = None) -> ImportReport:
    """Write `source` (bag, video or image folder) to `out` in the folder dataset format."""
    src = Path(source).expanduser()
    out = Path(out).expanduser()
    kind = source_kind(src)
    if image_format not in ("auto", "png", "jpg") or depth_format not in ("auto", "png", "npy"):
        raise ConfigError("--image-format is auto, png or jpg; --depth-format is auto, png or npy")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"output {out} exists and is not empty; choose a new folder")
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"--end ({end}) must be after --start ({start})")
    if kind == "images" and (start is not None or end is not None or every):
        raise ConfigError("an image folder has no timestamps: --start, --end and --every do not apply "
                          "(use --change or --max-frames)")
    if tolerance < 0:
        raise ConfigError(f"--depth-tolerance must be >= 0, got {tolerance}")
    selector = FrameSelector(every, change)
    report = ImportReport(str(src), kind, str(out))
    t0 = time.perf_counter()
    rec = None
    # durable writes wait on fsync; a few writer threads overlap that wait with reading and decoding
    pool = ThreadPoolExecutor(max_workers=writers)
    inflight: Deque[Future] = deque()
    try:
        if kind == "bag":
            from edgedepth.data.bagfile import Recording

            rec = Recording(src)
            topics = rec.choose_topics(topic, depth_topic, info_topic)
            report.topics = {"rgb": topics.rgb, "depth": topics.depth, "camera_info": topics.info}
            cands: Iterator[Candidate] = _bag_candidates(rec, topics, start, end, tolerance)
        elif kind == "video":
            cands = _video_candidates(src, start, end)
        else:
            cands = _image_candidates(src)
        frames_meta: Dict[str, Dict[str, Any]] = {}
        intrinsics: List[np.ndarray] = []
        depth_kinds = set()
        out.mkdir(parents=True, exist_ok=True)
        for c in cands:
            if max_frames is not None and report.written >= max_frames:
                break
            report.read += 1
            if not selector.due(c.t):
                continue
            rgb = c.rgb()
            if not selector.changed(rgb):
                continue
            depth = c.depth()
            enc = c.encoded() if (c.encoded is not None and image_format in ("auto", "jpg")) else None
            img_fmt = "jpg" if enc is not None else ("png" if image_format == "auto" else image_format)
            d_fmt = depth_format
            if d_fmt == "auto":  # lossless: mm PNG for integer depth, float .npy for metric floats
                d_fmt = "png" if depth is None or _is_millimetres(depth) else "npy"
            inflight.append(pool.submit(write_sample, out, c.name, rgb, depth, depth_format=d_fmt,
                                        image_format=img_fmt, encoded_rgb=enc))
            while len(inflight) > 2 * writers:
                inflight.popleft().result()
            selector.keep(c.t, rgb)
            fm: Dict[str, Any] = dict(c.meta, source_index=c.index)
            if c.t is not None:
                fm["t"] = round(float(c.t), 6)
            if c.intrinsics is not None:
                fm["intrinsics"] = np.asarray(c.intrinsics).tolist()
                intrinsics.append(np.asarray(c.intrinsics))
            if depth is not None:
                report.with_depth += 1
                depth_kinds.add(d_fmt)
            frames_meta[c.name] = fm
            report.written += 1
            if progress is not None:
                progress(report.written)
        while inflight:
            inflight.popleft().result()
    finally:
        pool.shutdown(wait=True)
        if rec is not None:
            rec.close()
    if report.written == 0:
        raise DataError(f"no frames imported from {src} (read {report.read}); widen --start/--end or "
                        "lower --every/--change")
    meta: Dict[str, Any] = {"source": str(src), "importer": kind, "frames": frames_meta}
    if report.topics:
        meta["topics"] = report.topics
    if domain:
        meta["domain"] = domain
    if intrinsics and len(intrinsics) == report.written and all(
            np.array_equal(k, intrinsics[0]) for k in intrinsics):
        meta["intrinsics"] = intrinsics[0].tolist()
        for fm in frames_meta.values():
            fm.pop("intrinsics", None)
    write_meta(out, meta)
    report.seconds = time.perf_counter() - t0
    return report


def _is_millimetres(depth: np.ndarray) -> bool:
    """True when every valid value is a whole number of millimetres up to 65.535 m (a 16UC1 source)."""
    v = depth[depth > 0]
    if v.size == 0:
        return True
    mm = v.astype(np.float64) * 1000.0
    return bool(mm.max() <= 65535 and np.all(np.abs(mm - np.round(mm)) < 1e-3))
