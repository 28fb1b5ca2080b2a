"""Engine build: plans per TensorRT API generation, the builder calls (on a fake TensorRT), the engine
manifest check, and - where TensorRT and a GPU exist - a real engine compared with onnxruntime."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner
from edgedepth.export.trt_build import build_engine, check_engine_manifest, plan_build

from edgedepth.cli.main import cli
from edgedepth.errors import ConfigError, MissingDependencyError, ModelError


def test_plans_follow_the_tensorrt_generation(calibrated_like):
    bdir, qdq = calibrated_like
    fp32 = bdir / "model.onnx"
    p = plan_build(str(qdq), "xavier-nx")
    assert (p.api, p.precision, p.strongly_typed, p.flags) == ("pool-8.4+", "int8", False, ["INT8", "FP16"])
    p = plan_build(str(qdq), "orin-nano-8gb")
    assert (p.api, p.strongly_typed, p.flags) == ("typed-10", True, [])
    assert p.engine_path.endswith("engines/model.orin-nano-8gb.int8.trt10.3.0.engine")
    p = plan_build(str(fp32), "jetson-nano-4gb")
    assert (p.api, p.precision, p.flags, p.workspace_mib) == ("legacy-8.2", "fp16", ["FP16"], 256)
    p = plan_build(str(fp32), "x86-dgpu", "fp16", trt_version="11.0.0")
    assert p.strongly_typed and p.convert_to_fp16_onnx and p.flags == []
    p = plan_build(str(fp32), "agx-orin-64gb", "int8", dla_core=1, workspace_mib=512)
    assert p.flags == ["INT8", "FP16", "GPU_FALLBACK"] and p.int8_calibration_cache.endswith(
        "calibration.cache"
    )
    assert "int8-dla1" in p.engine_path and p.workspace_mib == 512
    with pytest.raises(ConfigError, match="nearest valid precision: fp16"):
        plan_build(str(fp32), "jetson-nano-4gb", "int8")
    with pytest.raises(ConfigError, match="DLA does not take Q/DQ"):
        plan_build(str(qdq), "agx-orin-64gb", "int8", dla_core=0)
    with pytest.raises(ConfigError, match="no DLA cores"):
        plan_build(str(fp32), "orin-nano-8gb", "fp16", dla_core=0)
    with pytest.raises(ConfigError, match="--precision int8"):
        plan_build(str(qdq), "orin-nano-8gb", "fp16")
    with pytest.raises(ConfigError, match="TensorRT 11 has no implicit INT8"):
        plan_build(str(fp32), "x86-dgpu", "int8", trt_version="11.0.0")


@pytest.fixture(scope="module")
def calibrated_like(exported, tmp_path_factory):
    """The exported bundle plus a Q/DQ model and a calibration cache, made directly (fast)."""
    from edgedepth.calibrate import quantize as q
    from edgedepth.export.trt_calibrator import write_trt_cache

    bdir, _ = exported
    work = tmp_path_factory.mktemp("q")
    q.pre_process(str(bdir / "model.onnx"), str(work / "pre.onnx"))
    x = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    ranges = q.calibrate_ranges(str(work / "pre.onnx"), x, "minmax", work / "r.json")
    qdq = q.quantize_trt(str(work / "pre.onnx"), str(work / "model.int8.trt.onnx"), ranges, "minmax")
    write_trt_cache(q.read_ranges(ranges), str(bdir / "calibration.cache"), "10.3.0")
    yield bdir, qdq
    (bdir / "calibration.cache").unlink()


def test_dry_run_cli_prints_settings(calibrated_like):
    bdir, qdq = calibrated_like
    res = CliRunner().invoke(
        cli, ["build", str(qdq), "--device", "orin-nano-8gb", "--dry-run", "--timing-cache", "t.cache"]
    )
    assert res.exit_code == 0, res.output
    assert "strongly_typed          True" in res.output and "timing_cache            t.cache" in res.output


@pytest.mark.skipif(
    "tensorrt" in sys.modules or __import__("importlib").util.find_spec("tensorrt") is not None,
    reason="TensorRT is installed here",
)
def test_real_build_without_tensorrt_names_the_extra(exported):
    bdir, _ = exported
    res = CliRunner().invoke(cli, ["build", str(bdir / "model.onnx"), "--device", "x86-dgpu"])
    assert res.exit_code == 2 and "'trt' extra" in res.output and "JetPack" in res.output
    with pytest.raises(MissingDependencyError):
        from edgedepth.export.trt_build import _import_trt

        _import_trt()


# ------------------------------------------------------------------ a fake TensorRT, per generation
def fake_trt(version: str):
    """A stand-in module with the attributes each TensorRT generation has; records builder calls."""
    major = int(version.split(".")[0])
    calls = []
    trt = types.SimpleNamespace(__version__=version, calls=calls)

    class Logger:
        INFO, WARNING = 1, 2

        def __init__(self, level):
            pass

    flags = {"EXPLICIT_BATCH": 0} if major < 11 else {}
    if major >= 10:
        flags["STRONGLY_TYPED"] = 1
    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
    bflags = {"GPU_FALLBACK": "GPU_FALLBACK"}
    if major < 11:
        bflags.update(FP16="FP16", INT8="INT8")
    trt.BuilderFlag = types.SimpleNamespace(**bflags)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.DeviceType = types.SimpleNamespace(DLA="DLA", GPU="GPU")
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse", path))
            return True

    class Config:
        def __init__(self):
            self.flags = []

        def set_flag(self, f):
            self.flags.append(f)
            calls.append(("flag", f))

        def __setattr__(self, k, v):
            if k != "flags":
                calls.append(("set", k, v))
            object.__setattr__(self, k, v)

    if major >= 8 and version >= "8.4" or major >= 10:
        Config.set_memory_pool_limit = lambda self, pool, n: calls.append(("pool", pool, n))

    class Builder:
        num_DLA_cores = 2

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network", flags))
            return object()

        def create_builder_config(self):
            return Config()

    if major < 10:

        def build_engine(self, network, config):
            calls.append(("build_engine",))
            return types.SimpleNamespace(serialize=lambda: b"ENGINE82")

        Builder.build_engine = build_engine
    if version >= "8.5" or major >= 10:

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            return b"ENGINE"

        Builder.build_serialized_network = build_serialized_network
    trt.Builder = Builder
    trt.OnnxParser = Parser
    trt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda data: None)
    return trt


def test_builder_calls_per_generation(exported, calibrated_like, tmp_path):
    bdir, qdq = calibrated_like
    fp32 = str(bdir / "model.onnx")
    # TensorRT 8.2 (Nano): explicit batch flag, max_workspace_size, build_engine.
    trt = fake_trt("8.2.1")
    plan = plan_build(fp32, "jetson-nano-4gb", trt_version="8.2.1", out_dir=str(tmp_path / "e82"))
    man = build_engine(plan, trt)
    assert ("network", 1) in trt.calls and ("set", "max_workspace_size", 256 << 20) in trt.calls
    assert ("build_engine",) in trt.calls and ("flag", "FP16") in trt.calls
    assert (tmp_path / "e82" / "model.jetson-nano-4gb.fp16.trt8.2.1.engine").read_bytes() == b"ENGINE82"
    on_disk = json.loads((tmp_path / "e82" / "model.jetson-nano-4gb.fp16.trt8.2.1.json").read_text())
    assert on_disk["tensorrt"] == "8.2.1" and on_disk["precision"] == "fp16" and on_disk == man
    assert on_disk["io"][0]["name"] == "image" and on_disk["onnx_sha256"] == plan.onnx_sha256
    # TensorRT 10 (Orin) with a Q/DQ model: strongly typed, memory pool, serialized network, no flags.
    trt = fake_trt("10.3.0")
    plan = plan_build(
        str(qdq),
        "orin-nano-8gb",
        trt_version="10.3.0",
        out_dir=str(tmp_path / "e10"),
        timing_cache=str(tmp_path / "timing.cache"),
    )
    (tmp_path / "timing.cache").write_bytes(b"")
    trt_cache = types.SimpleNamespace(serialize=lambda: b"TIMING")
    build_calls = trt.calls

    def create_timing_cache(self, blob):
        build_calls.append(("timing", blob))
        return trt_cache

    orig = trt.Builder.create_builder_config

    def cfg(self):
        c = orig(self)
        object.__setattr__(c, "create_timing_cache", types.MethodType(create_timing_cache, c))
        object.__setattr__(c, "set_timing_cache", lambda cache, ignore_mismatch: None)
        object.__setattr__(c, "get_timing_cache", lambda: trt_cache)
        return c

    trt.Builder.create_builder_config = cfg
    build_engine(plan, trt)
    assert ("network", (1 << 0) | (1 << 1)) in trt.calls and ("pool", "WORKSPACE", 1024 << 20) in trt.calls
    assert ("build_serialized_network",) in trt.calls and not [c for c in trt.calls if c[0] == "flag"]
    assert (tmp_path / "timing.cache").read_bytes() == b"TIMING"
    # DLA with implicit INT8 from the calibration cache (TensorRT 10.3 on AGX Orin).
    trt = fake_trt("10.3.0")
    plan = plan_build(
        fp32, "agx-orin-64gb", "int8", dla_core=1, trt_version="10.3.0", out_dir=str(tmp_path / "d")
    )
    build_engine(plan, trt)
    assert ("set", "default_device_type", "DLA") in trt.calls and ("set", "DLA_core", 1) in trt.calls
    calib = next(c[2] for c in trt.calls if c[:2] == ("set", "int8_calibrator"))
    assert calib.read_calibration_cache().startswith(b"TRT-100300-EntropyCalibration2")
    assert calib.get_batch(["image"]) is None


def test_tensorrt_11_converts_to_fp16_onnx(exported, tmp_path):
    bdir, _ = exported
    trt = fake_trt("11.0.0")
    plan = plan_build(
        str(bdir / "model.onnx"), "x86-dgpu", "fp16", trt_version="11.0.0", out_dir=str(tmp_path)
    )
    build_engine(plan, trt)
    parsed = next(c[1] for c in trt.calls if c[0] == "parse")
    assert parsed.endswith("model.fp16.onnx") and ("network", 1 << 1) in trt.calls


def test_check_engine_manifest_refuses_mismatches():
    man = {
        "format": "edgedepth-engine/1",
        "engine": "e.engine",
        "tensorrt": "10.3.0",
        "gpu_sm": "8.7",
        "onnx_sha256": "abc",
    }
    check_engine_manifest(man, "10.3.0.30", "8.7", "abc")
    with pytest.raises(ModelError, match="TensorRT 10.3.0.*rebuild"):
        check_engine_manifest(man, "10.4.0", "8.7")
    with pytest.raises(ModelError, match="SM 8.7.*rebuild"):
        check_engine_manifest(man, "10.3.0", "7.2")
    with pytest.raises(ModelError, match="different ONNX"):
        check_engine_manifest(man, "10.3.0", "8.7", "def")
    with pytest.raises(ModelError, match="format"):
        check_engine_manifest({}, "10.3.0", "8.7")


def _gpu_ready() -> str:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU"
    except ImportError:
        return "torch is not installed"
    return ""


@pytest.mark.gpu
@pytest.mark.skipif(bool(_gpu_ready()), reason=_gpu_ready() or "ready")
def test_real_engine_matches_onnxruntime(exported, tmp_path):
    import tensorrt as trt
    import torch
    from edgedepth.export.parity import ort_session

    bdir, _ = exported
    plan = plan_build(
        str(bdir / "model.onnx"), "x86-dgpu", "fp32", trt_version=trt.__version__, out_dir=str(tmp_path)
    )
    man = build_engine(plan)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
        (tmp_path / man["engine"]).read_bytes()
    )
    ctx = engine.create_execution_context()
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    bufs = {
        "image": torch.from_numpy(x).cuda(),
        "depth": torch.empty(1, 1, 64, 64, device="cuda"),
        "uncertainty": torch.empty(1, 1, 64, 64, device="cuda"),
    }
    for name, t in bufs.items():
        ctx.set_tensor_address(name, t.data_ptr())
    stream = torch.cuda.Stream()
    ctx.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    ref_d, ref_u = ort_session(str(bdir / "model.onnx")).run(None, {"image": x})
    np.testing.assert_allclose(bufs["depth"].cpu().numpy(), ref_d, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(bufs["uncertainty"].cpu().numpy(), ref_u, rtol=1e-3, atol=1e-3)
