"""Teacher outputs cached on disk, keyed by the teacher's identity and the frame's pixels.

A foundation-model teacher costs seconds per frame on a CPU; the same frames are labelled again by a
second training run, a second round that replays them, or a second alignment setting. The cache holds
the teacher's raw output (before any alignment, which is cheap), one .npy per (teacher, frame), under
ROOT/<key[:2]>/<key>.npy, written atomically; a damaged file is recomputed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from edgedepth.fsutil import write_bytes_atomic

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$EDGEDEPTH_CACHE/teacher-labels, else $XDG_CACHE_HOME (or ~/.cache)/edgedepth/teacher-labels."""
    root = os.environ.get("EDGEDEPTH_CACHE")
    if root:
        return Path(root) / "teacher-labels"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgedepth" / "teacher-labels"


def frame_hash(rgb: np.ndarray) -> str:
    """sha256 of a frame's shape and pixels."""
    a = np.ascontiguousarray(rgb)
    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


class LabelCache:
    """`outputs(teacher, images)`: the teacher's maps, computing (batched) only the frames not cached."""

    def __init__(self, root=None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> Optional[np.ndarray]:
        p = self._path(key)
        if not p.is_file():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("recomputing damaged cached label %s (%s)", p, exc)
            return None

    def put(self, key: str, value: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(value, np.float32), allow_pickle=False)
        write_bytes_atomic(self._path(key), buf.getvalue())

    def outputs(self, teacher, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        ident = teacher.identity
        keys = [hashlib.sha256(f"{ident}:{frame_hash(img)}".encode()).hexdigest() for img in images]
        out: List[Optional[np.ndarray]] = [self.get(k) for k in keys]
        for i, (o, img) in enumerate(zip(out, images)):
            if o is not None and o.shape != img.shape[:2]:
                out[i] = None
        todo = [i for i, o in enumerate(out) if o is None]
        self.hits += len(images) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = teacher.predict_many([images[i] for i in todo])
            for i, value in zip(todo, fresh):
                self.put(keys[i], value)
                out[i] = value
        return out  # type: ignore[return-value]


def teacher_outputs(teacher, images: Sequence[np.ndarray], cache: Optional[LabelCache]) -> List[np.ndarray]:
    """The teacher's maps for `images`, through `cache` when one is given."""
    return cache.outputs(teacher, images) if cache is not None else teacher.predict_many(images)
