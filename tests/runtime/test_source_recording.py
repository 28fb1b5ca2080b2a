"""ROS recordings as a live-loop source: mcap:// / bag:// URIs, recorded or fast pace, and `edgedepth run`
on a 200-frame MCAP written here (headless, onnxruntime, the tiny exported model)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bagkit  # noqa: E402

pytest.importorskip("rosbags")

from edgedepth.errors import ConfigError, SourceError  # noqa: E402
from edgedepth.runtime.capture import open_source  # noqa: E402
from edgedepth.runtime.source_recording import RecordingSource  # noqa: E402
from edgedepth.runtime.sources import make_raw_source  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mcap200(tmp_path_factory):
    return bagkit.write_recording(tmp_path_factory.mktemp("rec") / "rs_bag", n=200)


def run_cli(*args):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "edgedepth", "run", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_fast_replay_gives_every_frame_with_depth_and_intrinsics(mcap200):
    raw = make_raw_source(f"mcap://{bagkit.mcap_file(mcap200.path)}?pace=fast")
    assert isinstance(raw, RecordingSource) and not raw.live
    assert isinstance(make_raw_source(str(mcap200.path)), RecordingSource)  # a rosbag2 folder as a path
    with open_source(f"mcap://{mcap200.path}?pace=fast&start=1s") as src:
        frames = []
        while True:
            f = src.capture(timeout=10)
            if f is None:
                if not src.is_streaming():
                    break
                continue
            frames.append(f)
    assert [f.index for f in frames] == list(range(30, 200))  # from 1 s on, none dropped
    f = frames[0]
    np.testing.assert_array_equal(f.rgb, mcap200.rgb[30])
    np.testing.assert_array_equal(f.depth_gt, mcap200.depth[30])
    np.testing.assert_allclose(f.intrinsics, mcap200.K)
    assert f.t == pytest.approx(1.0) and f.extra["stamp_ns"] == mcap200.stamps[30]


def test_recorded_pace_is_live_and_ends_at_the_end(tmp_path):
    w = bagkit.write_recording(tmp_path / "rs.bag", n=10, ros1=True, fps=50.0)
    with open_source(f"bag://{w.path}") as src:  # pace=recorded: latest-frame semantics, then the end
        assert src.live
        got = []
        while True:
            f = src.capture(timeout=5)
            if f is None:
                if not src.is_streaming():
                    break
                continue
            got.append(f.index)
        stats = src.stats()
    assert got == sorted(got) and stats["frames_read"] == 10 and len(got) + stats["dropped"] == 10
    assert stats["reconnects"] == 0


def test_uri_errors(tmp_path, mcap200):
    with pytest.raises(ConfigError, match="pace=recorded or pace=fast"):
        make_raw_source(f"mcap://{mcap200.path}?pace=slow")
    with pytest.raises(ConfigError, match="unknown option"):
        make_raw_source(f"mcap://{mcap200.path}?topics=/x")
    with pytest.raises(SourceError, match="does not exist"):
        make_raw_source(f"mcap://{tmp_path}/missing.mcap")
    raw = make_raw_source(f"mcap://{mcap200.path}?topic=/nope")
    with pytest.raises(SourceError, match="not in"):
        raw.open()


def test_edgedepth_run_plays_the_mcap(mcap200, tiny_bundle, tmp_path):
    res = run_cli(tiny_bundle, "--input", f"mcap://{bagkit.mcap_file(mcap200.path)}?pace=fast", "--headless",
                  "--select", "none", "--threads", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    assert "final: frames 200 " in text and "end of stream; 200 frames, 0 errors" in text
    # the recorded depth and intrinsics travel with the frames into the spool
    from edgedepth.spool import Spool

    res = run_cli(tiny_bundle, "--input", f"{bagkit.mcap_file(mcap200.path)}", "--headless", "--max-frames",
                  "4", "--spool", tmp_path / "spool", "--select", "random", "--select-rate", "1",
                  "--threads", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    items = Spool(tmp_path / "spool").items()
    assert len(items) == 4 and all(it.meta.labels == ["depth_gt"] for it in items)
    assert all(np.allclose(it.meta.intrinsics, mcap200.K) for it in items)
