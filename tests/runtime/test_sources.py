"""Sources: files, image directories, URI parsing and pipeline strings, reconnection, latest-frame drops."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from edgedepth.errors import ConfigError, SourceError
from edgedepth.runtime.capture import Source, open_source
from edgedepth.runtime.sources import (
    Frame,
    ImageSource,
    OpenCVSource,
    RawSource,
    csi_pipeline,
    csi_pipeline_from_device,
    make_raw_source,
    opencv_has_gstreamer,
)
from edgedepth.sizes import parse_size


def write_video(path, n=20, size=(48, 64)):
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
    assert writer.isOpened()
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, :, 2] = 10 * i  # red channel in BGR grows with the frame index
        writer.write(img)
    writer.release()
    return path


def drain(source: Source, limit=1000):
    frames = []
    while source.is_streaming() and len(frames) < limit:
        f = source.capture(timeout=1.0)
        if f is not None:
            frames.append(f)
    return frames


def test_video_file_every_frame_in_order_then_ends(tmp_path):
    path = write_video(tmp_path / "clip.mp4", n=20)
    with open_source(f"file://{path}") as src:
        frames = drain(src)
    assert len(frames) == 20 and src.dropped == 0
    assert [f.index for f in frames] == list(range(20))
    assert frames[0].rgb.shape == (48, 64, 3) and frames[0].rgb.dtype == np.uint8
    # BGR -> RGB: the red channel (index 0 in RGB) carries the ramp written into BGR's channel 2
    reds = [float(f.rgb[..., 0].mean()) for f in frames]
    assert reds[-1] > reds[0] + 100 and float(frames[-1].rgb[..., 2].mean()) < 5


def test_video_file_loop_restarts(tmp_path):
    path = write_video(tmp_path / "clip.mp4", n=5)
    with open_source(str(path), loop=True) as src:
        frames = drain(src, limit=12)
    assert len(frames) == 12 and [f.index for f in frames[:7]] == [0, 1, 2, 3, 4, 0, 1]


def test_image_directory_and_single_image(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        img = np.full((30, 40, 3), (i * 20, 0, 200), np.uint8)  # BGR
        cv2.imwrite(str(folder / f"{i:02d}.png"), img)
    (folder / "notes.txt").write_text("not an image")
    (folder / "zz.png").write_bytes(b"broken")
    with open_source(str(folder)) as src:
        frames = drain(src)
    assert len(frames) == 4  # the broken PNG is skipped with a warning, the text file ignored
    assert tuple(frames[0].rgb[0, 0]) == (200, 0, 0)
    assert frames[3].extra["path"].endswith("03.png")
    raw = make_raw_source(f"file://{folder / '01.png'}")
    assert isinstance(raw, ImageSource)
    raw.open()
    assert raw.read() is not None and raw.read() is None


def test_uri_parsing_and_pipelines():
    cam = make_raw_source("0")
    assert isinstance(cam, OpenCVSource) and cam.target == 0 and cam.api == cv2.CAP_V4L2 and cam.live
    v = make_raw_source("v4l2:///dev/video2?width=1280&height=720&fps=30&fourcc=MJPG")
    assert v.target == 2 and v.fourcc == "MJPG"
    assert v.props[cv2.CAP_PROP_FRAME_WIDTH] == 1280 and v.props[cv2.CAP_PROP_FPS] == 30
    pipe = csi_pipeline(
        sensor_id=1,
        capture_width=1280,
        capture_height=720,
        output_width=640,
        output_height=360,
        fps=60,
        flip_method=2,
    )
    assert pipe.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM)")
    assert "width=(int)1280, height=(int)720" in pipe and "framerate=(fraction)60/1" in pipe
    assert "nvvidconv flip-method=2" in pipe and "format=(string)BGRx" in pipe
    assert pipe.rstrip().split("!")[-1].strip().startswith("appsink")
    csi = make_raw_source("csi://0?flip=2")
    assert csi.api == cv2.CAP_GSTREAMER and "flip-method=2" in csi.target
    rtsp = make_raw_source("rtsp://127.0.0.1:8554/cam")
    assert rtsp.live and not rtsp.finite
    syn = make_raw_source("synthetic://mix?indoor=0.8&night=0.1&fog=0.1&seed=3&size=64x96&fps=15")
    assert syn.mix == {"indoor": 0.8, "night": 0.1, "fog": 0.1} and (syn.height, syn.width) == (64, 96)
    assert syn.seed == 3 and syn.fps == 15 and not syn.live
    assert make_raw_source("synthetic://indoor?realtime=1").live
    assert parse_size("224x320") == (224, 320)
    with pytest.raises(ConfigError):
        parse_size("big")
    with pytest.raises(ConfigError, match="unknown source scheme"):
        make_raw_source("ftp://x")
    with pytest.raises(SourceError, match="does not exist"):
        make_raw_source("/no/such/video.mp4")


def test_csi_pipeline_from_device_config():
    from edgedepth.devices import load_device

    dev = load_device("orin-nano-8gb")
    pipe = csi_pipeline_from_device(0, dev)
    cam = dev.camera
    assert f"width=(int){cam.capture_width}, height=(int){cam.capture_height}" in pipe
    assert f"width=(int){cam.output_width}, height=(int){cam.output_height}" in pipe
    assert f"framerate=(fraction){cam.fps}/1" in pipe


def test_csi_without_gstreamer_says_so():
    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer; the message is for builds without it")
    with pytest.raises(SourceError, match="no GStreamer support"):
        open_source("csi://0")


class FlakyCamera(RawSource):
    """A live camera that dies after `fail_after` frames and refuses `refusals` reopen attempts."""

    live, finite = True, False

    def __init__(self, fail_after=5, refusals=2):
        self.uri = "fake://flaky"
        self.fail_after, self.refusals = fail_after, refusals
        self.opens = 0
        self.n = 0
        self.broken = False

    def open(self):
        self.opens += 1
        if self.opens > 1 and self.refusals > 0:
            self.refusals -= 1
            raise SourceError("camera unplugged")
        self.broken = False

    def read(self):
        time.sleep(0.002)
        if self.broken:
            return None
        self.n += 1
        if self.n == self.fail_after:
            self.broken = True
            raise OSError("USB disconnect")
        return Frame(np.zeros((4, 4, 3), np.uint8), self.n, time.monotonic(), time.monotonic(), time.time())


def test_reconnect_with_backoff_after_stream_loss(caplog):
    raw = FlakyCamera(fail_after=5, refusals=2)
    src = Source(raw, backoff=(0.01, 0.04)).start()
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 15 and time.monotonic() < deadline:
        f = src.capture(timeout=0.2)
        if f is not None:
            got.append(f.index)
    src.close()
    assert len(got) == 15, got  # frames keep coming after the loss
    assert src.reconnects == 1 and raw.opens == 4  # first open + 2 refused + 1 success
    assert src.read_errors == 1
    assert any("reconnected" in r.message for r in caplog.records)


class GatedCamera(RawSource):
    """A live camera that delivers one frame per `release()`; `wait_blocked(n)` returns once the capture
    thread has published n frames and waits inside read() for the next (no clock involved)."""

    live, finite = True, False

    def __init__(self):
        self.uri = "fake://gated"
        self.n = 0
        self.gate = threading.Semaphore(0)
        self.cond = threading.Condition()
        self.entered = 0

    def open(self):
        pass

    def release(self, k: int = 1) -> None:
        for _ in range(k):
            self.gate.release()

    def wait_blocked(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.entered >= n + 1, timeout=30), self.entered

    def read(self):
        with self.cond:
            self.entered += 1
            self.cond.notify_all()
        self.gate.acquire()
        self.n += 1
        now = time.monotonic()
        return Frame(np.zeros((2, 2, 3), np.uint8), self.n, now, now, time.time())


def test_latest_frame_semantics_drop_stale_frames():
    cam = GatedCamera()
    src = Source(cam).start()
    cam.release(10)  # ten frames arrive while the consumer is busy
    cam.wait_blocked(10)
    first = src.capture(timeout=1)
    assert first.index == 10 and src.dropped == 9  # the newest frame, the nine stale ones dropped
    cam.release(3)  # a slow consumer again
    cam.wait_blocked(13)
    second = src.capture(timeout=1)
    assert second.index == 13 and src.dropped == 9 + 2
    assert src.capture(timeout=0) is None  # nothing newer: no frame is handed out twice
    assert src.frames_read == 13
    cam.release(100)  # let the capture thread leave read() so close() can join it
    src.close()


def test_non_live_source_waits_for_consumer(tmp_path):
    path = write_video(tmp_path / "clip.mp4", n=10)
    src = open_source(str(path))
    time.sleep(0.2)  # the producer must wait, not overwrite
    frames = drain(src)
    src.close()
    assert len(frames) == 10 and src.dropped == 0


def test_capture_thread_is_daemon_and_closes(tmp_path):
    cam = GatedCamera()
    src = Source(cam).start()
    cam.release(1000)  # frames flow until close() stops the thread
    src.close()
    assert not src.is_streaming()
    assert all(t.name != "edgedepth-capture" or not t.is_alive() for t in threading.enumerate())


def test_synthetic_cache_replays_a_rendered_clip():
    with open_source("synthetic://fog?seed=4&size=64x96&cache=3") as src:
        frames = drain(src, limit=7)
    assert [f.index for f in frames] == list(range(7))
    assert frames[3].rgb is frames[0].rgb and frames[4].depth_gt is frames[1].depth_gt  # replayed, not copied
    assert not np.array_equal(frames[0].rgb, frames[1].rgb) and frames[0].domain == "fog"
    assert frames[6].t > frames[5].t  # the clock keeps running across replays
