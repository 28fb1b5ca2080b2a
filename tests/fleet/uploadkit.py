"""Helpers for the upload daemon tests and scripts: frames, free ports, real server/daemon processes."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import httpx

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
STUB = Path(__file__).resolve().parent / "stub_server.py"


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONUNBUFFERED"] = "1"
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("EDGEDEPTH_TOKEN", None)
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(seed: int, h: int = 24, w: int = 32) -> bytes:
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def make_frames(spool_dir: Path, n: int, seed: int = 0, h: int = 24, w: int = 32) -> Dict[str, dict]:
    """Spool n distinct frames (rgb + depth PNG); returns id -> {name: sha256} of every file."""
    import cv2
    import numpy as np

    from edgedepth.spool import Spool, captured_at

    sp = Spool(spool_dir)
    out = {}
    for i in range(n):
        rgb = png_bytes(seed * 100003 + i, h, w)
        depth = np.full((h, w), 1000 + i, np.uint16)
        ok, dbuf = cv2.imencode(".png", depth)
        files = {"rgb.png": (rgb, "rgb"), "depth.png": (dbuf.tobytes(), "depth_sensor", 0, "mm_uint16")}
        item_id = sp.put(files, dict(device_id="dev-1", captured_at=captured_at(), score=float(i % 17) / 17,
                                     width=w, height=h, labels=["depth_sensor"]))
        out[item_id] = {name: hashlib.sha256(spec[0]).hexdigest() for name, spec in files.items()}
    return out


def wait_http(url: str, timeout: float = 20.0, proc: Optional[subprocess.Popen] = None,
              verify: bool = True) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} came up")
        try:
            if httpx.get(url, timeout=1.0, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def wait_log(path: Path, text: str, proc: Optional[subprocess.Popen] = None, timeout: float = 60.0) -> str:
    """Until the log file at `path` holds `text` (an event the process reports), not a fixed sleep."""
    t0 = time.time()
    while True:
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log:
            return log
        assert proc is None or proc.poll() is None, f"process exited before logging {text!r}: {log[-2000:]}"
        assert time.time() - t0 < timeout, f"{text!r} never appeared in {path}: {log[-2000:]}"
        time.sleep(0.05)


def add_device(store: Path, name: str = "dev-1") -> str:
    """Register a device with the real server's CLI; returns its token."""
    out = subprocess.run([PY, "-m", "edgedepth", "ingest", "add-device", name, "--store", str(store)],
                         capture_output=True, text=True, env=env(), cwd=REPO, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"add-device failed: {out.stderr}")
    token = [t for t in out.stdout.split() if t.startswith("edt_")]
    return token[0] if token else out.stdout.strip().splitlines()[-1].strip()


def start_real_server(store: Path, port: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    proc = subprocess.Popen([PY, "-m", "edgedepth", "ingest", "serve", "--store", str(store),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=REPO)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    return proc


def start_stub(store: Path, port: int, mode: str = "normal", token: str = "secret") -> subprocess.Popen:
    proc = subprocess.Popen([PY, str(STUB), "--port", str(port), "--store", str(store), "--mode", mode,
                             "--token", token], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env(), cwd=REPO)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    return proc


def daemon_cmd(spool: Path, port: int, token_file: Path, *extra: str) -> List[str]:
    return [PY, "-m", "edgedepth", "upload", "--spool", str(spool), "--server", f"http://127.0.0.1:{port}",
            "--token-file", str(token_file), "--poll-interval", "0.2", "--backoff-base", "0.2",
            "--backoff-max", "1.0", "--stats-interval", "5", *extra]


def start_daemon(spool: Path, port: int, token_file: Path, log_path: Path, *extra: str) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(daemon_cmd(spool, port, token_file, *extra), stdout=log, stderr=subprocess.STDOUT,
                            env=env(), cwd=REPO)


def stop(proc: Optional[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 20.0) -> Optional[int]:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def spool_item_count(spool: Path) -> int:
    return sum(1 for n in os.listdir(spool) if n.endswith(".json") and len(n) == 69 and not n.startswith("."))
