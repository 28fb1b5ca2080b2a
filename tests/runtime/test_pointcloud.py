"""Point clouds from metric depth, calibration files, intrinsics scaling, colormaps, stats text."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgedepth.errors import ConfigError, DataError
from edgedepth.runtime.pointcloud import (
    depth_to_points,
    load_intrinsics,
    read_ply_header,
    scale_intrinsics,
    write_ply,
)
from edgedepth.runtime.sinks import colormap_id, make_sink
from edgedepth.runtime.stats import LoopStats


def test_depth_to_points_back_projects_a_plane(tmp_path):
    K = np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])
    depth = np.full((60, 80), 2.0, np.float32)
    depth[0, 0] = 0  # invalid
    pts, idx = depth_to_points(depth, K)
    assert pts.shape == (60 * 80 - 1, 3) and idx[0] == 1
    centre = pts[np.flatnonzero(idx == 30 * 80 + 40)[0]]
    np.testing.assert_allclose(centre, [0, 0, 2.0], atol=1e-6)
    corner = pts[np.flatnonzero(idx == 59 * 80 + 79)[0]]
    np.testing.assert_allclose(corner, [(79 - 40) * 2 / 100, (59 - 30) * 2 / 100, 2.0], rtol=1e-6)
    path = write_ply(tmp_path / "c.ply", pts, np.zeros_like(pts, dtype=np.uint8))
    header = read_ply_header(path)
    n = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    assert n == len(pts) and path.stat().st_size == len("\n".join(header)) + 1 + n * 15


def test_scale_intrinsics_keeps_pixel_centres():
    K = np.array([[200.0, 0, 159.5], [0, 200.0, 119.5], [0, 0, 1]])
    K2 = scale_intrinsics(K, (240, 320), (120, 160))
    np.testing.assert_allclose(K2, [[100, 0, 79.5], [0, 100, 59.5], [0, 0, 1]])


def test_load_intrinsics_yaml_and_json(tmp_path):
    y = tmp_path / "calib.yaml"
    fs = cv2.FileStorage(str(y), cv2.FILE_STORAGE_WRITE)
    fs.write("image_width", 640)
    fs.write("image_height", 480)
    fs.write("camera_matrix", np.array([[500.0, 0, 320], [0, 510.0, 240], [0, 0, 1]]))
    fs.release()
    K, size = load_intrinsics(y)
    assert size == (480, 640) and K[1, 1] == 510.0
    j = tmp_path / "k.json"
    j.write_text(
        json.dumps(
            {"camera_matrix": {"data": [1, 0, 2, 0, 3, 4, 0, 0, 1]}, "image_width": 8, "image_height": 6}
        )
    )
    K, size = load_intrinsics(j)
    assert K[0, 2] == 2 and size == (6, 8)
    j.write_text(json.dumps({"nothing": 1}))
    with pytest.raises(DataError, match="camera_matrix"):
        load_intrinsics(j)


def test_colormaps_and_sink_uris(tmp_path):
    assert colormap_id("turbo-inverted")[1] is True
    with pytest.raises(ConfigError, match="unknown colormap"):
        colormap_id("rainbowish")
    assert type(make_sink(str(tmp_path / "a.mp4"))).__name__ == "VideoFileSink"
    assert type(make_sink(f"file://{tmp_path}/f_%04d.png")).__name__ == "ImageSequenceSink"
    with pytest.raises(ConfigError):
        make_sink("rtp://127.0.0.1:5000")


def test_stats_percentiles_and_prometheus_text():
    stats = LoopStats(source_stats=lambda: {"dropped": 3, "reconnects": 1, "read_errors": 0})
    for i in range(100):
        stats.record(latency_ms=float(i + 1), infer_ms=2.0, select_ms=0.1, done=i / 50.0)
    snap = stats.snapshot()
    assert snap["frames"] == 100 and abs(snap["fps"] - 50.0) < 1e-6
    assert abs(snap["latency_ms_p50"] - 50.5) < 1e-6 and abs(snap["latency_ms_p99"] - 99.01) < 1e-6
    text = stats.prometheus_text()
    assert "edgedepth_frames_total 100.0" in text and "edgedepth_source_dropped_total 3.0" in text
    assert 'edgedepth_latency_seconds{quantile="0.5"} 0.0505' in text
    assert all(line.startswith("#") or len(line.split()) == 2 for line in text.strip().splitlines())
