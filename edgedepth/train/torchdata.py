"""Datasets held in memory at the model's input size, plus their lineage (what exactly was trained on).

Decoding PNGs every epoch would dominate a CPU training run; 3000 frames at 96x128 are ~150 MB as
uint8 RGB + float32 depth, so every frame is decoded once (threads: OpenCV releases the GIL),
resized to the network input and kept as numpy arrays. RGB is area-resized; depth is resized with
nearest-neighbour so every kept value is a real measurement and invalid (0) pixels never blend into
valid ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

from edgedepth.errors import DataError

log = logging.getLogger(__name__)

# Above this many bytes per dataset directory, lineage falls back from content hashes to a hash of
# the file list with sizes and mtimes (hashing reads every byte; 2 GB is ~2-4 s per GB on a laptop).
CONTENT_HASH_LIMIT_BYTES = 2 * 1024 ** 3


@dataclass
class Frames:
    """Frames resized to one size: rgb uint8 (N,H,W,3), depth float32 metres (N,H,W), 0 = invalid."""

    rgb: np.ndarray
    depth: np.ndarray
    names: List[str]
    domains: List[str]
    sources: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def subset(self, index: Sequence[int]) -> "Frames":
        idx = np.asarray(index, dtype=np.int64)
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return Frames(self.rgb[idx], self.depth[idx], pick(self.names), pick(self.domains),
                      pick(self.sources) if self.sources else [])

    @staticmethod
    def concat(parts: Sequence["Frames"]) -> "Frames":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise DataError("no frames to concatenate")
        return Frames(np.concatenate([p.rgb for p in parts]), np.concatenate([p.depth for p in parts]),
                      sum((p.names for p in parts), []), sum((p.domains for p in parts), []),
                      sum((p.sources for p in parts), []))


def _open(path: str):
    from edgedepth.data.dataset import open_dataset

    return open_dataset(path)


def _resize_pair(rgb: np.ndarray, depth: np.ndarray, height: int, width: int):
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"expected an RGB image HxWx3, got shape {rgb.shape}")
    if rgb.shape[:2] != (height, width):
        interp = cv2.INTER_AREA if rgb.shape[0] >= height else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (width, height), interpolation=interp)
    depth = np.asarray(depth, dtype=np.float32)
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    if depth.shape[:2] != (height, width):
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    return rgb, depth


def load_frames(path: str, height: int, width: int, workers: int = 2, limit: Optional[int] = None
                ) -> Frames:
    """Decode one dataset directory into memory at height x width."""
    ds = _open(path)
    n = len(ds)
    if limit is not None:
        n = min(n, int(limit))
    if n == 0:
        raise DataError(f"dataset {path} holds no frames")
    rgb = np.empty((n, height, width, 3), dtype=np.uint8)
    depth = np.empty((n, height, width), dtype=np.float32)
    names: List[str] = [""] * n
    domains: List[str] = [""] * n

    def one(i: int) -> None:
        s = ds[i]
        if s.depth is None:
            raise DataError(f"frame {s.name} in {path} has no depth; training and evaluation need depth")
        rgb[i], depth[i] = _resize_pair(s.rgb, s.depth, height, width)
        names[i] = str(s.name)
        domains[i] = str(s.domain or "unknown")

    if workers > 1 and n > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(n)))
    else:
        for i in range(n):
            one(i)
    return Frames(rgb, depth, names, domains, [str(path)] * n)


def load_many(paths: Sequence[str], height: int, width: int, workers: int = 2,
              limit: Optional[int] = None) -> Frames:
    """Concatenate several dataset directories (order kept)."""
    return Frames.concat([load_frames(p, height, width, workers, limit) for p in paths])


def dataset_lineage(path: str) -> Dict[str, Any]:
    """Identity of a dataset directory: sha256 over (relative path, sha256 of content) of every file.

    Directories larger than CONTENT_HASH_LIMIT_BYTES are identified by a sha256 of
    (relative path, size, mtime) instead; `method` says which was used.
    """
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    total = sum(p.stat().st_size for p in files)
    method = "content-sha256" if total <= CONTENT_HASH_LIMIT_BYTES else "list-size-mtime-sha256"
    h = hashlib.sha256()
    for p in files:
        rel = p.relative_to(root).as_posix()
        if method == "content-sha256":
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            h.update(f"{rel}\0{digest}\n".encode())
        else:
            st = p.stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"path": str(root.resolve()), "files": len(files), "bytes": total, "method": method,
            "sha256": h.hexdigest()}


def batch_tensors(frames: Frames, index: np.ndarray, device: Any = "cpu"):
    """(rgb uint8 (B,H,W,3), depth float32 (B,1,H,W)) torch tensors of the chosen frames."""
    import torch

    rgb = torch.from_numpy(frames.rgb[index]).to(device)
    depth = torch.from_numpy(frames.depth[index]).unsqueeze(1).to(device)
    return rgb, depth


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))
