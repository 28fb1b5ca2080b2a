"""The classical depth pipeline the learned model is compared against (no training data at all).

Two frames with a known baseline -> ORB/SIFT features -> ratio-test matches -> RANSAC essential
matrix, checked against the known motion -> dense flow (DIS or Farneback, forward-backward checked)
-> per-pixel two-view triangulation with the known motion and intrinsics. Or, for a pair that can
be rectified, SGBM on the rectified images. Metric scale comes from the known baseline.

The method has holes (occlusions, low parallax, textureless areas): `ClassicalDepth.valid` says which
pixels it predicts, and `fill_holes` densifies a map for a like-for-like comparison with dense models.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from edgedepth.bench.twoview import RelativeMotion, sampson_distance, triangulate_flow, triangulate_points
from edgedepth.errors import ConfigError

log = logging.getLogger(__name__)

METHODS = ("flow", "sgbm")
FLOWS = ("dis", "farneback")
FEATURES = ("orb", "sift", "orb+sift")
FILLS = ("nearest", "median")

# Pair outcomes. Only "ok" pairs predict pixels; every other status is counted by the evaluation.
OK = "ok"
TOO_FEW_MATCHES = "too_few_matches"
NO_BASELINE = "no_baseline"
NOT_RECTIFIABLE = "not_rectifiable"
NO_VALID_PIXELS = "no_valid_pixels"
OPENCV_ERROR = "opencv_error"


@dataclass(frozen=True)
class ClassicalConfig:
    """Knobs of the classical pipeline; defaults are the ones the benchmark reports."""

    method: str = "flow"  # "flow" (dense flow + triangulation) or "sgbm" (rectified stereo)
    flow: str = "dis"  # dense flow algorithm for method="flow"
    features: str = "orb+sift"  # keypoints used to match the pair and check the known motion
    ratio: float = 0.8  # Lowe ratio test
    min_matches: int = 20  # matches consistent with the known motion needed to use the pair
    ransac_px: float = 1.0  # RANSAC threshold of the essential-matrix fit (pixels)
    consistency_px: float = 2.0  # Sampson distance to the known epipolar geometry (pixels)
    fb_px: float = 1.0  # forward-backward flow disagreement allowed (pixels, + 5% of |flow|)
    max_epipolar_px: float = 1.5  # dense match distance from its known epipolar line (pixels)
    min_parallax_px: float = 2.0  # depth error ~ flow error / parallax: below this a pixel is a hole
    speckle_fraction: float = 0.004  # drop connected blobs smaller than this fraction of the image ...
    speckle_log_step: float = 0.02  # ... whose neighbours differ by more than this in log-depth (0: off)
    min_depth: float = 0.1
    max_depth: float = 80.0
    max_rectify_deg: float = 35.0  # SGBM: baseline elevation out of the image plane that is still usable
    sgbm_block: int = 5

    def __post_init__(self) -> None:
        for name, value, allowed in (("method", self.method, METHODS), ("flow", self.flow, FLOWS),
                                     ("features", self.features, FEATURES)):
            if value not in allowed:
                raise ConfigError(f"unknown classical {name} {value!r}; choose one of {', '.join(allowed)}")
        if not 0 < self.ratio < 1:
            raise ConfigError(f"ratio test threshold must be in (0, 1), got {self.ratio}")
        if not 0 < self.min_depth < self.max_depth:
            raise ConfigError(f"need 0 < min_depth < max_depth, got {self.min_depth}..{self.max_depth}")
        if self.min_matches < 5:
            raise ConfigError("min_matches must be at least 5 (the essential matrix needs 5 points)")


@dataclass
class ClassicalDepth:
    """Depth of the reference frame (0 where not predicted), its mask, the pair's outcome and stats."""

    depth: np.ndarray
    valid: np.ndarray
    status: str
    stats: Dict[str, float] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        return float(self.valid.mean()) if self.valid.size else 0.0


def _gray(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        return rgb
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def _empty(shape: Tuple[int, int], status: str, stats: Dict[str, float]) -> ClassicalDepth:
    return ClassicalDepth(np.zeros(shape, np.float32), np.zeros(shape, bool), status, stats)


# --------------------------------------------------------------------------- features and matching
def _detectors(kind: str):
    out = []
    if kind in ("orb", "orb+sift"):
        out.append(("orb", cv2.ORB_create(nfeatures=2000, fastThreshold=10), cv2.NORM_HAMMING))
    if kind in ("sift", "orb+sift"):
        if hasattr(cv2, "SIFT_create"):
            out.append(("sift", cv2.SIFT_create(nfeatures=2000), cv2.NORM_L2))
        elif kind == "sift":
            raise ConfigError("this OpenCV build has no SIFT (needs opencv >= 4.4); use features='orb'")
    return out


def match_features(gray1: np.ndarray, gray2: np.ndarray, kind: str = "orb+sift",
                   ratio: float = 0.8) -> Tuple[np.ndarray, np.ndarray]:
    """Keypoint correspondences (N x 2 pixel arrays in each image) that pass the ratio test."""
    pts1, pts2 = [], []
    for _, det, norm in _detectors(kind):
        kp1, des1 = det.detectAndCompute(gray1, None)
        kp2, des2 = det.detectAndCompute(gray2, None)
        if des1 is None or des2 is None or len(kp1) < 2 or len(kp2) < 2:
            continue
        for pair in cv2.BFMatcher(norm).knnMatch(des1, des2, k=2):
            if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance:
                pts1.append(kp1[pair[0].queryIdx].pt)
                pts2.append(kp2[pair[0].trainIdx].pt)
    if not pts1:
        return np.zeros((0, 2)), np.zeros((0, 2))
    return np.asarray(pts1, np.float64), np.asarray(pts2, np.float64)


def check_matches(pts1: np.ndarray, pts2: np.ndarray, motion: RelativeMotion,
                  cfg: ClassicalConfig) -> Tuple[Dict[str, float], np.ndarray]:
    """RANSAC the essential matrix from the matches and compare it with the known motion.

    Returns stats and the triangulated depths of the matches that are RANSAC inliers *and* consistent
    with the known epipolar geometry (the sparse depth that bounds the stereo disparity search).
    """
    stats: Dict[str, float] = {"matches": float(len(pts1)), "ransac_inliers": 0.0, "consistent": 0.0,
                               "rot_err_deg": float("nan"), "dir_err_deg": float("nan")}
    none = np.zeros(0)
    if len(pts1) < 5:
        return stats, none
    E, mask = cv2.findEssentialMat(pts1, pts2, motion.K, method=cv2.RANSAC, prob=0.999,
                                   threshold=cfg.ransac_px)
    if E is None or mask is None or E.shape != (3, 3):
        return stats, none
    inl = mask.ravel().astype(bool)
    stats["ransac_inliers"] = float(inl.sum())
    dist = sampson_distance(motion.fundamental(), pts1[inl], pts2[inl])
    keep = dist < cfg.consistency_px
    stats["consistent"] = float(keep.sum())
    depth, parallax, _ = triangulate_points(pts1[inl][keep], pts2[inl][keep], motion)
    sparse = depth[np.isfinite(depth) & (depth > 0) & (parallax >= cfg.min_parallax_px)]
    if len(sparse):
        stats["sparse_median_depth"] = float(np.median(sparse))
    if inl.sum() >= 5 and motion.baseline > 0:
        _, R_est, t_est, _ = cv2.recoverPose(E, pts1, pts2, motion.K, mask=mask.copy())
        cos = (np.trace(R_est.T @ motion.R) - 1.0) / 2.0
        stats["rot_err_deg"] = math.degrees(math.acos(float(np.clip(cos, -1, 1))))
        cos_t = float(t_est.ravel() @ motion.t) / (np.linalg.norm(t_est) * motion.baseline)
        stats["dir_err_deg"] = math.degrees(math.acos(float(np.clip(cos_t, -1, 1))))
    return stats, sparse


# --------------------------------------------------------------------------------- dense flow path
def dense_flow(gray1: np.ndarray, gray2: np.ndarray, kind: str = "dis") -> np.ndarray:
    """Dense optical flow from image 1 to image 2 (HxWx2 float32, pixels)."""
    if kind == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(gray1, gray2, None)
    return cv2.calcOpticalFlowFarneback(gray1, gray2, None, pyr_scale=0.5, levels=5, winsize=15,
                                        iterations=5, poly_n=7, poly_sigma=1.5, flags=0)


def remove_speckles(depth: np.ndarray, valid: np.ndarray, fraction: float, log_step: float) -> np.ndarray:
    """Drop small isolated blobs of depth (typical of flow locked onto a wrong texture period)."""
    scale = 1.0 / max(log_step, 1e-6)
    code = np.zeros(depth.shape, np.int16)
    logd = np.log(np.clip(depth[valid], 1e-3, 1e4)) * scale
    code[valid] = np.clip(np.round(logd - logd.min()) + 1, 1, 32767).astype(np.int16)
    cv2.filterSpeckles(code, 0, max(4, int(fraction * depth.size)), 1)
    return valid & (code > 0)


def forward_backward_ok(fwd: np.ndarray, bwd: np.ndarray, tol_px: float) -> np.ndarray:
    """Pixels whose flow lands inside image 2 and whose backward flow returns within tolerance."""
    H, W = fwd.shape[:2]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    mx = xs + fwd[..., 0]
    my = ys + fwd[..., 1]
    inside = (mx >= 0) & (mx <= W - 1) & (my >= 0) & (my <= H - 1)
    back = cv2.remap(bwd, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = np.hypot(fwd[..., 0] + back[..., 0], fwd[..., 1] + back[..., 1])
    mag = np.hypot(fwd[..., 0], fwd[..., 1])
    return inside & (err < tol_px + 0.05 * mag)


def flow_depth(gray1: np.ndarray, gray2: np.ndarray, motion: RelativeMotion,
               cfg: ClassicalConfig) -> Tuple[np.ndarray, np.ndarray, Dict[str, float]]:
    """Dense flow + per-pixel triangulation; returns (depth, valid, stats)."""
    fwd = dense_flow(gray1, gray2, cfg.flow)
    bwd = dense_flow(gray2, gray1, cfg.flow)
    fb = forward_backward_ok(fwd, bwd, cfg.fb_px)
    tri = triangulate_flow(fwd, motion)
    d = tri.depth
    good_parallax = tri.parallax_px >= cfg.min_parallax_px
    on_line = tri.epipolar_px <= cfg.max_epipolar_px
    in_range = np.isfinite(d) & (d >= cfg.min_depth) & (d <= cfg.max_depth)
    valid = fb & good_parallax & on_line & in_range
    if cfg.speckle_fraction > 0:
        valid = remove_speckles(d, valid, cfg.speckle_fraction, cfg.speckle_log_step)
    stats = {"fb_ok": float(fb.mean()), "parallax_ok": float(good_parallax.mean()),
             "epipolar_ok": float(on_line.mean()), "median_parallax_px": float(np.median(tri.parallax_px))}
    return np.where(valid, d, 0.0).astype(np.float32), valid, stats


# ------------------------------------------------------------------------------- rectified stereo
def baseline_elevation_deg(motion: RelativeMotion) -> float:
    """Angle of the baseline out of view 1's image plane (0 = sideways, 90 = straight ahead)."""
    c2 = -motion.R.T @ motion.t  # centre of camera 2 in view-1 coordinates
    n = np.linalg.norm(c2)
    return float(np.degrees(np.arcsin(min(1.0, abs(c2[2]) / n)))) if n > 0 else 90.0


def sgbm_depth(gray1: np.ndarray, gray2: np.ndarray, motion: RelativeMotion, cfg: ClassicalConfig,
               sparse_depth: Optional[np.ndarray] = None,
               ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Dict[str, float]]:
    """SGBM on the stereo-rectified pair, mapped back to view 1's pixels. (None, None) if not rectifiable.

    The disparity search range comes from the nearest sparse feature depths (with a margin); without
    them, from cfg.min_depth. Images are padded on the matching side so no column loses its range.
    """
    H, W = gray1.shape
    elev = baseline_elevation_deg(motion)
    stats: Dict[str, float] = {"baseline_elevation_deg": elev}
    if elev > cfg.max_rectify_deg:
        return None, None, stats
    K = motion.K
    R1, R2, P1, P2, _, _, _ = cv2.stereoRectify(K, None, K, None, (W, H), motion.R, motion.t.reshape(3, 1),
                                                flags=cv2.CALIB_ZERO_DISPARITY, alpha=-1)
    vertical = abs(P2[1, 3]) > abs(P2[0, 3])
    shift = P2[1, 3] if vertical else P2[0, 3]  # = f_rect * T along the rectified baseline axis
    f_rect = P1[1, 1] if vertical else P1[0, 0]
    fB = abs(shift)
    maps = [cv2.initUndistortRectifyMap(K, None, Rr, Pr[:, :3], (W, H), cv2.CV_32FC1)
            for Rr, Pr in ((R1, P1), (R2, P2))]
    rect = [cv2.remap(g, mx, my, cv2.INTER_LINEAR) for g, (mx, my) in zip((gray1, gray2), maps)]
    if vertical:  # rows become columns: the baseline runs along x again
        rect = [np.ascontiguousarray(r.T) for r in rect]
    flip = shift > 0  # view 1 is the right camera: mirror both so it becomes the left one
    if flip:
        rect = [np.ascontiguousarray(r[:, ::-1]) for r in rect]
    width = rect[0].shape[1]
    near = cfg.min_depth
    if sparse_depth is not None and len(sparse_depth) >= 5:
        near = max(cfg.min_depth, 0.6 * float(np.percentile(sparse_depth, 2)))
    max_disp = min(fB / near, width * 0.75)
    num = int(max(16, math.ceil(max_disp / 16.0) * 16))
    bs = cfg.sgbm_block
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=num, blockSize=bs, P1=8 * bs * bs,
                                 P2=32 * bs * bs, disp12MaxDiff=1, uniquenessRatio=10, speckleWindowSize=100,
                                 speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    padded = [cv2.copyMakeBorder(r, 0, 0, num, 0, cv2.BORDER_REPLICATE) for r in rect]
    disp = sgbm.compute(padded[0], padded[1])[:, num:].astype(np.float32) / 16.0
    if flip:
        disp = disp[:, ::-1]
    if vertical:
        disp = disp.T
    disp = np.ascontiguousarray(disp)
    # Rectified pixel of every original view-1 pixel: x_rect ~ P1[:, :3] R1 K^-1 x.
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    pix = np.stack([xs, ys, np.ones_like(xs)], axis=-1).reshape(-1, 3)
    ray = pix @ (R1 @ np.linalg.inv(K)).T
    xr = ray @ P1[:, :3].T
    mx = (xr[:, 0] / xr[:, 2]).reshape(H, W).astype(np.float32)
    my = (xr[:, 1] / xr[:, 2]).reshape(H, W).astype(np.float32)
    d_at = cv2.remap(disp, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_rect = fB / d_at
        depth = (z_rect / ray[:, 2].reshape(H, W)).astype(np.float32)  # z in view 1 = z_rect / (R1 K^-1 x)_z
    in_range = np.isfinite(depth) & (depth >= cfg.min_depth) & (depth <= cfg.max_depth)
    valid = (d_at >= cfg.min_parallax_px) & in_range
    stats.update({"rectified_focal": float(f_rect), "num_disparities": float(num),
                  "vertical": float(vertical)})
    return np.where(valid, depth, 0.0).astype(np.float32), valid, stats


# ------------------------------------------------------------------------------------- the pipeline
def classical_depth(rgb1: np.ndarray, rgb2: np.ndarray, motion: RelativeMotion,
                    cfg: Optional[ClassicalConfig] = None) -> ClassicalDepth:
    """Depth of frame 1 from frames 1 and 2 and their known relative motion. Never raises on bad pairs."""
    cfg = cfg or ClassicalConfig()
    if rgb1.shape[:2] != rgb2.shape[:2]:
        raise ConfigError(f"the two frames differ in size: {rgb1.shape[:2]} vs {rgb2.shape[:2]}")
    shape = rgb1.shape[:2]
    g1, g2 = _gray(rgb1), _gray(rgb2)
    stats: Dict[str, float] = {"baseline": motion.baseline, "rotation_deg": motion.rotation_deg}
    if motion.baseline < 1e-6:
        return _empty(shape, NO_BASELINE, stats)
    try:
        return _classical_depth(g1, g2, motion, cfg, stats)
    except cv2.error as exc:  # a degenerate pair must not stop an evaluation: count it
        log.warning("OpenCV failed on a pair (%s); counted as %s", str(exc).strip()[-200:], OPENCV_ERROR)
        return _empty(shape, OPENCV_ERROR, stats)


def _classical_depth(g1: np.ndarray, g2: np.ndarray, motion: RelativeMotion, cfg: ClassicalConfig,
                     stats: Dict[str, float]) -> ClassicalDepth:
    shape = g1.shape[:2]
    pts1, pts2 = match_features(g1, g2, cfg.features, cfg.ratio)
    match_stats, sparse = check_matches(pts1, pts2, motion, cfg)
    stats.update(match_stats)
    if stats["consistent"] < cfg.min_matches:
        return _empty(shape, TOO_FEW_MATCHES, stats)
    if cfg.method == "sgbm":
        depth, valid, extra = sgbm_depth(g1, g2, motion, cfg, sparse)
        stats.update(extra)
        if depth is None:
            return _empty(shape, NOT_RECTIFIABLE, stats)
    else:
        depth, valid, extra = flow_depth(g1, g2, motion, cfg)
        stats.update(extra)
    if not valid.any():
        return _empty(shape, NO_VALID_PIXELS, stats)
    return ClassicalDepth(depth, valid, OK, stats)


def fill_holes(depth: np.ndarray, valid: np.ndarray, method: str = "nearest",
               fallback: Optional[float] = None) -> np.ndarray:
    """A dense map from a sparse one: each hole takes its nearest predicted pixel's depth ("nearest")
    or the map's median ("median"). A map with no prediction at all takes `fallback` (e.g. the median
    of the method's own predictions elsewhere); with no fallback it is returned as zeros."""
    if method not in FILLS:
        raise ConfigError(f"unknown fill {method!r}; choose one of {', '.join(FILLS)}")
    if valid.all():
        return depth.astype(np.float32)
    if not valid.any():
        return np.full(depth.shape, fallback if fallback else 0.0, np.float32)
    if method == "median":
        return np.where(valid, depth, np.median(depth[valid])).astype(np.float32)
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return depth[iy, ix].astype(np.float32)


def config_dict(cfg: ClassicalConfig) -> dict:
    return asdict(cfg)
