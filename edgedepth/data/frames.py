"""Frames for parity checks, calibration and the accuracy gate; coverage-based calibration selection.

Sources: a dataset directory or DIR,DIR,... (read through edgedepth.data.dataset.open_datasets), or
synthetic frames (edgedepth.data.synth). Calibration frames are
chosen for coverage (k-center greedy on a cheap image embedding), not the first N.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgedepth.data import synth
from edgedepth.data.dataset import open_datasets
from edgedepth.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class FrameSet:
    """RGB uint8 (N,H,W,3) at one size, optional depth float32 metres (N,H,W) with 0 = invalid."""

    rgb: np.ndarray
    depth: Optional[np.ndarray]
    names: List[str]
    source: str = ""
    domains: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def subset(self, index: Sequence[int]) -> "FrameSet":
        idx = np.asarray(list(index), dtype=np.int64)
        return FrameSet(self.rgb[idx], None if self.depth is None else self.depth[idx],
                        [self.names[i] for i in idx], self.source,
                        [self.domains[i] for i in idx] if self.domains else [])

    @property
    def has_depth(self) -> bool:
        return self.depth is not None and bool(np.any(self.depth > 0))


def _resize(rgb: np.ndarray, depth: Optional[np.ndarray], height: int, width: int):
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"expected an RGB image HxWx3, got shape {rgb.shape}")
    if rgb.shape[:2] != (height, width):
        interp = cv2.INTER_AREA if rgb.shape[0] >= height else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (width, height), interpolation=interp)
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float32)
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
        if depth.shape[:2] != (height, width):
            depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    return rgb, depth


def load_frameset(path: str, height: int, width: int, limit: Optional[int] = None) -> FrameSet:
    """Decode a dataset directory (or DIR,DIR,...) at height x width (depth kept when present).

    `limit`: at most this many frames, evenly spaced over the whole dataset (every domain represented).
    """
    parts = [p.strip() for p in str(path).split(",") if p.strip()]
    for part in parts:
        bare = part.split(":", 1)[1] if ":" in part and not Path(part).exists() else part  # "nyu:DIR"
        if not Path(bare).exists():
            raise DataError(f"data directory {part} does not exist; create one with `edgedepth data synth` "
                            "or point --data at a folder of images (rgb/ and optional depth/)")
    root = Path(parts[0]) if len(parts) == 1 else Path(str(path))
    rgbs, depths, names, domains = [], [], [], []
    ds = open_datasets(",".join(parts))
    for i in _spread(len(ds), limit):
        s = ds[i]
        rgb, depth = _resize(np.asarray(s.rgb), None if s.depth is None else s.depth, height, width)
        rgbs.append(rgb)
        depths.append(depth)
        names.append(str(s.name))
        domains.append(str(getattr(s, "domain", "") or "unknown"))
    if not rgbs:
        raise DataError(f"{root} holds no readable frames")
    has_depth = all(d is not None for d in depths)
    depth_arr = np.stack(depths) if has_depth else None
    return FrameSet(np.stack(rgbs), depth_arr, names, str(root), domains)


def _spread(n: int, limit: Optional[int]) -> List[int]:
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, max(1, int(limit))).round().astype(int).tolist()))


def synthetic_frameset(n: int, height: int, width: int, seed: int = 0) -> FrameSet:
    """Synthetic frames with depth from the data package's renderer (edgedepth.data.synth)."""
    rgbs, depths, names, domains = [], [], [], []
    cycle = list(synth.DOMAINS)
    for i in range(n):
        frame = synth.render_frame(cycle[i % len(cycle)], seed + i, height, width)
        rgb, depth = _frame_parts(frame)
        rgb, depth = _resize(rgb, depth, height, width)
        rgbs.append(rgb)
        depths.append(depth)
        names.append(f"synth-{seed + i:05d}")
        domains.append(str(getattr(frame, "domain", "") or "synthetic"))
    return FrameSet(np.stack(rgbs), np.stack(depths), names, "synthetic", domains)


def _frame_parts(frame) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    if isinstance(frame, dict):
        return np.asarray(frame["rgb"]), frame.get("depth")
    if isinstance(frame, tuple):
        return np.asarray(frame[0]), frame[1] if len(frame) > 1 else None
    return np.asarray(frame.rgb), getattr(frame, "depth", None)


def get_frames(data: Optional[str], n: int, height: int, width: int, seed: int = 0) -> FrameSet:
    """`n` frames evenly spaced over `data` (all when it has fewer), else `n` synthetic ones."""
    if data:
        return load_frameset(data, height, width, limit=n)
    return synthetic_frameset(n, height, width, seed)


# ---------------------------------------------------------------- coverage selection
def embed(rgb: np.ndarray) -> np.ndarray:
    """Cheap per-frame embedding (N,D): 4x4 mean colour grid, global colour stats, edge energy grid.

    Standardised per dimension, so k-center distances weigh layout, colour and texture alike.
    """
    feats = []
    for img in rgb:
        f = img.astype(np.float32) / 255.0
        grid = cv2.resize(f, (4, 4), interpolation=cv2.INTER_AREA).reshape(-1)
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
        edges = cv2.resize(np.sqrt(gx * gx + gy * gy), (4, 4), interpolation=cv2.INTER_AREA).reshape(-1)
        stats = np.concatenate([f.reshape(-1, 3).mean(0), f.reshape(-1, 3).std(0),
                                np.percentile(gray, [5, 50, 95])])
        feats.append(np.concatenate([grid, stats, edges]))
    x = np.asarray(feats, dtype=np.float64)
    std = x.std(0)
    return (x - x.mean(0)) / np.where(std > 1e-9, std, 1.0)


def k_center_greedy(x: np.ndarray, k: int) -> List[int]:
    """Pick k rows covering x: start at the row nearest the mean, then repeatedly the farthest row."""
    n = x.shape[0]
    if k >= n:
        return list(range(n))
    first = int(np.argmin(((x - x.mean(0)) ** 2).sum(1)))
    chosen = [first]
    dist = ((x - x[first]) ** 2).sum(1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((x - x[nxt]) ** 2).sum(1))
    return chosen


def split_calibration(frames: FrameSet, n_calib: int, holdout_fraction: float = 0.25
                      ) -> Tuple[List[int], List[int]]:
    """(calibration indices chosen for coverage, held-out indices). Every 4th frame is held out."""
    n = len(frames)
    if n < 2:
        raise DataError(f"{frames.source}: need at least 2 frames to calibrate and hold out, got {n}")
    step = max(2, int(round(1.0 / holdout_fraction)))
    holdout = list(range(step - 1, n, step))
    pool = [i for i in range(n) if i not in set(holdout)]
    picked = k_center_greedy(embed(frames.rgb[pool]), n_calib)
    return [pool[i] for i in picked], holdout
