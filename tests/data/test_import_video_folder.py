"""`edgedepth data import` from a video file and from an image folder (names kept, JPEGs passed through)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgedepth.data.dataset import open_dataset
from edgedepth.data.importer import FrameSelector, import_recording
from edgedepth.durations import optional_duration as parse_duration
from edgedepth.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]


def frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = (i * 12) % 256
    img[8:40, (i * 3) % 32:(i * 3) % 32 + 16, 1] = 255
    return img


def test_video_every_half_second(tmp_path):
    video = tmp_path / "walk.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert vw.isOpened()
    for i in range(20):
        vw.write(frame(i)[..., ::-1])
    vw.release()
    res = subprocess.run([sys.executable, "-m", "edgedepth", "data", "import", str(video), "--out",
                          str(tmp_path / "ds"), "--every", "0.5s"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "imported 4 of 20 video frames" in res.stdout
    ds = open_dataset(str(tmp_path / "ds"))  # unlabelled: no depth/
    assert [ds[i].name for i in range(len(ds))] == ["000000", "000005", "000010", "000015"]
    assert ds[1].depth is None and ds[1].rgb.shape == (48, 64, 3)
    assert np.abs(ds[1].rgb.astype(int) - frame(5)).mean() < 8  # MJPG is lossy
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["frames"]["000010"]["t"] == pytest.approx(1.0) and meta["importer"] == "video"
    from edgedepth.data.dataset import dataset_info

    info = dataset_info(ds)
    assert info["count"] == 4 and "depth" not in info  # unlabelled frames are counted, no depth figures
    rep = import_recording(video, tmp_path / "range", start=0.3, end=0.6)
    assert rep.written == 3  # frames 3, 4, 5


def test_image_folder_keeps_names(tmp_path):
    src = tmp_path / "shots"
    src.mkdir()
    cv2.imwrite(str(src / "kitchen_01.png"), frame(1)[..., ::-1])
    cv2.imwrite(str(src / "kitchen_02.jpg"), frame(9)[..., ::-1])
    cv2.imwrite(str(src / "hall.bmp"), frame(20)[..., ::-1])
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "ds"
    rep = import_recording(src, out)
    assert rep.written == 3
    ds = open_dataset(str(out))
    assert sorted(ds[i].name for i in range(len(ds))) == ["hall", "kitchen_01", "kitchen_02"]
    assert (out / "rgb" / "kitchen_02.jpg").read_bytes() == (src / "kitchen_02.jpg").read_bytes()
    np.testing.assert_array_equal(cv2.imread(str(out / "rgb" / "hall.png"))[..., ::-1], frame(20))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["frames"]["kitchen_01"]["source_file"] == "kitchen_01.png"
    with pytest.raises(ConfigError, match="no timestamps"):
        import_recording(src, tmp_path / "x", every=1.0)
    (src / "hall.png").write_bytes(b"")
    with pytest.raises(DataError, match="share the name 'hall'"):
        import_recording(src, tmp_path / "y")


def test_change_selector_and_durations():
    sel = FrameSelector(change=0.1)
    a, b = np.zeros((24, 32, 3), np.uint8), np.full((24, 32, 3), 20, np.uint8)
    assert sel.changed(a)
    sel.keep(None, a)
    assert not sel.changed(b)  # 20/255 = 0.078 < 0.1
    assert sel.changed(np.full((24, 32, 3), 30, np.uint8))  # 0.118
    sel = FrameSelector(every=0.5)
    assert sel.due(0.0)
    sel.keep(0.0, a)
    assert not sel.due(0.49) and sel.due(0.5)
    assert parse_duration("500ms") == pytest.approx(0.5) and parse_duration("2m") == 120.0
    assert parse_duration("0.25") == 0.25
    with pytest.raises(ConfigError, match="bad duration"):
        parse_duration("soon")
