"""Store items as training data: their images and the depth uploaded with them (teachers: edgedepth.teachers).

Shared by the round builder (edgedepth.rounds.build) and the self-supervised labeller
(edgedepth.rounds.selfsup).
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

from edgedepth.depthfile import decode_depth_file
from edgedepth.errors import DataError

LABEL_KINDS = ("depth_gt", "depth_sensor")  # uploaded depth, best first


def rgb_name(meta: dict) -> str:
    for name, e in meta["files"].items():
        if e.get("kind") == "rgb" and int(e.get("offset", 0)) == 0:
            return name
    raise DataError(f"item {str(meta.get('id'))[:12]} has no rgb file")


def read_item_image(store, meta: dict, name: str) -> np.ndarray:
    """One image file of a store item as RGB uint8; DataError when it does not decode."""
    bgr = cv2.imdecode(np.frombuffer(store.read_file(meta["id"], name), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"item {meta['id'][:12]}: {name} does not decode as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_rgb(store, meta: dict) -> np.ndarray:
    """The item's own frame (offset 0) as RGB uint8."""
    return read_item_image(store, meta, rgb_name(meta))


def uploaded_label(meta: dict) -> Optional[Tuple[str, str]]:
    """(label kind, file name) of the best depth uploaded with an item, or None."""
    for kind in LABEL_KINDS:
        for name, e in meta.get("files", {}).items():
            if e.get("kind") == kind:
                return kind, name
    return None


def read_depth(store, meta: dict, name: str, shape: Tuple[int, int]) -> np.ndarray:
    entry = meta["files"][name]
    depth = decode_depth_file(store.read_file(meta["id"], name), entry.get("units"), name)
    if depth.shape != shape:
        raise DataError(f"item {meta['id'][:12]}: depth {depth.shape} does not match the image {shape}")
    return depth
