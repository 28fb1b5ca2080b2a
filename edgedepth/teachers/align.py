"""Metric depth from a relative teacher: a per-frame robust scale and shift against metric points.

A relative teacher's output is right up to an unknown affine map per frame. Depth Anything, MiDaS and
DPT predict relative inverse depth (disparity): metric inverse depth = s * output + t. A teacher of
relative depth is affine in depth instead. The fit is done in the space the teacher is affine in
(inverse depth for disparity, depth for relative depth), by iteratively reweighted least squares with
Huber weights (the threshold 1.345 x the residuals' robust sigma, from their median absolute deviation),
so a few wrong points (a sensor's flying pixels, a bad triangulation, an object standing on the
"ground") do not pull the fit.

Metric points come from whatever the frame has:
- sensor depth uploaded with the frame (RGB-D, ToF, LiDAR returns), however sparse: 0 = no return;
- points triangulated from two frames with known relative motion (`triangulated_points`);
- a ground-plane prior (`ground_points`): a camera at a known height above a flat floor, looking level,
  sees the floor at depth z = height * fy / (v - cy) in image row v; only the bottom rows are used,
  and the robust fit discards the pixels there that are not floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from edgedepth.errors import DataError

METRIC, RELATIVE, DISPARITY = "metric", "relative", "disparity"
OUTPUT_KINDS = (METRIC, RELATIVE, DISPARITY)
OUTPUT_DOC = {
    METRIC: "metric depth in metres",
    RELATIVE: "relative depth: metric depth = scale * output + shift, per frame",
    DISPARITY: "relative inverse depth (disparity): 1 / metric depth = scale * output + shift, per frame",
}
MIN_POINTS = 8  # fewer metric points than this: no fit (two unknowns, and the fit must reject outliers)


@dataclass
class Alignment:
    """The per-frame fit: metric = scale * output + shift (in the teacher's affine space)."""

    scale: float
    shift: float
    points: int  # metric points used
    inliers: float  # fraction with full Huber weight at the end
    residual: float  # robust sigma of the final residuals (in the fitted space)


def fit_scale_shift(x: np.ndarray, y: np.ndarray, iters: int = 10, huber: float = 1.345
                    ) -> Tuple[float, float, float, float]:
    """Robust (scale, shift, inlier fraction, sigma) with scale * x + shift ~= y (IRLS, Huber weights)."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    w = np.ones_like(x)
    s, t, sigma = 1.0, 0.0, 0.0
    for _ in range(max(1, iters)):
        sw = w.sum()
        mx, my = (w * x).sum() / sw, (w * y).sum() / sw
        vx = (w * (x - mx) ** 2).sum()
        if vx <= 1e-20 * max(1.0, sw):
            raise DataError("the metric points do not constrain a scale (the teacher output is constant "
                            "over them)")
        s = float((w * (x - mx) * (y - my)).sum() / vx)
        t = float(my - s * mx)
        r = y - (s * x + t)
        sigma = float(1.4826 * np.median(np.abs(r - np.median(r))))
        delta = huber * max(sigma, 1e-12 * max(1.0, float(np.abs(y).mean())))
        a = np.abs(r)
        w = np.where(a <= delta, 1.0, delta / np.maximum(a, 1e-30))
    # the final fit: plain least squares over the points within 3 robust sigmas (Huber weights still
    # let every outlier pull by delta)
    keep = np.abs(y - (s * x + t)) <= 3.0 * max(sigma, 1e-9 * max(1.0, float(np.abs(y).mean())))
    inl = float(keep.mean())
    if keep.sum() >= 2 and np.ptp(x[keep]) > 0:
        s, t = (float(v) for v in np.polyfit(x[keep], y[keep], 1))
    return s, t, inl, sigma


def align(output: np.ndarray, kind: str, depth_points: np.ndarray, min_points: int = MIN_POINTS,
          min_depth: float = 0.1, max_depth: float = 80.0) -> Tuple[np.ndarray, Alignment]:
    """Metric depth (HxW metres, 0 = unusable) from a relative teacher `output` and sparse metric
    `depth_points` (HxW metres, 0 = none). DataError when there are too few points or no scale fits."""
    if kind not in (RELATIVE, DISPARITY):
        raise DataError(f"only relative outputs are aligned, not {kind!r}")
    out = np.asarray(output, np.float32)
    pts = np.asarray(depth_points, np.float32)
    if pts.shape != out.shape:
        raise DataError(f"metric points {pts.shape} do not match the teacher output {out.shape}")
    use = np.isfinite(pts) & (pts > 0) & np.isfinite(out)
    n = int(use.sum())
    if n < min_points:
        raise DataError(f"{n} metric point(s) in the frame; aligning a relative teacher needs "
                        f">= {min_points}")
    target = 1.0 / pts[use] if kind == DISPARITY else pts[use]
    s, t, inl, sigma = fit_scale_shift(out[use], target)
    fitted = s * out.astype(np.float64) + t
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = 1.0 / fitted if kind == DISPARITY else fitted
    good = np.isfinite(depth) & (depth >= min_depth) & (depth <= max_depth)
    if s <= 0:
        raise DataError(f"the fit gave a non-positive scale ({s:.3g}): the metric points disagree with the "
                        "teacher's ordering; check the teacher's output kind (--teacher-output)")
    return np.where(good, depth, 0).astype(np.float32), Alignment(s, t, n, inl, sigma)


def ground_points(shape: Tuple[int, int], K: np.ndarray, camera_height: float, rows: float = 0.25,
                  pitch_deg: float = 0.0) -> np.ndarray:
    """Metric depth (HxW, 0 elsewhere) of a flat floor `camera_height` metres below a camera pitched
    down by `pitch_deg`, over the bottom `rows` fraction of the image (pixel-index intrinsics K)."""
    if not camera_height > 0:
        raise DataError(f"camera height must be > 0 m, got {camera_height}")
    h, w = shape
    K = np.asarray(K, np.float64)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    ray_y = (v - K[1, 2]) / K[1, 1]  # camera y (down) of the ray with z = 1
    p = np.deg2rad(pitch_deg)
    down = ray_y * np.cos(p) + np.sin(p)  # world "down" component of the ray (z = 1 in camera frame)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(down > 1e-6, camera_height / down, 0.0)
    z[: int(round(h * (1.0 - rows)))] = 0.0
    return z.astype(np.float32)


def triangulated_points(rgb: np.ndarray, other: np.ndarray, pose: np.ndarray, other_pose: np.ndarray,
                        K: np.ndarray, min_parallax_px: float = 2.0, max_epipolar_px: float = 1.0
                        ) -> np.ndarray:
    """Sparse metric depth (HxW, 0 elsewhere) of `rgb` from feature matches with `other`, a frame whose
    camera-to-world pose is known as well as this one's (odometry, VIO, a robot arm)."""
    import cv2

    from edgedepth.bench.classical import match_features
    from edgedepth.bench.twoview import relative_motion, triangulate_points

    g1 = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    g2 = cv2.cvtColor(other, cv2.COLOR_RGB2GRAY)
    motion = relative_motion(np.asarray(pose, np.float64), np.asarray(other_pose, np.float64),
                             np.asarray(K, np.float64))
    pts1, pts2 = match_features(g1, g2)
    out = np.zeros(rgb.shape[:2], np.float32)
    if not len(pts1):
        return out
    d, parallax, epi = triangulate_points(pts1, pts2, motion)
    ok = np.isfinite(d) & (d > 0) & (parallax >= min_parallax_px) & (epi <= max_epipolar_px)
    h, w = out.shape
    for (x, y), z in zip(pts1[ok], d[ok]):
        xi, yi = int(round(x)), int(round(y))
        if 0 <= xi < w and 0 <= yi < h:
            out[yi, xi] = z
    return out
