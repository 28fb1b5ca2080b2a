"""Thumbnails of stored frames, made on demand and kept in a bounded cache, and the colour legends.

Depth (uploaded or predicted) is drawn on one fixed log scale for every frame (near = bright, `inferno`),
so a single legend in metres reads every thumbnail; invalid pixels (0, NaN) are dark grey. Uncertainty is
stretched per frame (2nd to 98th percentile, `viridis`): its legend reads low to high. A file that does not
decode gives a placeholder image (and one log line), never an error page.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from edgedepth.depthfile import decode_depth_file
from edgedepth.errors import DataError

log = logging.getLogger(__name__)

WIDTHS = (96, 160, 320, 640)  # the only sizes served: bounds the cache's key space
INVALID_BGR = (48, 48, 48)
DEPTH_CMAP = cv2.COLORMAP_INFERNO
UNC_CMAP = cv2.COLORMAP_VIRIDIS


def _decode_scalar(data: bytes, name: str) -> np.ndarray:
    """An uncertainty map (.npy float, or a 1-channel 8/16-bit PNG) as float32 HxW (NaN = invalid)."""
    if name.endswith(".npy"):
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    else:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise DataError(f"{name} does not decode as an image")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"{name} has shape {arr.shape}; expected HxW")
    return arr


def _resize(img: np.ndarray, width: int, nearest: bool) -> np.ndarray:
    h, w = img.shape[:2]
    height = max(1, round(h * width / max(1, w)))
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if width < w else cv2.INTER_LINEAR)
    return cv2.resize(img, (width, height), interpolation=interp)


def colorize_depth(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """Metres -> BGR on a log scale from `near` (bright) to `far` (dark); invalid pixels grey."""
    valid = np.isfinite(depth) & (depth > 0)
    d = np.clip(np.where(valid, depth, far), near, far)
    v = 1.0 - (np.log(d) - math.log(near)) / (math.log(far) - math.log(near))
    out = cv2.applyColorMap(np.clip(v * 255.0 + 0.5, 0, 255).astype(np.uint8), DEPTH_CMAP)
    out[~valid] = INVALID_BGR
    return out


def colorize_scalar(arr: np.ndarray) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Per-frame 2-98 % stretch -> BGR (viridis) and the (low, high) values of the stretch."""
    valid = np.isfinite(arr)
    vals = arr[valid]
    lo, hi = (float(np.percentile(vals, 2)), float(np.percentile(vals, 98))) if vals.size else (0.0, 1.0)
    hi = max(hi, lo + 1e-6)
    v = (np.where(valid, arr, lo) - lo) / (hi - lo)
    out = cv2.applyColorMap(np.clip(v * 255.0 + 0.5, 0, 255).astype(np.uint8), UNC_CMAP)
    out[~valid] = INVALID_BGR
    return out, (lo, hi)


def render(data: bytes, name: str, kind: str, units: Optional[str], width: int,
           depth_range: Tuple[float, float]) -> bytes:
    """One stored file as a JPEG `width` pixels wide; DataError when it does not decode."""
    if kind in ("rgb", "rgb_neighbor"):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"{name} does not decode as an image")
        img = _resize(bgr, width, nearest=False)
    elif kind in ("depth_gt", "depth_sensor", "depth_pred"):
        depth = decode_depth_file(data, units, name)
        img = colorize_depth(_resize(depth, width, nearest=True), *depth_range)
    elif kind == "uncertainty":
        img, _ = colorize_scalar(_resize(_decode_scalar(data, name), width, nearest=True))
    else:
        raise DataError(f"{name}: no preview for files of kind {kind!r}")
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise DataError(f"{name}: JPEG encoding failed")
    return buf.tobytes()


def depth_stats(data: bytes, name: str, units: Optional[str]) -> Dict[str, float]:
    """Valid-pixel figures of a depth file in metres (for the detail view)."""
    depth = decode_depth_file(data, units, name)
    vals = depth[np.isfinite(depth) & (depth > 0)]
    if not vals.size:
        return {"valid": 0.0}
    p = np.percentile(vals, (0, 50, 100))
    return {"valid": float(vals.size) / depth.size, "min": float(p[0]), "median": float(p[1]),
            "max": float(p[2])}


def scalar_stats(data: bytes, name: str) -> Dict[str, float]:
    arr = _decode_scalar(data, name)
    vals = arr[np.isfinite(arr)]
    if not vals.size:
        return {"valid": 0.0}
    p = np.percentile(vals, (2, 50, 98))
    return {"valid": float(vals.size) / arr.size, "p2": float(p[0]), "median": float(p[1]),
            "p98": float(p[2])}


_PLACEHOLDER: Dict[int, bytes] = {}


def placeholder(width: int) -> bytes:
    """A grey JPEG with a cross: shown where a file does not decode."""
    if width not in _PLACEHOLDER:
        h = max(1, width * 3 // 4)
        img = np.full((h, width, 3), 90, np.uint8)
        cv2.line(img, (0, 0), (width - 1, h - 1), (160, 160, 160), max(1, width // 80))
        cv2.line(img, (0, h - 1), (width - 1, 0), (160, 160, 160), max(1, width // 80))
        _PLACEHOLDER[width] = cv2.imencode(".jpg", img)[1].tobytes()
    return _PLACEHOLDER[width]


def depth_ticks(near: float, far: float) -> List[Tuple[float, float]]:
    """(metres, position 0..1 from near to far on the log scale) of round values within [near, far]."""
    out = []
    span = math.log(far) - math.log(near)
    for exp in range(-2, 4):
        for m in (1, 2, 5):
            v = m * 10.0 ** exp
            if near <= v <= far:
                out.append((v, (math.log(v) - math.log(near)) / span))
    return out


def gradient_stops(cmap: int, reverse: bool, n: int = 16) -> List[Tuple[float, str]]:
    """(offset 0..1, '#rrggbb') stops of an OpenCV colour map, for an SVG linear gradient."""
    ramp = np.linspace(255, 0, n) if reverse else np.linspace(0, 255, n)
    bgr = cv2.applyColorMap(ramp.astype(np.uint8).reshape(1, -1), cmap)[0]
    return [(i / (n - 1), f"#{int(c[2]):02x}{int(c[1]):02x}{int(c[0]):02x}") for i, c in enumerate(bgr)]


class ThumbnailCache:
    """LRU of rendered thumbnails, bounded by total bytes (thread-safe)."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.misses = 0
        self._items: "OrderedDict[tuple, bytes]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Optional[bytes]:
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: tuple, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            self._items[key] = data
            self.bytes += len(data)
            while self.bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)
