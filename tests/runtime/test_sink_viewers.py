"""Rerun (.rrd) and ROS 2 MCAP outputs, read back with the libraries that wrote them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgedepth.errors import ConfigError
from edgedepth.runtime.postprocess import Postprocessor
from edgedepth.runtime.sink_thread import BackgroundSink
from edgedepth.runtime.sinks import make_sink
from edgedepth.runtime.sources import Frame

REPO = Path(__file__).resolve().parents[2]
K_RGB = np.array([[120.0, 0, 63.5], [0, 110.0, 47.5], [0, 0, 1]])  # at 96x128
T0 = 1_790_000_000.25


def results(n=5, kept=(2,), invalid_pixel=True):
    """DepthResults with known depth (1 + i metres, one invalid pixel), scores and capture times."""
    post = Postprocessor(max_rel_error=0.25)
    out = []
    for i in range(n):
        rgb = np.zeros((96, 128, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10 * i, 100, np.arange(128, dtype=np.uint8)[None, :]
        frame = Frame(rgb=rgb, index=10 + i, t=i / 30.0, captured=time.monotonic(),
                      wall_time=T0 + i * 0.5, intrinsics=K_RGB)
        depth = np.full((48, 64), 1.0 + i, np.float32)
        depth[5, 7] = 0.5 * (i + 1)
        if invalid_pixel:
            depth[0, 0] = 0.0
        unc = np.full((48, 64), np.log(0.1), np.float32)
        unc[:, :8] = np.log(0.5)  # not confident: left out of point clouds
        r = post(frame, i, depth, unc, 4.0 + i)
        r.scores = {"score": 0.1 * i, "uncertainty": 0.2 + i}
        r.selected = i in kept
        out.append(r)
    return out


def feed(sink, rs):
    """Write results as the loop would, but never faster than the writer thread takes them (no drops)."""
    for r in rs:
        deadline = time.monotonic() + 30
        while sink.backlog >= 4 and time.monotonic() < deadline:
            time.sleep(0.002)
        sink.write(r, None)
    sink.close()
    assert sink.dropped == 0


# ------------------------------------------------------------------------------------------------------
# Rerun


def rrd_columns(path):
    """{entity path: {column: values}} of an .rrd file (rows sorted by frame; a column's rows where it is
    null left out; "frame": the frames that carry data), timestamps as int nanoseconds."""
    import pyarrow as pa
    from rerun.chunk import RrdReader

    rows = {}
    for chunk in RrdReader(str(path)).stream():
        batch = chunk.to_record_batch()
        cols = {}
        for name in batch.schema.names:
            col = batch.column(name)
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.int64())
            cols[name] = col.to_pylist()
        rows.setdefault(chunk.entity_path, []).extend(
            dict(zip(cols, values)) for values in zip(*cols.values()))
    out = {}
    for entity, entity_rows in rows.items():
        entity_rows.sort(key=lambda r: r.get("frame") or 0)
        names = {k for r in entity_rows for k in r}
        out[entity] = {k: [r[k] for r in entity_rows if r.get(k) is not None] for k in names}
        primary = [k for k in names if k.endswith((":buffer", ":scalars", ":text", ":image_from_camera"))]
        with_data = [r for r in entity_rows if any(r.get(k) is not None for k in primary)]
        for timeline in ("frame", "capture_time"):  # the times of the rows with data, not of format rows
            out[entity][timeline] = [r.get(timeline) for r in with_data]
    return out


def test_rerun_recording_round_trip(tmp_path):
    pytest.importorskip("rerun")
    rs = results()
    sink = make_sink(str(tmp_path / "run.rrd"))
    feed(sink, rs)
    assert sink.dropped == 0 and sink.written == len(rs)
    data = rrd_columns(tmp_path / "run.rrd")
    from rerun.chunk import RrdReader

    assert len(RrdReader(str(tmp_path / "run.rrd")).blueprints()) == 1  # the default layout

    depth = data["/world/camera/depth"]
    assert depth["frame"] == list(range(5))
    assert [abs(t - int(round((T0 + i * 0.5) * 1e9))) < 1000 for i, t in enumerate(depth["capture_time"])] \
        == [True] * 5
    assert [m[0] for m in depth["DepthImage:meter"]] == [1.0]  # logged with the format, applies to all
    fmt = depth["DepthImage:format"][0][0]
    assert (fmt["width"], fmt["height"]) == (64, 48)
    values = np.frombuffer(bytes(depth["DepthImage:buffer"][3][0]), dtype=np.float32).reshape(48, 64)
    np.testing.assert_array_equal(values, rs[3].depth)
    assert values[5, 7] == 2.0 and values[10, 10] == 4.0

    cam = data["/world/camera"]  # logged once: the intrinsics did not change
    K = np.array(cam["Pinhole:image_from_camera"][0][0]).reshape(3, 3, order="F")  # column-major
    np.testing.assert_allclose(K, [[60, 0, 31.5], [0, 55, 23.5], [0, 0, 1]], rtol=1e-6)
    assert cam["Pinhole:resolution"][0][0] == [64.0, 48.0] and cam["frame"] == [0]

    score = data["/selection/score"]
    np.testing.assert_allclose([v[0] for v in score["Scalars:scalars"]], [0.0, 0.1, 0.2, 0.3, 0.4])
    assert [v[0] for v in data["/selection/uncertainty"]["Scalars:scalars"]] == [0.2, 1.2, 2.2, 3.2, 4.2]
    assert [v[0] for v in data["/selection/kept"]["Scalars:scalars"]] == [0, 0, 1, 0, 0]
    events = data["/selection/events"]
    assert events["frame"] == [2] and "frame 12 kept" in events["TextLog:text"][0][0]
    rgb = data["/rgb"]
    assert rgb["Image:format"][0][0]["width"] == 128 and rgb["frame"] == list(range(5))
    rgb4 = np.frombuffer(bytes(rgb["Image:buffer"][4][0]), np.uint8).reshape(96, 128, 3)
    np.testing.assert_array_equal(rgb4, rs[4].frame.rgb)
    unc = np.frombuffer(bytes(data["/uncertainty"]["Image:buffer"][0][0]), np.float32).reshape(48, 64)
    np.testing.assert_allclose(unc[0, :9], [0.5] * 8 + [0.1], rtol=1e-6)


def test_rerun_images_follow_max_fps_and_series_every_frame(tmp_path):
    pytest.importorskip("rerun")
    rs = results(10, kept=(5,))
    for i, r in enumerate(rs):
        r.frame.wall_time = T0 + i * 0.010  # 100 frames per second
    sink = make_sink(f"{tmp_path}/capped.rrd?max_fps=30")
    feed(sink, rs)
    data = rrd_columns(tmp_path / "capped.rrd")
    # >= 1/30 s apart, and the kept frame 5 (from which the next 1/30 s counts)
    assert data["/world/camera/depth"]["frame"] == [0, 4, 5, 9]
    assert data["/rgb"]["frame"] == [0, 4, 5, 9]
    assert data["/selection/score"]["frame"] == list(range(10))
    every = make_sink(f"rerun+file://{tmp_path}/every.rrd?max_fps=0")
    feed(every, rs)
    assert rrd_columns(tmp_path / "every.rrd")["/world/camera/depth"]["frame"] == list(range(10))
    with pytest.raises(ConfigError, match="max_fps"):
        make_sink(f"{tmp_path}/x.rrd?max_fps=fast")


def test_rerun_without_intrinsics_logs_a_2d_depth_image(tmp_path):
    pytest.importorskip("rerun")
    rs = results(2)
    for r in rs:
        r.frame.intrinsics = None
    sink = make_sink(f"rerun+file://{tmp_path}/flat.rrd")
    feed(sink, rs)
    data = rrd_columns(tmp_path / "flat.rrd")
    assert "/world/camera" not in data and data["/depth"]["frame"] == [0, 1]


@pytest.mark.filterwarnings("ignore:RRD file has no footer")  # a streamed --save has none
def test_rerun_streams_to_a_live_server(tmp_path):
    """rerun://HOST:PORT: the Rerun CLI's gRPC server on loopback, saving what it receives (--save)."""
    pytest.importorskip("rerun")
    import shutil
    import signal
    import socket

    cli = shutil.which("rerun", path=str(Path(sys.executable).parent)) or shutil.which("rerun")
    if cli is None:
        pytest.skip("the rerun CLI (part of rerun-sdk) is not on PATH")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    saved = tmp_path / "live.rrd"
    server = subprocess.Popen([cli, "--bind", "127.0.0.1", "--port", str(port), "--save", str(saved)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        sink = make_sink(f"rerun://127.0.0.1:{port}")
        feed(sink, results(3))
        time.sleep(1.0)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    data = rrd_columns(saved)
    assert data["/world/camera/depth"]["frame"] == [0, 1, 2]
    values = np.frombuffer(bytes(data["/world/camera/depth"]["DepthImage:buffer"][2][0]), np.float32)
    assert values.reshape(48, 64)[10, 10] == 3.0
    assert [v[0] for v in data["/selection/kept"]["Scalars:scalars"]] == [0, 0, 1]


def test_rerun_uri_needs_a_host_and_an_rrd_path():
    pytest.importorskip("rerun")
    with pytest.raises(ConfigError, match="rerun://HOST:PORT"):
        make_sink("rerun://")
    with pytest.raises(ConfigError, match=".rrd"):
        make_sink("rerun+file:///tmp/run.txt")


# ------------------------------------------------------------------------------------------------------
# MCAP (ROS 2)


def read_mcap(path):
    """{topic: [(log time ns, msgtype, message)]} through rosbags' reader."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out = {}
    with AnyReader([Path(path)], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, conn.msgtype, reader.deserialize(raw, conn.msgtype)))
    return out


def test_mcap_round_trip(tmp_path):
    pytest.importorskip("rosbags")
    rs = results()
    target = tmp_path / "rec" / "run.mcap"
    sink = make_sink(f"{target}?cloud_every=2")
    feed(sink, rs)
    assert target.is_file() and not list(target.parent.glob(".*"))  # the rosbag2 folder is gone
    msgs = read_mcap(target)
    stamps = [int(round((T0 + i * 0.5) * 1e9)) for i in range(5)]

    rgb = msgs["/edgedepth/color/image_raw"]
    assert [t for t, _, _ in rgb] == stamps
    t, kind, m = rgb[3]
    assert kind == "sensor_msgs/msg/Image" and m.encoding == "rgb8"
    assert (m.height, m.width, m.step) == (96, 128, 384)
    assert m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamps[3]
    assert m.header.frame_id == "camera_optical_frame"
    np.testing.assert_array_equal(np.asarray(m.data).reshape(96, 128, 3), rs[3].frame.rgb)

    depth = msgs["/edgedepth/depth/image_raw"]
    assert len(depth) == 5
    _, _, m = depth[4]
    assert m.encoding == "32FC1" and (m.height, m.width, m.step) == (48, 64, 256) and m.is_bigendian == 0
    d = np.frombuffer(np.asarray(m.data).tobytes(), "<f4").reshape(48, 64)
    assert np.isnan(d[0, 0]) and d[5, 7] == 2.5 and d[20, 30] == 5.0  # metres; 0 (invalid) -> NaN

    for topic, (h, w, fx, cx) in {"/edgedepth/color/camera_info": (96, 128, 120.0, 63.5),
                                  "/edgedepth/depth/camera_info": (48, 64, 60.0, 31.5)}.items():
        infos = msgs[topic]
        assert [t for t, _, _ in infos] == stamps
        assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, _, m in infos] == stamps
        m = infos[0][2]
        assert (m.height, m.width) == (h, w) and m.k[0] == fx and m.k[2] == cx and m.p[0] == fx

    unc = msgs["/edgedepth/uncertainty/image_raw"][0][2]
    u = np.frombuffer(np.asarray(unc.data).tobytes(), "<f4").reshape(48, 64)
    np.testing.assert_allclose(u[0, 7:9], [0.5, 0.1], rtol=1e-6)

    clouds = msgs["/edgedepth/points"]
    assert [t for t, _, _ in clouds] == [stamps[0], stamps[2], stamps[4]]
    m = clouds[1][2]
    names = [f.name for f in m.fields]
    assert names == ["x", "y", "z", "rgb"] and m.point_step == 16 and m.height == 1
    pts = np.frombuffer(np.asarray(m.data).tobytes(), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                                              ("rgb", "<u4")])
    assert m.width == len(pts) == 48 * (64 - 8)  # confident pixels only (the 8 left columns are not)
    assert np.all(pts["z"] == 3.0)  # frame 2: 3 m everywhere it is confident
    x_expected = (8 - 31.5) * 3.0 / 60.0  # pixel (row 0, col 8)
    assert abs(pts["x"][0] - x_expected) < 1e-5

    scores = msgs["/edgedepth/selection/score"]
    np.testing.assert_allclose([m.data for _, _, m in scores], [0.0, 0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    assert [m.data for _, _, m in msgs["/edgedepth/selection/kept"]] == [False, False, True, False, False]


def test_an_mcap_recording_replays_as_a_source(tmp_path):
    pytest.importorskip("rosbags")
    from edgedepth.runtime.capture import open_source

    sink = make_sink(str(tmp_path / "rt.mcap"))
    feed(sink, results(4))
    ns = "/edgedepth"
    src = open_source(f"mcap://{tmp_path}/rt.mcap?pace=fast&topic={ns}/color/image_raw"
                      f"&depth_topic={ns}/depth/image_raw&info_topic={ns}/color/camera_info")
    frames = []
    deadline = time.monotonic() + 30
    while src.is_streaming() and time.monotonic() < deadline:
        f = src.capture(timeout=0.2)
        if f is not None:
            frames.append(f)
    src.close()
    assert len(frames) == 4
    f = frames[2]
    assert f.rgb.shape == (96, 128, 3) and f.depth_gt[20, 30] == 3.0 and f.depth_gt[0, 0] == 0.0
    np.testing.assert_allclose(f.intrinsics, K_RGB)


def test_mcap_options_are_checked(tmp_path):
    pytest.importorskip("rosbags")
    with pytest.raises(ConfigError, match="cloud_every"):
        make_sink(f"{tmp_path}/a.mcap?cloud_every=x")
    with pytest.raises(ConfigError, match="unknown option"):
        make_sink(f"{tmp_path}/a.mcap?rate=3")
    (tmp_path / "b.mcap").write_bytes(b"")
    with pytest.raises(ConfigError, match="exists"):
        make_sink(f"{tmp_path}/b.mcap")


# ------------------------------------------------------------------------------------------------------
# Off the hot path


class _Stuck(BackgroundSink):
    name = "stuck"

    def __init__(self):
        self.release = threading.Event()
        self.seen = []
        super().__init__(queue_size=2)

    def emit(self, frame):
        self.release.wait(30)
        self.seen.append((frame.seq, float(frame.depth[10, 10])))


def test_a_slow_output_drops_frames_instead_of_blocking_the_loop():
    sink = _Stuck()
    rs = results(8)
    for r in rs:
        sink.write(r, None)  # never blocks: one frame in the writer, two queued, the rest dropped
    # the snapshot is a copy: the loop may reuse its buffers at once
    rs[1].depth[:] = -1
    sink.release.set()
    sink.close()
    # queue of 2, plus the frame the writer holds once its thread has taken one
    assert sink.dropped == 8 - len(sink.seen) and 2 <= len(sink.seen) <= 3
    assert sink.seen[:2] == [(0, 1.0), (1, 2.0)] and sink.written == len(sink.seen)


class _Broken(BackgroundSink):
    name = "broken"

    def emit(self, frame):
        raise OSError("disk full")


def test_a_failing_writer_surfaces_on_the_next_write():
    sink = _Broken()
    r = results(1)[0]
    sink.write(r, None)
    deadline = time.monotonic() + 30
    while sink._error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(OSError, match="disk full"):
        sink.write(r, None)
    sink.close()


# ------------------------------------------------------------------------------------------------------
# edgedepth run, end to end


def test_run_records_rrd_and_mcap(tmp_path, tiny_bundle):
    pytest.importorskip("rerun")
    pytest.importorskip("rosbags")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "edgedepth", "run", str(tiny_bundle), "--input",
         "synthetic://indoor?seed=1&size=64x96", "--max-frames", "6", "--headless", "--threads", "1",
         "--select", "random", "--select-rate", "0.5",
         "--output", f"{tmp_path}/run.rrd?max_fps=0", "--output", f"file://{tmp_path}/run.mcap?cloud_every=3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = rrd_columns(tmp_path / "run.rrd")
    assert data["/world/camera/depth"]["frame"] == list(range(6))
    assert len(data["/world/camera"]["Pinhole:image_from_camera"]) >= 1  # the synthetic camera's K
    assert len(data["/selection/score"]["frame"]) == 6
    msgs = read_mcap(tmp_path / "run.mcap")
    assert len(msgs["/edgedepth/depth/image_raw"]) == 6 and len(msgs["/edgedepth/points"]) == 2
    stamps = [t for t, _, _ in msgs["/edgedepth/depth/image_raw"]]
    assert stamps == sorted(stamps) and stamps[0] > 1.7e18  # wall-clock capture times
    m = msgs["/edgedepth/depth/image_raw"][0][2]
    d = np.frombuffer(np.asarray(m.data).tobytes(), "<f4")
    assert (m.height, m.width) == (64, 96) and np.nanmin(d) > 0  # metres at the model's input size
