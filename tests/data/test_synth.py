"""Synthetic renderer: API shapes, determinism, z-depth geometry, domains, trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from edgedepth.data import raycast, shading, synth
from edgedepth.data.scenes import Path, Scene
from edgedepth.errors import ConfigError

H, W = 36, 48


@pytest.mark.parametrize("domain", synth.DOMAINS)
def test_render_frame_contract(domain):
    f = synth.render_frame(domain, 3, H, W)
    assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (H, W) and f.depth.dtype == np.float32
    assert f.pose.shape == (4, 4) and f.pose.dtype == np.float64
    assert f.intrinsics.shape == (3, 3) and f.intrinsics.dtype == np.float64
    R = f.pose[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(f.pose[3], [0, 0, 0, 1])
    assert f.domain == domain and f.scene_seed == 3
    d = f.depth
    assert np.all(np.isfinite(d)) and np.all(d >= 0)
    valid = d[d > 0]
    assert valid.size > 0.3 * d.size
    assert valid.min() > 0.2
    limit = 12.0 if domain in ("indoor", "clutter") else 40.0
    assert valid.max() <= limit + 1e-3


def test_deterministic_per_seed():
    a = synth.render_frame("indoor", 11, H, W)
    b = synth.render_frame("indoor", 11, H, W)
    c = synth.render_frame("indoor", 12, H, W)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.pose, b.pose)
    assert not np.array_equal(a.depth, c.depth)
    s1 = synth.SceneStream("night", 5, H, W, scene_length=4)
    s2 = synth.SceneStream("night", 5, H, W, scene_length=4)
    for _ in range(6):
        f1, f2 = s1.next(), s2.next()
        np.testing.assert_array_equal(f1.rgb, f2.rgb)
        np.testing.assert_array_equal(f1.depth, f2.depth)


def _camera_scene(room=(-5.0, -5.0, 0.0, 5.0, 5.0, 3.0)):
    sc = Scene(layout="room", room=room)
    mat = sc.material(np.random.default_rng(0), "plaster")
    sc.room_mats = (mat,) * 6
    sc.path = Path(np.array([[0.0, 0.0], [1.0, 0.0]]), closed=False)
    return sc, mat


def test_depth_is_z_depth_on_a_fronto_parallel_box():
    sc, mat = _camera_scene()
    sc.boxes.append((3.5, 0.0, 1.5, 0.5, 4.0, 1.5, 0.0, mat))  # front face at x = 3.0, fills the view
    K = synth.intrinsics_for(H, W)
    o = np.array([0.0, 0.0, 1.5])
    R = raycast.look_rotation(0.0, 0.0, 0.0)  # looking along +x
    _, depth = shading.render_linear(sc, o, R, K, H, W)
    np.testing.assert_allclose(depth, 3.0, atol=1e-4)  # Euclidean range would grow towards the corners


def test_axis_parallel_rays_in_an_empty_room():
    sc, _ = _camera_scene()
    sc.lights.append((0.0, 0.0, 2.9, 3.0, 3.0, 3.0))  # with a shadow map
    K = synth.intrinsics_for(37, 49)  # odd size: the centre row and column are exactly axis-parallel
    o, R = np.array([0.0, 0.0, 1.5]), raycast.look_rotation(0, 0, 0)
    rad, depth = shading.render_linear(sc, o, R, K, 37, 49)
    assert np.all(np.isfinite(rad)) and np.all(depth > 0)
    assert depth[18, 24] == pytest.approx(5.0)


def test_sphere_depth_matches_analytic_and_pose_backprojects():
    sc, mat = _camera_scene()
    sc.spheres.append((4.0, 0.3, 1.2, 0.8, mat))
    K = synth.intrinsics_for(H, W)
    o = np.array([0.2, -0.1, 1.4])
    R = raycast.look_rotation(0.1, -0.05, 0.02)
    _, depth = shading.render_linear(sc, o, R, K, H, W)
    v, u = np.mgrid[0:H, 0:W]
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((H, W))], -1)
    pts = o + (rays_cam * depth[..., None]) @ R.T  # world points from z-depth, K and camera-to-world
    r = np.linalg.norm(pts - np.array([4.0, 0.3, 1.2]), axis=-1)
    on_sphere = np.abs(r - 0.8) < 1e-3
    assert on_sphere.sum() > 20
    x0, y0, z0, x1, y1, z1 = sc.room
    on_room = (
        np.min(
            np.abs(
                np.stack(
                    [
                        pts[..., 0] - x0,
                        pts[..., 0] - x1,
                        pts[..., 1] - y0,
                        pts[..., 1] - y1,
                        pts[..., 2] - z0,
                        pts[..., 2] - z1,
                    ]
                )
            ),
            axis=0,
        )
        < 1e-3
    )
    assert np.all(on_sphere | on_room)


def test_frame_pose_intrinsics_depth_are_consistent():
    """Back-projecting a rendered indoor frame lands inside its room (pose, K and z-depth agree)."""
    f = synth.render_frame("indoor", 21, H, W)
    sc = synth.make_scene("indoor", 21, path_length=4.0)
    K, T = f.intrinsics, f.pose
    v, u = np.mgrid[0:H, 0:W]
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * f.depth, (v - K[1, 2]) / K[1, 1] * f.depth, f.depth], -1)
    pts = cam @ T[:3, :3].T + T[:3, 3]
    x0, y0, z0, x1, y1, z1 = sc.room
    tol = 2e-3 * 12
    assert np.all((pts[..., 0] >= x0 - tol) & (pts[..., 0] <= x1 + tol))
    assert np.all((pts[..., 2] >= z0 - tol) & (pts[..., 2] <= z1 + tol))
    assert np.mean(np.abs(pts[..., 2]) < tol) > 0.02  # some floor is visible


def test_sequence_poses_are_smooth_and_scenes_change():
    st = synth.SceneStream("indoor", 2, 24, 32, scene_length=12)
    frames = [st.next() for _ in range(14)]
    assert [f.index for f in frames] == list(range(14))
    seeds = [f.scene_seed for f in frames]
    assert len(set(seeds[:12])) == 1 and seeds[12] != seeds[0]
    pos = np.array([f.pose[:3, 3] for f in frames[:12]])
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert steps.max() < 0.1 and steps.min() > 0.003  # ~0.5-1 m/s at 30 fps, moving every frame
    assert np.abs(np.diff(steps)).max() < 0.02  # no jumps
    for a, b in zip(frames[:11], frames[1:12]):
        rel = a.pose[:3, :3].T @ b.pose[:3, :3]
        angle = np.degrees(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1)))
        assert angle < 3.0


def test_mixed_stream_segments_and_determinism():
    mix = {"indoor": 0.5, "fog": 0.5}
    a = synth.MixedStream(mix, seed=4, height=16, width=24, segment_length=3)
    b = synth.MixedStream(mix, seed=4, height=16, width=24, segment_length=3)
    doms = []
    for i in range(18):
        fa, fb = a.next(), b.next()
        assert fa.index == i and fa.domain == fb.domain
        np.testing.assert_array_equal(fa.rgb, fb.rgb)
        doms.append(fa.domain)
    for s in range(0, 18, 3):  # constant within each segment
        assert len(set(doms[s : s + 3])) == 1
    assert set(doms) == {"indoor", "fog"}
    only = synth.MixedStream({"night": 1.0, "indoor": 0.0}, seed=1, height=16, width=24, segment_length=2)
    assert {only.next().domain for _ in range(6)} == {"night"}


def test_bad_inputs_are_rejected():
    with pytest.raises(ConfigError, match="indoor, outdoor, night, fog, clutter"):
        synth.render_frame("underwater", 0, H, W)
    with pytest.raises(ConfigError):
        synth.SceneStream("indoor", 0, 2, 2)
    with pytest.raises(ConfigError):
        synth.MixedStream({"indoor": -1.0}, 0, H, W)
    with pytest.raises(ConfigError):
        synth.MixedStream({"moon": 1.0}, 0, H, W)


def _luma(rgb):
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_domains_differ():
    seeds = range(4)
    indoor = [synth.render_frame("indoor", s, 48, 64) for s in seeds]
    night = [synth.render_frame("night", s, 48, 64) for s in seeds]
    assert np.mean([_luma(f.rgb).mean() for f in night]) < 0.6 * np.mean(
        [_luma(f.rgb).mean() for f in indoor]
    )

    # night frames are noisy: high-frequency energy relative to brightness is much larger
    def rel_noise(f):
        y = _luma(f.rgb)
        return np.abs(np.diff(y, axis=1)).mean() / max(y.mean(), 1.0)

    assert np.mean([rel_noise(f) for f in night]) > 1.5 * np.mean([rel_noise(f) for f in indoor])

    def far_contrast(domain):
        vals = []
        for s in seeds:
            f = synth.render_frame(domain, s, 48, 64)
            far = f.depth > 15
            if far.sum() > 20:
                vals.append(_luma(f.rgb)[far].std())
        return np.mean(vals)

    assert far_contrast("fog") < 0.5 * far_contrast("outdoor")
    out = synth.render_frame("outdoor", 1, 48, 64)
    assert (out.depth == 0).mean() > 0.05  # sky / beyond range is invalid
    assert out.depth.max() > 15 and max(f.depth.max() for f in indoor) < 12.5


def test_indoor_scenes_have_real_world_scale_cues():
    from edgedepth.data import scenes
    from edgedepth.data.synth import make_scene

    per_kind = {}
    for seed in range(12):
        sc = make_scene("indoor", seed)
        x0, y0, z0, x1, y1, z1 = sc.room
        assert scenes.ROOM_HEIGHT[0] <= z1 <= scenes.ROOM_HEIGHT[1]
        assert scenes.CAMERA_HEIGHT[0] <= sc.cam_height <= scenes.CAMERA_HEIGHT[1]
        for tex, scale in zip(sc.mat_tex, sc.mat_scale):
            per_kind.setdefault(tex // 3, set()).add(round(scale, 6))
        # at least one standard door: 0.8-0.92 m wide, 2.0-2.1 m tall, standing on the floor
        (wlo, whi), (hlo, hhi) = scenes.DOOR_SIZE
        doors = [b for b in sc.boxes if abs(b[2] - b[5]) < 1e-9 and hlo <= 2 * b[5] <= hhi
                 and wlo - 1e-9 <= 2 * max(b[3], b[4]) <= whi + 1e-9]
        assert doors, f"scene {seed} ({sc.layout}) has no standard-size door"
    # every material kind (bar building facades) has one metres-per-tile, whatever the scene
    assert all(len(v) == 1 for v in per_kind.values()), per_kind
