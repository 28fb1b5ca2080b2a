"""CUDA context ownership of the TensorRT backend, against a fake pycuda that behaves like the real one:
per-thread context stacks, abort when a thread ends with a context pushed, no out-of-thread frees."""

from __future__ import annotations

import threading

import fake_pycuda
import fake_tensorrt
import numpy as np
import pytest
from trt_fixtures import H, W, engine_of, make_bundle, write_tiny_onnx

VERSIONS = ["8.2.1", "8.5.2", "10.3.0", "11.4.0"]
BOARDS = {"8.2.1": "jetson-nano-4gb", "8.5.2": "xavier-nx", "10.3.0": "orin-nano-8gb", "11.4.0": "x86-dgpu"}


def _bundle(tmp_path, version, name="b"):
    """Build with a fake TensorRT without CUDA checks, as on a workstation; tests install a checked one."""
    if version.startswith("11"):
        from edgedepth.export.fp16 import write_fp16_onnx

        bdir = tmp_path / name
        write_tiny_onnx(bdir / "model.onnx")
        write_fp16_onnx(bdir / "model.onnx")
        from edgedepth.export.trt_build import build_engine, plan_build

        plan = plan_build(str(bdir / "model.onnx"), BOARDS[version], "fp16", trt_version=version)
        build_engine(plan, fake_tensorrt.make(version))
        return bdir
    return make_bundle(tmp_path, fake_tensorrt.make(version), BOARDS[version], name)


def _run_in_thread(fn):
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box["error"] = exc

    t = threading.Thread(target=target, name="inference")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


@pytest.mark.parametrize("version", VERSIONS)
def test_inference_thread_exit_and_close_leave_no_context_pushed(tmp_path, monkeypatch, cuda, version):
    """The live loop infers from its own thread, which then ends: real pycuda would abort() here."""
    bdir = _bundle(tmp_path, version)
    trt = fake_tensorrt.install(monkeypatch, version, cuda=fake_pycuda)
    from edgedepth.runtime.backends import load_backend

    be = load_backend(bdir, backend="trt", device=BOARDS[version])
    x = np.random.default_rng(0).standard_normal((1, 3, H, W)).astype(np.float32)
    depth, unc = _run_in_thread(lambda: be.infer(x))
    np.testing.assert_allclose(depth, 1.0 + x.mean(axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(unc, -depth, rtol=1e-6)
    api = "execute_async_v2" if version.startswith("8.2") else "execute_async_v3"  # the engine's I/O API
    assert ("execute", api) in trt.calls
    be.close()
    # a result still held by the loop when the model is closed (a hot swap between frames) stays valid
    np.testing.assert_allclose(depth, 1.0 + x.mean(axis=1, keepdims=True), rtol=1e-6)
    state = fake_pycuda.check()  # raises fake_pycuda.Abort if any thread ended with a context pushed
    assert state["leaks"] == [] and state["live_bytes"] == 0 and state["pinned"] == 0
    assert state["streams"] == 0 and state["primary_retains"] == 0


@pytest.mark.parametrize("version", ["8.2.1", "10.3.0"])
def test_hot_swap_releases_the_old_model_completely(tmp_path, monkeypatch, cuda, version):
    """Load in the main thread, infer in the loop thread, close from an update thread (a hot swap)."""
    old_b = _bundle(tmp_path, version, "old")
    new_b = _bundle(tmp_path, version, "new")
    fake_tensorrt.install(monkeypatch, version, cuda=fake_pycuda)
    from edgedepth.runtime.backends import load_backend

    x = np.ones((1, 3, H, W), np.float32)
    old = load_backend(old_b, backend="trt", device=BOARDS[version])
    _run_in_thread(lambda: old.infer(x))
    one_model = fake_pycuda.S.live.copy()
    used_one = sum(a.nbytes for a in one_model.values())
    assert used_one > 0
    new = _run_in_thread(lambda: load_backend(new_b, backend="trt", device=BOARDS[version]))
    _run_in_thread(old.close)  # the update thread closes the model it replaced
    _run_in_thread(lambda: new.infer(x))
    state = fake_pycuda.check()
    assert state["leaks"] == [], state["leaks"]
    assert state["live_bytes"] == used_one  # only the new model's buffers are left
    new.close()
    state = fake_pycuda.check()
    assert state["leaks"] == [] and state["live_bytes"] == 0 and state["primary_retains"] == 0


def test_closed_backend_refuses_inference(tmp_path, monkeypatch, cuda):
    from edgedepth.errors import ModelError

    bdir = _bundle(tmp_path, "10.3.0")
    fake_tensorrt.install(monkeypatch, "10.3.0", cuda=fake_pycuda)
    from edgedepth.runtime.backends import load_backend

    be = load_backend(bdir, backend="trt", device="orin-nano-8gb")
    be.close()
    be.close()  # twice is fine
    with pytest.raises(ModelError, match="closed"):
        be.infer(np.zeros((1, 3, H, W), np.float32))
    assert fake_pycuda.check()["leaks"] == []


def test_engine_of_another_tensorrt_is_refused_before_any_cuda_work(tmp_path, monkeypatch, cuda):
    from edgedepth.errors import ModelError

    bdir = _bundle(tmp_path, "10.3.0")
    fake_tensorrt.install(monkeypatch, "8.5.2", cuda=fake_pycuda)
    from edgedepth.runtime.backends.tensorrt import TrtBackend

    with pytest.raises(ModelError, match="built with TensorRT 10.3.0"):
        TrtBackend(engine_of(bdir))
    state = fake_pycuda.check()
    assert state["leaks"] == [] and state["primary_retains"] == 0


def test_the_fake_pycuda_catches_what_real_pycuda_punishes(monkeypatch, cuda):
    """The fake itself: a thread ending with a pushed context aborts; an out-of-thread free leaks."""
    drv = fake_pycuda.module()
    drv.init()
    ctx = drv.Device(0).retain_primary_context()
    ctx.push()
    mem = drv.mem_alloc(64)
    drv.Context.pop()

    def free_elsewhere():
        mem.free()

    _run_in_thread(free_elsewhere)
    assert "out-of-thread" in fake_pycuda.S.leaks[0]
    _run_in_thread(ctx.push)
    with pytest.raises(fake_pycuda.Abort, match="not empty"):
        fake_pycuda.check()
    fake_pycuda.reset()


def test_swap_check_script_reports_memory_back_after_the_swap(tmp_path, monkeypatch, cuda, capsys):
    """scripts/trt_swap_check.py (run on the board by jetson_smoke.sh), here on the fakes."""
    import runpy
    import sys
    from pathlib import Path

    a, b = _bundle(tmp_path, "10.3.0", "a"), _bundle(tmp_path, "10.3.0", "b")
    fake_tensorrt.install(monkeypatch, "10.3.0", cuda=fake_pycuda)
    script = Path(__file__).resolve().parents[2] / "scripts" / "trt_swap_check.py"
    argv = [str(script), str(a), str(b), "--device", "orin-nano-8gb", "--frames", "5"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    assert "swap changed gpu memory by +0.0 MiB" in out and "OK" in out
    state = fake_pycuda.check()
    assert state["leaks"] == [] and state["live_bytes"] == 0 and state["primary_retains"] == 0


def test_engine_for_another_gpu_is_refused_and_the_context_released(tmp_path, monkeypatch, cuda):
    import json

    from edgedepth.errors import ModelError

    bdir = _bundle(tmp_path, "10.3.0")
    man_path = engine_of(bdir).with_suffix(".json")
    man_path.write_text(json.dumps(dict(json.loads(man_path.read_text()), gpu_sm="7.2")))
    fake_tensorrt.install(monkeypatch, "10.3.0", cuda=fake_pycuda)  # the fake GPU is SM 8.7
    from edgedepth.runtime.backends.tensorrt import TrtBackend

    with pytest.raises(ModelError, match="built for SM 7.2 but this GPU is SM 8.7"):
        TrtBackend(engine_of(bdir))
    state = fake_pycuda.check()
    assert state["leaks"] == [] and state["primary_retains"] == 0 and state["live_bytes"] == 0


@pytest.mark.parametrize("version", ["8.2.1", "10.3.0"])
def test_the_selection_output_comes_back_with_depth(tmp_path, monkeypatch, cuda, version):
    """An engine built from a model with the 'selection' output returns it beside depth, from its own ring
    slot, through both I/O APIs."""
    from trt_fixtures import make_bundle

    from edgedepth.preprocess import selection_length

    bdir = make_bundle(tmp_path, fake_tensorrt.make(version), BOARDS[version], selection=True)
    fake_tensorrt.install(monkeypatch, version, cuda=fake_pycuda)
    from edgedepth.runtime.backends import load_backend

    be = load_backend(bdir, backend="trt", device=BOARDS[version])
    assert be.info.selection_stride == 8
    x = np.random.default_rng(1).standard_normal((1, 3, H, W)).astype(np.float32)
    out = _run_in_thread(lambda: be.infer(x))
    depth, _ = out
    assert out.selection.shape == (1, selection_length((H, W), 8))
    np.testing.assert_allclose(out.selection, float(depth.mean()), rtol=1e-5)
    be.close()
    fake_pycuda.check()
