"""Depth files as items carry them: a 16-bit PNG in millimetres, or a float32 .npy in metres.

One decoder for every reader of stored items (the round builder, the data browser)."""

from __future__ import annotations

import io
from typing import Optional

import cv2
import numpy as np

from edgedepth.errors import DataError


def decode_depth_file(data: bytes, units: Optional[str], name: str) -> np.ndarray:
    """Depth in metres, float32 HxW, 0 where invalid; DataError when the file is not a depth map."""
    if name.endswith(".npy") or units == "m_float32":
        depth = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[..., 0]
    else:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
            raise DataError(f"depth file {name} is not a single-channel 16-bit PNG")
        depth = raw.astype(np.float32) / 1000.0
    if depth.ndim != 2:
        raise DataError(f"depth file {name} has shape {depth.shape}; expected HxW")
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
