"""`edgedepth run` as a real subprocess: metrics endpoint, SIGTERM shutdown with the spool flushed,
kill -9 during spool writes, outputs (video, depth PNG, PLY), synthetic source with ground truth."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgedepth.colorbar import colorbar
from edgedepth.spool import Spool, parse_meta, sha256_bytes

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def images(folder: Path, n=6, size=(48, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return folder


def start(args, env_extra=None, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "edgedepth", "run", *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def scrape(port: int, timeout=30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain; version=")
                text = resp.read().decode()
            frames = [line for line in text.splitlines() if line.startswith("edgedepth_frames_total ")]
            if frames and float(frames[0].split()[1]) >= 5:
                return text
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("metrics endpoint never reported 5 frames")


def test_sigterm_finishes_flushes_spool_and_exits_zero(tmp_path, tiny_bundle):
    port = free_port()
    spool_dir = tmp_path / "spool"
    jsonl = tmp_path / "stats.jsonl"
    # distinct frames, so that no two spool items are identical (identical items share one id)
    proc = start(
        [
            tiny_bundle,
            "--input",
            images(tmp_path / "imgs", n=400),
            "--headless",
            "--metrics-port",
            port,
            "--spool",
            spool_dir,
            "--select",
            "random",
            "--select-rate",
            "0.5",
            "--neighbors",
            "1",
            "--stats-jsonl",
            jsonl,
            "--stats-interval",
            "0.2",
            "--threads",
            "1",
        ]
    )
    try:
        text = scrape(port)
    except AssertionError:
        proc.kill()
        raise AssertionError(proc.communicate()[1][-3000:]) from None
    assert "# TYPE edgedepth_frames_total counter" in text
    assert 'edgedepth_latency_seconds{quantile="0.99"}' in text
    assert 'depth_units="metres"' in text and 'version="7"' in text
    assert "edgedepth_source_dropped_total" in text
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM" in err and "stopped: signal SIGTERM" in err
    spool = Spool(spool_dir)
    items = spool.items()
    assert items, err[-2000:]
    written = int(err.split("spool: ")[1].split(" item")[0])
    frames = int(err.split("stopped: signal SIGTERM; ")[1].split(" frames")[0])
    assert frames < 400, "the source ended before the signal; the test needs a longer source"
    assert written == len(items)  # everything selected before the signal was flushed
    assert not [p for p in spool_dir.iterdir() if p.name.startswith(".tmp-")]
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert lines[-1]["final"] and lines[-1]["frames"] >= 5 and lines[-1]["depth_units"] == "metres"


def test_kill_9_during_spool_writes_leaves_no_partial_item(tmp_path, tiny_bundle):
    """The kill lands with a spool file half written, on purpose: the process stops there (a fault point,
    edgedepth.faults) after four complete items' worth of writes, then gets SIGKILL."""
    spool_dir = tmp_path / "spool"
    flag = tmp_path / "paused"
    # each item is rgb + prev + next + depth + uncertainty + json: the 23rd write is inside the 4th item
    proc = start(
        [
            tiny_bundle,
            "--input",
            images(tmp_path / "imgs", n=8, size=(240, 320)),
            "--loop",
            "--headless",
            "--spool",
            spool_dir,
            "--select",
            "random",
            "--select-rate",
            "1.0",
            "--neighbors",
            "1",
            "--threads",
            "1",
            "--stats-interval",
            "0",
        ],
        env_extra={"EDGEDEPTH_PAUSE_AT": f"spool-write:23:{flag}"},
    )
    try:
        while not flag.exists():  # waits on the writer, not on a clock; pytest-timeout bounds it
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    half_written = Path(flag.read_text())
    assert half_written.name.startswith(".tmp-") and half_written.exists()  # the kill landed mid-write
    metas = [p for p in spool_dir.iterdir() if p.name.endswith(".json") and not p.name.startswith(".")]
    assert len(metas) >= 3
    for meta_path in metas:
        meta = parse_meta(meta_path.read_bytes(), source=str(meta_path))
        for name, entry in meta.files.items():
            data = (spool_dir / f"{meta.id}.{name}").read_bytes()
            assert len(data) == entry.bytes and sha256_bytes(data) == entry.sha256
    assert len(Spool(spool_dir).items()) == len(metas)  # a reader sees only complete items


def test_outputs_video_depth_png_and_pointcloud(tmp_path, tiny_bundle):
    video = tmp_path / "out.mp4"
    calib = tmp_path / "calib.yaml"
    fs = cv2.FileStorage(str(calib), cv2.FILE_STORAGE_WRITE)
    fs.write("image_width", 64)
    fs.write("image_height", 48)
    fs.write("camera_matrix", np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]))
    fs.release()
    proc = start(
        [
            tiny_bundle,
            "--input",
            images(tmp_path / "imgs", n=5),
            "-o",
            video,
            "-o",
            tmp_path / "seq" / "f_%03d.png",
            "--save-depth",
            tmp_path / "depth",
            "--save-pointcloud",
            tmp_path / "pc",
            "--intrinsics",
            calib,
            "--select",
            "none",
            "--threads",
            "1",
        ]
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    cap = cv2.VideoCapture(str(video))
    n, ok = 0, True
    while ok:
        ok, img = cap.read()
        if ok:
            n += 1
            bar = colorbar(48, 1.0, 2.0).shape[1]
            assert img.shape == (48, 128 + bar, 3)  # input | depth | colour bar in metres
    assert n == 5 and len(list((tmp_path / "seq").glob("f_*.png"))) == 5
    depth = cv2.imread(str(tmp_path / "depth" / "depth_000000.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (48, 64) and depth.min() >= 100  # >= 0.1 m in mm
    from edgedepth.runtime.pointcloud import read_ply_header

    header = read_ply_header(tmp_path / "pc" / "cloud_000000.ply")
    assert "comment units: metres (metric depth)" in header
    assert any(line.startswith("element vertex ") for line in header)
    assert "depth output is metric, in metres" in err


def test_unreadable_model_fails_before_the_loop(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"garbage")
    proc = start([bad, "--input", images(tmp_path / "imgs", n=2), "--headless"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "error: cannot load ONNX model" in err and "Traceback" not in err


def test_bad_selection_option_is_a_clear_error(tmp_path, tiny_bundle):
    proc = start([tiny_bundle, "--input", images(tmp_path / "imgs", n=2), "--headless",
                  "--select-trust-novelty", "0.5"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "trust_novelty must be > 1" in err and "Traceback" not in err


def test_display_without_gui_is_a_clear_error(tmp_path, tiny_bundle):
    from edgedepth.runtime.sinks import opencv_has_gui

    if opencv_has_gui():
        pytest.skip("this OpenCV has a GUI")
    proc = start([tiny_bundle, "--input", images(tmp_path / "imgs", n=2), "-o", "display://0"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no GUI" in err and "--headless" in err


def test_synthetic_source_carries_ground_truth(tmp_path, tiny_bundle):
    from edgedepth.runtime.capture import open_source

    with open_source("synthetic://mix?indoor=0.5&night=0.5&seed=2&size=64x96&segment=3") as src:
        frames = []
        while len(frames) < 8:
            f = src.capture(timeout=5)
            if f is not None:
                frames.append(f)
    assert {f.domain for f in frames} <= {"indoor", "night"} and len({f.domain for f in frames}) == 2
    f = frames[0]
    assert f.rgb.shape == (64, 96, 3) and f.depth_gt.shape == (64, 96) and f.depth_gt.dtype == np.float32
    assert f.intrinsics.shape == (3, 3) and f.pose.shape == (4, 4) and (f.depth_gt > 0).mean() > 0.5
    assert [x.index for x in frames] == list(range(8))
    proc = start(
        [
            tiny_bundle,
            "--input",
            "synthetic://indoor?seed=1&size=64x96",
            "--max-frames",
            "6",
            "--headless",
            "--evaluate",
            "--spool",
            tmp_path / "spool",
            "--select",
            "random",
            "--select-rate",
            "1",
            "--threads",
            "1",
        ]
    )
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    items = Spool(tmp_path / "spool").items()
    assert len(items) == 6 and all(
        it.meta.labels == ["depth_gt"] and it.meta.domain == "indoor" for it in items
    )
    assert all(it.meta.intrinsics is not None and it.meta.pose is not None for it in items)


def test_run_reads_the_device_file_and_flags_override_it(tmp_path, tiny_bundle):
    """model, source, spool and device id from device.yaml; --max-frames on the command line wins."""
    import yaml

    spool_dir = tmp_path / "spool"
    device_file = tmp_path / "device.yaml"
    device_file.write_text(yaml.safe_dump({
        "device_id": "cam-07", "spool": str(spool_dir),
        "run": {"model": str(tiny_bundle), "input": str(images(tmp_path / "imgs", n=12)), "headless": True,
                "max_frames": 12, "threads": 1, "select": {"mode": "random", "rate": 1.0}},
        "upload": {"max_bandwidth": "1MB/s"},
    }))
    proc = start(["--config", device_file, "--max-frames", "4"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "4 frames" in err.split("stopped: ")[1]
    items = Spool(spool_dir).items()
    assert items and {it.meta.device_id for it in items} == {"cam-07"}
