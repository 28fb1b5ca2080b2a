"""Metric depth + pinhole intrinsics -> 3D points (metres) and PLY files; camera calibration loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

from edgedepth.errors import ConfigError, DataError


def scale_intrinsics(K: np.ndarray, from_size: Tuple[int, int], to_size: Tuple[int, int]) -> np.ndarray:
    """K for an image resized from (h, w) to (h', w') (pixel-centre convention)."""
    (h0, w0), (h1, w1) = from_size, to_size
    sx, sy = w1 / float(w0), h1 / float(h0)
    K2 = np.array(K, dtype=np.float64).copy()
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5
    return K2


def depth_to_points(
    depth: np.ndarray, K: np.ndarray, mask: Optional[np.ndarray] = None, max_depth: Optional[float] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """(N,3) float32 camera-frame points (x right, y down, z forward; metres) and (N,) pixel indices."""
    h, w = depth.shape
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    valid = np.isfinite(depth) & (depth > 0)
    if max_depth is not None:
        valid &= depth <= max_depth
    if mask is not None:
        valid &= mask
    idx = np.flatnonzero(valid)
    z = depth.ravel()[idx].astype(np.float32)
    v, u = np.divmod(idx, w)
    x = (u.astype(np.float32) - cx) * z / fx
    y = (v.astype(np.float32) - cy) * z / fy
    return np.stack([x, y, z], axis=1), idx


def write_ply(path, points: np.ndarray, colors: Optional[np.ndarray] = None, comments=()) -> Path:
    """Binary little-endian PLY with float xyz (metres) and optional uchar rgb."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(points.shape[0])
    header = ["ply", "format binary_little_endian 1.0", "comment units: metres (metric depth)"]
    header += [f"comment {c}" for c in comments]
    header += [f"element vertex {n}", "property float x", "property float y", "property float z"]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    header.append("end_header")
    rec = np.empty(n, dtype=fields)
    rec["x"], rec["y"], rec["z"] = points[:, 0], points[:, 1], points[:, 2]
    if colors is not None:
        rec["red"], rec["green"], rec["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rec.tobytes())
    tmp.replace(path)
    return path


def read_ply_header(path) -> list:
    lines = []
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("ascii", "replace").strip()
            lines.append(line)
            if line == "end_header":
                break
    return lines


def load_intrinsics(path) -> Tuple[np.ndarray, Optional[Tuple[int, int]]]:
    """(K 3x3, (height, width) it applies to or None) from an OpenCV calibration YAML/XML or a JSON file.

    YAML/XML: OpenCV FileStorage with `camera_matrix` (or `K`) and optional `image_width`/`image_height`.
    JSON: {"camera_matrix": 3x3 | {"data": [9 values]}, "image_width": W, "image_height": H}
    or {"fx", "fy", "cx", "cy", "width", "height"}.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"intrinsics file {path} does not exist")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read intrinsics JSON {path}: {exc}") from exc
        return _intrinsics_from_dict(data, path)
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    if not fs.isOpened():
        raise DataError(f"cannot read {path} as an OpenCV calibration file (YAML/XML)")
    try:
        node = fs.getNode("camera_matrix")
        if node.empty():
            node = fs.getNode("K")
        if node.empty():
            raise DataError(f"{path} has no 'camera_matrix' (or 'K') entry")
        K = node.mat()
        w, h = fs.getNode("image_width"), fs.getNode("image_height")
        size = (int(h.real()), int(w.real())) if not w.empty() and not h.empty() else None
    finally:
        fs.release()
    return _check_K(np.asarray(K, dtype=np.float64), path), size


def _intrinsics_from_dict(data: dict, path: Path) -> Tuple[np.ndarray, Optional[Tuple[int, int]]]:
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    K = data.get("camera_matrix", data.get("K"))
    if isinstance(K, dict):
        K = K.get("data")
    if K is None and all(k in data for k in ("fx", "fy", "cx", "cy")):
        K = [[data["fx"], 0, data["cx"]], [0, data["fy"], data["cy"]], [0, 0, 1]]
    if K is None:
        raise DataError(f"{path}: needs 'camera_matrix' (3x3 or {{'data': [9 values]}}) or fx/fy/cx/cy")
    try:
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    except ValueError as exc:
        raise DataError(f"{path}: camera_matrix must have 9 values") from exc
    w = data.get("image_width", data.get("width"))
    h = data.get("image_height", data.get("height"))
    return _check_K(K, path), ((int(h), int(w)) if w and h else None)


def _check_K(K: np.ndarray, path) -> np.ndarray:
    if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataError(f"{path}: camera matrix must be 3x3 with positive fx, fy (got {K.tolist()})")
    return K


def intrinsics_from_device(device, size: Tuple[int, int]) -> Optional[np.ndarray]:
    """K at `size` (h, w) from a DeviceConfig's camera intrinsics (given at its output size)."""
    cam = getattr(device, "camera", None)
    intr = getattr(cam, "intrinsics", None) if cam is not None else None
    if intr is None:
        return None
    K = np.array([[intr.fx, 0, intr.cx], [0, intr.fy, intr.cy], [0, 0, 1]], dtype=np.float64)
    return scale_intrinsics(K, (cam.output_height, cam.output_width), size)


def result_intrinsics(result, fixed=None, device=None, size: Optional[Tuple[int, int]] = None
                      ) -> Optional[np.ndarray]:
    """K at `size` (h, w; default: the depth map's) for a DepthResult, or None when nothing gives one.

    Precedence: a fixed calibration (K, (h, w) it applies to or None = the frame's size), the frame's own
    intrinsics, the board's device config."""
    frame = result.frame
    fh, fw = frame.rgb.shape[:2]
    size = tuple(size) if size is not None else tuple(result.depth.shape[:2])
    if fixed is not None:
        K, at = fixed
        return scale_intrinsics(K, at or (fh, fw), size)
    if frame.intrinsics is not None:
        return scale_intrinsics(frame.intrinsics, (fh, fw), size)
    if device is not None:
        return intrinsics_from_device(device, size)
    return None
