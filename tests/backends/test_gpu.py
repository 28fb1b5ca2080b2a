"""On a machine with an NVIDIA GPU: the CUDA owner thread with real pycuda (no TensorRT needed), and with
TensorRT a real engine through edgedepth build, the TrtRunner against onnxruntime, and a hot swap that
gives its GPU memory back. Elsewhere each test skips and says what is missing.

A real pycuda abort() kills the process, so the thread-exit and swap checks run in a subprocess and look
at its exit code."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _cuda_reason() -> str:
    if importlib.util.find_spec("pycuda") is None:
        return "pycuda is not installed (pip install pycuda, built against the CUDA toolkit)"
    try:
        import pycuda.driver as cuda

        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # noqa: BLE001 - pycuda raises its own types without a driver
        return f"pycuda is installed but the CUDA driver is not usable ({type(exc).__name__}: {exc})"
    return "" if count else "the CUDA driver reports no GPU"


def _trt_reason() -> str:
    cuda = _cuda_reason()
    if cuda:
        return cuda
    if importlib.util.find_spec("tensorrt") is None:
        return "an NVIDIA GPU is here but tensorrt is not installed (JetPack, or the 'trt' extra on x86)"
    return ""


CUDA_REASON = _cuda_reason()
TRT_REASON = _trt_reason()
needs_cuda = pytest.mark.skipif(bool(CUDA_REASON), reason=CUDA_REASON or "ok")
needs_trt = pytest.mark.skipif(bool(TRT_REASON), reason=TRT_REASON or "ok")

THREAD_EXIT = r"""
import threading
import pycuda.driver as cuda
from edgedepth.backends.tensorrt.cuda import CudaOwner

owner = CudaOwner(0)
free0, total = owner.mem_info()
box = {}

def work():  # another thread allocates through the owner and ends
    box["mem"] = owner.call(lambda: owner.cuda.mem_alloc(64 << 20))

t = threading.Thread(target=work)
t.start()
t.join()
free1, _ = owner.mem_info()
owner.close(release=lambda: box.pop("mem").free())
probe = CudaOwner(0)
free2, _ = probe.mem_info()
probe.close()
print("MiB used by the allocation:", (free0 - free1) / 2**20, "after close:", (free0 - free2) / 2**20)
assert free0 - free1 >= 64 << 20, "the allocation did not show"
assert abs(free2 - free0) < 8 << 20, "memory not given back"
"""


@pytest.mark.gpu
@needs_cuda
def test_cuda_owner_frees_on_its_thread_and_ends_clean():
    proc = subprocess.run([sys.executable, "-c", THREAD_EXIT], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # an abort() would be -6
    assert "context stack was not empty" not in proc.stderr and "out-of-thread" not in proc.stderr


def _bundle_with_engine(tmp_path, name: str) -> Path:
    import tensorrt as trt
    from trt_fixtures import write_tiny_onnx

    from edgedepth.backends.tensorrt.build import build_engine, plan_build

    bdir = tmp_path / name
    write_tiny_onnx(bdir / "model.onnx")
    plan = plan_build(str(bdir / "model.onnx"), "x86-dgpu", "fp32", trt_version=trt.__version__)
    build_engine(plan)
    return bdir


@pytest.mark.gpu
@needs_trt
def test_real_engine_matches_onnxruntime_and_swaps_clean(tmp_path):
    from edgedepth.runtime.backends import load_backend

    a = _bundle_with_engine(tmp_path, "a")
    b = _bundle_with_engine(tmp_path, "b")
    trt_be = load_backend(a, backend="trt")
    ort_be = load_backend(a / "model.onnx", backend="ort-cpu")
    try:
        x = np.random.default_rng(2).standard_normal(trt_be.input_shape).astype(np.float32)
        d, u = trt_be.infer(x)
        rd, ru = ort_be.infer(x)
        np.testing.assert_allclose(d, rd, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(u, ru, rtol=1e-3, atol=1e-4)
    finally:
        trt_be.close()
        ort_be.close()
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "trt_swap_check.py"), str(a), str(b), "--frames", "50"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "context stack was not empty" not in proc.stderr and "out-of-thread" not in proc.stderr
