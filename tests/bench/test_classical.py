"""The classical two-view baseline on ray-cast scenes with exact depth and known motion."""

from __future__ import annotations

import numpy as np
import pytest

from edgedepth.bench.classical import (
    NO_BASELINE,
    NOT_RECTIFIABLE,
    OK,
    TOO_FEW_MATCHES,
    ClassicalConfig,
    classical_depth,
    fill_holes,
)
from edgedepth.bench.classical_eval import SeqFrame, evaluate_classical, partner_index
from edgedepth.bench.twoview import project, relative_motion, triangulate_points
from edgedepth.errors import ConfigError, DataError

H, W = 120, 160
K = np.array([[140.0, 0, 80], [0, 140.0, 60], [0, 0, 1]])


def _noise(P: np.ndarray, scale: float, table: np.ndarray) -> np.ndarray:
    """Smooth 3D value noise: texture fixed to the world, so both views see the same surface."""
    q = P * scale
    i = np.floor(q).astype(np.int64)
    f = q - i
    f = f * f * (3 - 2 * f)
    out = np.zeros(P.shape[:-1])
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                h = ((i[..., 0] + dx) * 73856093 ^ (i[..., 1] + dy) * 19349663
                     ^ (i[..., 2] + dz) * 83492791) & 4095
                w = ((f[..., 0] if dx else 1 - f[..., 0]) * (f[..., 1] if dy else 1 - f[..., 1])
                     * (f[..., 2] if dz else 1 - f[..., 2]))
                out += w * table[h]
    return out


def render(pose: np.ndarray, seed: int = 0, textured: bool = True):
    """Ray-cast a box room (walls 2.5 m to the sides, 6 m ahead) with a sphere: (rgb uint8, depth)."""
    table = np.random.default_rng(seed).random(4096)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T  # camera z == 1
    d = rays @ pose[:3, :3].T
    C = pose[:3, 3]
    t = np.full((H, W), np.inf)
    for axis, value in ((2, 6.0), (1, 1.5), (1, -1.5), (0, -2.5), (0, 2.5)):
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (value - C[axis]) / d[..., axis]
        t = np.where((s > 1e-6) & (s < t), s, t)
    oc = C - np.array([0.4, 0.4, 3.0])
    b = d @ oc
    a = np.sum(d * d, -1)
    disc = b * b - a * (oc @ oc - 0.8 ** 2)
    with np.errstate(invalid="ignore"):
        s = (-b - np.sqrt(disc)) / a
    t = np.where((disc > 0) & (s > 1e-6) & (s < t), s, t)
    P = C + d * t[..., None]
    if textured:
        tex = 0.5 * _noise(P, 4.0, table) + 0.3 * _noise(P, 11.0, table) + 0.2 * _noise(P, 29.0, table)
    else:
        tex = np.full((H, W), 0.5)
    rgb = np.stack([tex, 0.8 * tex + 0.1, 1.0 - 0.6 * tex], -1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8), t.astype(np.float32)  # t == z-depth (ray z = 1)


def pose_at(x=0.0, y=0.0, z=0.0, yaw_deg=0.0) -> np.ndarray:
    a = np.radians(yaw_deg)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = [x, y, z]
    return T


def abs_rel(pred, gt, mask):
    return float(np.mean(np.abs(pred[mask] - gt[mask]) / gt[mask]))


@pytest.fixture(scope="module")
def ref():
    return render(pose_at())


def test_relative_motion_and_triangulation_are_exact():
    p1, p2 = pose_at(0.3, 0.1, 0.2, yaw_deg=5), pose_at(0.5, 0.0, 0.6, yaw_deg=-3)
    m = relative_motion(p1, p2, K)
    # The centre of camera 2, seen from camera 1, is -R^T t; in world coordinates it is p2's translation.
    c2_world = p1[:3, :3] @ (-m.R.T @ m.t) + p1[:3, 3]
    assert np.allclose(c2_world, p2[:3, 3])
    depth = np.random.default_rng(1).uniform(1.0, 8.0, (H, W)).astype(np.float32)
    u, v = project(depth, m)
    ys, xs = np.mgrid[0:H, 0:W]
    pts1 = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    pts2 = np.stack([u.ravel(), v.ravel()], 1)
    d, parallax, epi = triangulate_points(pts1, pts2, m)
    ok = parallax > 1.0
    assert ok.mean() > 0.9
    assert np.allclose(d[ok], depth.ravel()[ok], rtol=1e-6)
    assert np.max(epi) < 1e-6


@pytest.mark.parametrize("motion", [dict(x=0.15), dict(x=0.1, y=0.05, z=0.05, yaw_deg=-2),
                                    dict(x=0.05, z=0.2, yaw_deg=3)])
def test_flow_pipeline_recovers_metric_depth(ref, motion):
    rgb1, gt = ref
    rgb2, _ = render(pose_at(**motion))
    res = classical_depth(rgb1, rgb2, relative_motion(pose_at(), pose_at(**motion), K))
    assert res.status == OK, res.stats
    assert res.coverage > 0.5
    assert abs_rel(res.depth, gt, res.valid) < 0.12  # metric: scale from the known baseline
    assert res.stats["consistent"] >= 100  # the features agree with the known motion
    dense = fill_holes(res.depth, res.valid)
    assert (dense > 0).all() and abs_rel(dense, gt, gt > 0) < 0.2


def test_flow_marks_low_parallax_pixels_as_holes(ref):
    """Forward motion: pixels near the epipole (image centre) have no parallax and must be holes."""
    rgb1, gt = ref
    p2 = pose_at(z=0.25)
    res = classical_depth(rgb1, render(p2)[0], relative_motion(pose_at(), p2, K))
    assert res.status == OK
    centre = res.valid[H // 2 - 4:H // 2 + 4, W // 2 - 4:W // 2 + 4]
    assert centre.mean() < 0.2 < res.coverage
    assert abs_rel(res.depth, gt, res.valid) < 0.15


@pytest.mark.parametrize("motion", [dict(x=0.15), dict(x=-0.15), dict(y=0.15),
                                    dict(x=0.1, y=0.05, yaw_deg=-2)])
def test_sgbm_on_rectified_pairs(ref, motion):
    """Pure sideways (either side), vertical, and a general pair that stereoRectify must rectify."""
    rgb1, gt = ref
    p2 = pose_at(**motion)
    sgbm = ClassicalConfig(method="sgbm")
    res = classical_depth(rgb1, render(p2)[0], relative_motion(pose_at(), p2, K), sgbm)
    assert res.status == OK, res.stats
    assert res.coverage > 0.5
    assert abs_rel(res.depth, gt, res.valid) < 0.1


def test_sgbm_refuses_forward_motion(ref):
    p2 = pose_at(z=0.3)
    sgbm = ClassicalConfig(method="sgbm")
    res = classical_depth(ref[0], render(p2)[0], relative_motion(pose_at(), p2, K), sgbm)
    assert res.status == NOT_RECTIFIABLE and not res.valid.any()


def test_too_few_features_and_no_baseline_are_statuses_not_crashes(ref):
    flat1, _ = render(pose_at(), textured=False)
    flat2, _ = render(pose_at(x=0.1), textured=False)
    res = classical_depth(flat1, flat2, relative_motion(pose_at(), pose_at(x=0.1), K))
    assert res.status == TOO_FEW_MATCHES and res.coverage == 0.0
    # Two unrelated images: matches exist but do not agree with the stated motion.
    other = render(pose_at(), seed=7)[0]
    res = classical_depth(ref[0], other, relative_motion(pose_at(), pose_at(x=0.1), K))
    assert res.status == TOO_FEW_MATCHES
    rot = pose_at(yaw_deg=4)
    assert classical_depth(ref[0], render(rot)[0], relative_motion(pose_at(), rot, K)).status == NO_BASELINE


def test_fill_holes():
    d = np.zeros((4, 5), np.float32)
    v = np.zeros((4, 5), bool)
    d[0, 0], v[0, 0] = 2.0, True
    d[3, 4], v[3, 4] = 6.0, True
    near = fill_holes(d, v, "nearest")
    assert near[0, 1] == 2.0 and near[3, 3] == 6.0
    assert np.all(fill_holes(d, v, "median")[~v] == 4.0)
    assert np.all(fill_holes(d, np.zeros_like(v), fallback=3.0) == 3.0)
    with pytest.raises(ConfigError):
        fill_holes(d, v, "magic")


def test_config_is_validated():
    with pytest.raises(ConfigError):
        ClassicalConfig(method="lidar")
    with pytest.raises(ConfigError):
        ClassicalConfig(min_matches=2)
    with pytest.raises(DataError):
        relative_motion(np.eye(3), np.eye(4), K)


def test_evaluate_on_a_sequence_counts_failures_and_fills(ref):
    poses = [pose_at(x=0.1 * i) for i in range(4)]
    frames = [SeqFrame(*render(p), pose=p, K=K, name=f"f{i}", sequence="a") for i, p in enumerate(poses)]
    flat, fd = render(pose_at(), textured=False)
    frames.append(SeqFrame(flat, fd, pose_at(), K, "flat0", "b"))
    frames.append(SeqFrame(flat, fd, pose_at(x=0.1), K, "flat1", "b"))
    frames.append(SeqFrame(*ref, pose=pose_at(), K=K, name="alone", sequence="c"))
    assert partner_index(frames, 0, 2) == 2 and partner_index(frames, 3, 2) == 1
    assert partner_index(frames, 4, 2) is None and partner_index(frames, 6, 1) is None
    rep = evaluate_classical(frames, gap=1, keep_predictions=True)
    assert rep.status_counts == {"ok": 4, "too_few_matches": 2, "no_partner": 1}
    assert rep.covered["frames"] == 4 and rep.filled["frames"] == 7
    assert rep.covered["abs_rel"] < 0.12
    assert 0.3 < rep.coverage < 4 / 7 + 1e-9
    assert np.isfinite(rep.fill_value) and 2.0 < rep.fill_value < 6.0
    assert np.all(rep.per_frame[6]["pred"] == np.float32(rep.fill_value))
    assert rep.to_dict()["headline"] == "filled"
    with pytest.raises(ConfigError):
        evaluate_classical(frames, gap=0)


def test_a_bad_pose_is_counted_not_fatal(ref):
    nan_pose = pose_at(x=0.1)
    nan_pose[0, 3] = np.nan
    frames = [SeqFrame(*ref, pose=pose_at(), K=K, name="a", sequence=0),
              SeqFrame(render(pose_at(x=0.1))[0], ref[1], nan_pose, K, "b", 0)]
    rep = evaluate_classical(frames, gap=1)
    assert rep.status_counts == {"bad_input": 2}
