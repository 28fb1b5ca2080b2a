"""Sources that connect but never deliver say what they wait for, then fail clearly after their timeout."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import numpy as np
import pytest

from edgedepth.errors import SourceError
from edgedepth.runtime import sources
from edgedepth.runtime.sources import OpenCVSource, make_raw_source

# accepts every connection and holds it open without sending a byte
SILENT_SERVER = """
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
held = []
while True:
    conn, _ = s.accept()
    held.append(conn)
"""


@pytest.fixture()
def silent_server():
    proc = subprocess.Popen([sys.executable, "-c", SILENT_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _waiting_lines(caplog, text):
    return [r.getMessage() for r in caplog.records if text in r.getMessage() and "so far" in r.getMessage()]


def test_silent_rtsp_server_logs_what_it_waits_for_then_fails(silent_server, caplog):
    raw = make_raw_source(f"rtsp://127.0.0.1:{silent_server}/live")
    assert isinstance(raw, OpenCVSource)
    raw.timeout, raw.log_every = 2.0, 0.5
    with caplog.at_level(logging.WARNING), pytest.raises(SourceError) as err:
        raw.open()
    msg = str(err.value)
    assert "waiting for it to open" in msg and "nothing after 2 s" in msg and "server" in msg
    lines = _waiting_lines(caplog, "waiting for it to open")
    assert len(lines) >= 2, caplog.text  # a line every 0.5 s while it waited
    assert f"127.0.0.1:{silent_server}" in lines[0] and "giving up after 2 s" in lines[0]


class _SilentCapture:
    """A VideoCapture whose device opens and then never returns a frame until released."""

    def __init__(self, *args, **kwargs):
        self.released = threading.Event()

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return True

    def set(self, *args):
        return True

    def get(self, *args):
        return 30.0

    def read(self):  # like V4L2's select() timeout: the blocked read gives up after a while
        self.released.wait(2.0)
        return False, None

    def release(self):
        self.released.set()


def test_camera_that_opens_but_yields_nothing(monkeypatch, caplog):
    made = []

    def factory(*args, **kwargs):
        made.append(_SilentCapture())
        return made[-1]

    monkeypatch.setattr(sources.cv2, "VideoCapture", factory)
    raw = make_raw_source("v4l2:///dev/video7?timeout=1.5")
    raw.log_every = 0.4
    with caplog.at_level(logging.WARNING), pytest.raises(SourceError, match="waiting for its first frame"):
        raw.open()
    assert len(_waiting_lines(caplog, "waiting for its first frame")) >= 2, caplog.text
    assert made[-1].released.wait(10)  # the abandoned read ends with the capture released, not leaked


def test_live_source_first_frame_is_not_lost(monkeypatch):
    class OneFrame(_SilentCapture):
        def __init__(self, *args, **kwargs):
            super().__init__()
            self.frames = [np.full((4, 6, 3), i, np.uint8) for i in (1, 2)]

        def read(self):
            return (True, self.frames.pop(0)) if self.frames else (False, None)

    monkeypatch.setattr(sources.cv2, "VideoCapture", OneFrame)
    raw = make_raw_source("v4l2:///dev/video7")
    raw.open()
    first, second = raw.read(), raw.read()
    assert first.index == 0 and int(first.rgb[0, 0, 0]) == 1 and int(second.rgb[0, 0, 0]) == 2
    raw.close()
