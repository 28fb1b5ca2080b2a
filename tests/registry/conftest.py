"""Fixtures for the registry tests: a key pair, a small real bundle, and static servers as subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from edgedepth.bundle import write_manifest
from edgedepth.modelmeta import ModelInfo
from edgedepth.preprocess import Preprocessing
from edgedepth.registry.keys import generate_keypair


def tiny_onnx(path: Path, scale: float = 1.0, name: str = "edgedepth-test") -> Path:
    """A 1x3x32x32 -> depth/uncertainty ONNX graph with edgedepth metadata (a few hundred bytes)."""
    import onnx
    from onnx import TensorProto, helper

    w = np.full((1, 3, 1, 1), scale / 3.0, dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["raw"]),
        helper.make_node("Softplus", ["raw"], ["depth"]),
        helper.make_node("Mul", ["raw", "zero"], ["uncertainty"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, 32, 32]),
         helper.make_tensor_value_info("uncertainty", TensorProto.FLOAT, [1, 1, 32, 32])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
         helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    info = ModelInfo(preprocessing=Preprocessing(32, 32), name=name, version="1", size="tiny")
    for k, v in info.to_metadata_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def make_bundle(root: Path, scale: float = 1.0, with_engine: bool = True) -> Path:
    """A bundle as export/calibrate/build leave it: ONNX FP32 + INT8 files, metrics, lineage, an engine."""
    root.mkdir(parents=True, exist_ok=True)
    tiny_onnx(root / "model.onnx", scale)
    (root / "model.int8.cpu.onnx").write_bytes(b"int8-cpu" + os.urandom(256))
    (root / "model.int8.trt.onnx").write_bytes(b"int8-trt" + os.urandom(256))
    (root / "calibration.json").write_text(json.dumps({"frames": 8}))
    (root / "metrics.json").write_text(json.dumps({"abs_rel": 0.123, "d1": 0.85}))
    (root / "lineage.json").write_text(json.dumps({"round": 1, "parent": None}))
    if with_engine:
        (root / "engines").mkdir(exist_ok=True)
        (root / "engines" / "model.x86.fp16.trt10.engine").write_bytes(os.urandom(128))
        (root / "engines" / "model.x86.fp16.trt10.json").write_text("{}")
    write_manifest(root, extra={"export": {"tool": "test"}})
    return root


@pytest.fixture
def keys(tmp_path):
    return generate_keypair(tmp_path / "keys")


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def http_registry(tmp_path) -> Iterator[tuple]:
    """(registry dir, http URL): `python -m http.server` on 127.0.0.1 serving the directory."""
    root = tmp_path / "registry"
    root.mkdir()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, proc):
            pytest.fail("python -m http.server did not start on 127.0.0.1")
        yield root, f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture
def moto_server(monkeypatch) -> Iterator[str]:
    """Endpoint URL of moto's standalone S3 server on 127.0.0.1 (skips when it cannot start)."""
    pytest.importorskip("boto3")
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"moto[server] is not installed ({exc})")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, proc, timeout=30):
            pytest.skip("moto's standalone server did not start")
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture
def bundle_factory(tmp_path):
    """make(name, scale=1.0, with_engine=True) -> a fresh bundle directory under tmp_path."""
    return lambda name, **kw: make_bundle(tmp_path / name, **kw)


@pytest.fixture
def flaky_registry(tmp_path) -> Iterator[callable]:
    """start(suffix, cuts) -> (registry dir, http URL): a static server whose first `cuts` GETs of paths
    ending in `suffix` deliver half the file and close the connection (flaky_http.py)."""
    root = tmp_path / "registry"
    root.mkdir(exist_ok=True)
    procs = []

    def start(suffix: str, cuts: int) -> tuple:
        port = free_port()
        script = Path(__file__).with_name("flaky_http.py")
        proc = subprocess.Popen([sys.executable, str(script), str(port), str(root), suffix, str(cuts)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        if not wait_port(port, proc):
            pytest.fail("flaky_http.py did not start on 127.0.0.1")
        return root, f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for proc in procs:
            _stop(proc)
