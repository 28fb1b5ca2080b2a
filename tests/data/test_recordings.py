"""`edgedepth data import` from ROS 2 MCAP and ROS 1 bags written here with rosbags: images, depth,
intrinsics and timestamps come out as written; topic choice, time range and subsampling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bagkit  # noqa: E402

pytest.importorskip("rosbags")

from edgedepth.data.dataset import open_dataset  # noqa: E402
from edgedepth.data.importer import import_recording  # noqa: E402
from edgedepth.errors import DataError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgedepth", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def mcap200(tmp_path_factory):
    return bagkit.write_recording(tmp_path_factory.mktemp("rec") / "rs_bag", n=200)


def check_matches(out: Path, written: bagkit.Written, indices=None, exact_depth=True):
    ds = open_dataset(str(out))
    indices = list(range(len(written.rgb))) if indices is None else list(indices)
    assert [s for s in (ds[i].name for i in range(len(ds)))] == [f"{i:06d}" for i in indices]
    meta = json.loads((out / "meta.json").read_text())
    for j, i in enumerate(indices):
        s = ds[j]
        np.testing.assert_array_equal(s.rgb, written.rgb[i])
        if exact_depth:
            np.testing.assert_array_equal(s.depth, written.depth[i])
        else:
            np.testing.assert_allclose(s.depth, written.depth[i], atol=1e-6)
        np.testing.assert_allclose(s.intrinsics, written.K)
        fm = meta["frames"][s.name]
        assert fm["stamp_ns"] == written.stamps[i] and fm["source_index"] == i
        assert fm["t"] == pytest.approx((written.stamps[i] - written.stamps[0]) / 1e9, abs=1e-6)
    return ds, meta


def test_mcap_import_matches_what_was_written(mcap200, tmp_path):
    out = tmp_path / "ds"
    res = cli("data", "import", mcap200.path, "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "imported 200 of 200 bag frames, 200 with depth" in res.stdout
    print(res.stdout)  # the import throughput (source frames/s) of the 200-frame 48x64 MCAP
    ds, meta = check_matches(out, mcap200)
    assert len(ds) == 200 and ds[0].depth[0, 0] == 0  # invalid depth stays invalid
    assert meta["topics"] == {"rgb": bagkit.RGB_TOPIC, "depth": bagkit.DEPTH_TOPIC,
                              "camera_info": bagkit.INFO_TOPIC}
    assert sorted(p.suffix for p in (out / "depth").iterdir()) == [".png"] * 200  # 16UC1 -> mm PNG


def test_the_mcap_file_itself_imports_too(mcap200, tmp_path):
    out = tmp_path / "ds"
    import_recording(bagkit.mcap_file(mcap200.path), out, max_frames=5)
    check_matches(out, mcap200, range(5))


def test_time_range_and_every(mcap200, tmp_path):
    out = tmp_path / "ds"
    rep = import_recording(mcap200.path, out, start=1.0, end=3.0, every=0.5)
    # frames at i/30 s: 1.0 s is frame 30; one every 0.5 s -> 30, 45, 60, 75 (3.0 s = frame 90 excluded)
    check_matches(out, mcap200, [30, 45, 60, 75])
    assert rep.read == 60 and rep.written == 4


def test_change_threshold_skips_similar_frames(tmp_path):
    w = bagkit.write_recording(tmp_path / "bag", n=12, colour="png")
    rep_all = import_recording(w.path, tmp_path / "all", change=0.0)
    assert rep_all.written == 12
    rep = import_recording(w.path, tmp_path / "few", change=0.2)  # the pattern drifts a little per frame
    assert 1 <= rep.written < 12
    ds = open_dataset(str(tmp_path / "few"))
    assert ds[0].name == "000000"


def test_ros1_bag_jpeg_and_float_depth(tmp_path):
    w = bagkit.write_recording(tmp_path / "rs.bag", n=30, ros1=True, colour="jpeg", depth="32FC1")
    out = tmp_path / "ds"
    res = cli("data", "import", w.path, "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    check_matches(out, w, exact_depth=False)
    assert sorted(p.suffix for p in (out / "depth").iterdir()) == [".npy"] * 30  # 32FC1 -> float metres
    assert sorted(p.suffix for p in (out / "rgb").iterdir()) == [".jpg"] * 30  # JPEG passed through


def test_ros1_bgr8_without_camera_info(tmp_path):
    w = bagkit.write_recording(tmp_path / "rs.bag", n=8, ros1=True, colour="bgr8", info=False)
    out = tmp_path / "ds"
    import_recording(w.path, out)
    ds = open_dataset(str(out))
    assert len(ds) == 8 and ds[3].intrinsics is None
    np.testing.assert_array_equal(ds[3].rgb, w.rgb[3])


def test_depth_pairing_tolerance(tmp_path):
    w = bagkit.write_recording(tmp_path / "bag", n=10, depth_offset_ns=10_000_000)  # depth 10 ms late
    rep = import_recording(w.path, tmp_path / "tight", tolerance=0.005)
    assert rep.written == 10 and rep.with_depth == 0 and not (tmp_path / "tight" / "depth").exists()
    ds = open_dataset(str(tmp_path / "tight"))  # unlabelled frames: depth None
    assert ds[0].depth is None
    rep = import_recording(w.path, tmp_path / "loose", tolerance=0.02)
    assert rep.with_depth == 10
    meta = json.loads((tmp_path / "loose" / "meta.json").read_text())
    assert meta["frames"]["000004"]["depth_dt"] == pytest.approx(0.01)
    np.testing.assert_array_equal(open_dataset(str(tmp_path / "loose"))[4].depth, w.depth[4])


def test_topic_choice_and_errors(mcap200, tmp_path):
    rep = import_recording(mcap200.path, tmp_path / "a", depth_topic="none", info_topic="none", max_frames=3)
    assert rep.with_depth == 0 and rep.topics["depth"] is None
    with pytest.raises(DataError, match="not in .*topics: /camera/aligned"):
        import_recording(mcap200.path, tmp_path / "b", topic="/nope")
    with pytest.raises(DataError, match="carries sensor_msgs/msg/CameraInfo"):
        import_recording(mcap200.path, tmp_path / "c", topic=bagkit.INFO_TOPIC)
    with pytest.raises(DataError, match="not empty"):
        import_recording(mcap200.path, tmp_path / "a")
    res = cli("data", "import", mcap200.path, "--out", tmp_path / "d", "--every", "fast")
    assert res.returncode != 0 and "bad duration" in res.stderr and "Traceback" not in res.stderr


def test_compressed_depth_topic(tmp_path):
    w = bagkit.write_recording(tmp_path / "bag", n=6, depth="compressedDepth")
    rep = import_recording(w.path, tmp_path / "ds")
    assert rep.with_depth == 6 and rep.topics["depth"] == bagkit.DEPTH_TOPIC + "/compressedDepth"
    check_matches(tmp_path / "ds", w)


def test_header_stamps_of_zero_fall_back_to_receive_times(tmp_path):
    w = bagkit.write_recording(tmp_path / "bag", n=5, stamp_zero=True)
    rep = import_recording(w.path, tmp_path / "ds")
    assert rep.with_depth == 5  # depth received 1 us after its colour frame: paired by receive time
    check_matches(tmp_path / "ds", w)
