"""Two-view geometry for the classical baseline: relative motion, epipolar checks, triangulation.

Conventions: poses are camera-to-world 4x4 (OpenCV camera axes: x right, y down, z forward);
depth is z along the optical axis of the *reference* camera (view 1), in the units of the poses.
The relative motion (R, t) maps view-1 camera coordinates to view-2: X2 = R @ X1 + t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from edgedepth.errors import DataError


@dataclass(frozen=True)
class RelativeMotion:
    """Known motion from view 1 to view 2 (X2 = R X1 + t) and the shared intrinsics."""

    R: np.ndarray  # 3x3
    t: np.ndarray  # (3,)
    K: np.ndarray  # 3x3

    @property
    def baseline(self) -> float:
        """Distance between the two camera centres."""
        return float(np.linalg.norm(self.t))

    @property
    def rotation_deg(self) -> float:
        cos = (np.trace(self.R) - 1.0) / 2.0
        return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))

    def essential(self) -> np.ndarray:
        return skew(self.t) @ self.R

    def fundamental(self) -> np.ndarray:
        kinv = np.linalg.inv(self.K)
        return kinv.T @ self.essential() @ kinv


def skew(v: np.ndarray) -> np.ndarray:
    x, y, z = (float(c) for c in v)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def relative_motion(pose1: np.ndarray, pose2: np.ndarray, K: np.ndarray) -> RelativeMotion:
    """Relative motion between two camera-to-world poses (view 1 is the reference)."""
    p1 = np.asarray(pose1, dtype=np.float64)
    p2 = np.asarray(pose2, dtype=np.float64)
    k = np.asarray(K, dtype=np.float64)
    if p1.shape != (4, 4) or p2.shape != (4, 4):
        raise DataError(f"poses must be 4x4 camera-to-world matrices, got {p1.shape} and {p2.shape}")
    if k.shape != (3, 3) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise DataError(f"intrinsics must be a 3x3 matrix with positive focal lengths, got {k.tolist()}")
    if not (np.all(np.isfinite(p1)) and np.all(np.isfinite(p2))):
        raise DataError("a pose contains NaN or infinite values")
    T = np.linalg.inv(p2) @ p1
    return RelativeMotion(R=T[:3, :3].copy(), t=T[:3, 3].copy(), K=k)


def sampson_distance(F: np.ndarray, pts1: np.ndarray, pts2: np.ndarray) -> np.ndarray:
    """First-order geometric distance (pixels) of correspondences to the epipolar geometry F."""
    n = len(pts1)
    x1 = np.hstack([pts1, np.ones((n, 1))])
    x2 = np.hstack([pts2, np.ones((n, 1))])
    Fx1 = x1 @ F.T
    Ftx2 = x2 @ F
    num = np.sum(x2 * Fx1, axis=1) ** 2
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-18))


@dataclass
class Triangulation:
    """Per-pixel depth from correspondences plus the quantities used to reject pixels."""

    depth: np.ndarray  # HxW float32, metres along view-1 z; NaN where it cannot be solved
    parallax_px: np.ndarray  # HxW: displacement (px) of the match from the point-at-infinity image
    epipolar_px: np.ndarray  # HxW: distance (px) of the match from its epipolar line


def triangulate_points(pts1: np.ndarray, pts2: np.ndarray,
                       motion: RelativeMotion) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (view-1 z), parallax (px) and epipolar distance (px) of correspondences x1 <-> x2 (N x 2).

    With a = K R K^-1 x1 and b = K t, a point at depth d projects to (d a_xy + b_xy) / (d a_z + b_z).
    Each observed x2 gives two linear equations in d, solved in least squares. The epipolar distance
    tells how far the match strays from the known geometry; the parallax (distance of x2 from the image
    of the point at infinity, a_xy / a_z) tells how well-conditioned the depth is: relative depth
    error ~= match error / parallax, so pure rotation and pixels near the epipole have ~0 parallax.
    """
    K = motion.K
    n = len(pts1)
    pix = np.hstack([np.asarray(pts1, np.float64), np.ones((n, 1))])
    a = pix @ (K @ motion.R @ np.linalg.inv(K)).T
    b = K @ motion.t
    u = np.asarray(pts2[:, 0], np.float64)
    v = np.asarray(pts2[:, 1], np.float64)
    cx = a[:, 0] - u * a[:, 2]
    cy = a[:, 1] - v * a[:, 2]
    rx = u * b[2] - b[0]
    ry = v * b[2] - b[1]
    az = a[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (cx * rx + cy * ry) / (cx * cx + cy * cy)
        parallax = np.hypot(u - a[:, 0] / az, v - a[:, 1] / az)
    parallax[~(az > 1e-9)] = 0.0  # the point at infinity is behind view 2: no usable geometry here
    lines = pix @ motion.fundamental().T  # epipolar line of x1 in view 2
    with np.errstate(divide="ignore", invalid="ignore"):
        epi = np.abs(lines[:, 0] * u + lines[:, 1] * v + lines[:, 2]) / np.hypot(lines[:, 0], lines[:, 1])
    epi[~np.isfinite(epi)] = np.inf
    parallax[~np.isfinite(parallax)] = 0.0
    d[~np.isfinite(d)] = np.nan
    return d, parallax, epi


def triangulate_flow(flow: np.ndarray, motion: RelativeMotion) -> Triangulation:
    """Depth of every view-1 pixel from its dense correspondence x2 = x1 + flow (see triangulate_points)."""
    H, W = flow.shape[:2]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    pts1 = np.stack([xs.ravel(), ys.ravel()], axis=1)
    pts2 = pts1 + flow.reshape(-1, 2).astype(np.float64)
    d, parallax, epi = triangulate_points(pts1, pts2, motion)
    return Triangulation(
        depth=d.reshape(H, W).astype(np.float32),
        parallax_px=parallax.reshape(H, W).astype(np.float32),
        epipolar_px=epi.reshape(H, W).astype(np.float32),
    )


def project(depth: np.ndarray, motion: RelativeMotion) -> Tuple[np.ndarray, np.ndarray]:
    """Where each view-1 pixel with the given depth lands in view 2: (u, v) arrays (HxW)."""
    H, W = depth.shape
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    pix = np.stack([xs, ys, np.ones_like(xs)], axis=-1).reshape(-1, 3)
    rays = pix @ np.linalg.inv(motion.K).T
    X = rays * depth.reshape(-1, 1).astype(np.float64)
    X2 = X @ motion.R.T + motion.t
    x2 = X2 @ motion.K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u = x2[:, 0] / x2[:, 2]
        v = x2[:, 1] / x2[:, 2]
    return u.reshape(H, W), v.reshape(H, W)
