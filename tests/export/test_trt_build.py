"""Engine build: plans per TensorRT API generation, the builder calls (on a fake TensorRT), the engine
manifest check, and - where TensorRT and a GPU exist - a real engine compared with onnxruntime."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
    assert p.fp16_onnx.endswith("model.fp16.onnx")
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

    from edgedepth.backends.tensorrt.calibrator import write_trt_cache

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


# ------------------------------------------------------------------ strict fake TensorRT, per generation
FAKES = Path(__file__).resolve().parents[1] / "fakes"
if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))


def fake_trt(version: str):
    import fake_tensorrt

    return fake_tensorrt.make(version)


def test_builder_calls_per_generation(exported, calibrated_like, tmp_path):
    bdir, qdq = calibrated_like
    fp32 = str(bdir / "model.onnx")
    # TensorRT 8.2 (Nano): explicit batch flag, max_workspace_size, and build_serialized_network (8.x has it).
    trt = fake_trt("8.2.1")
    plan = plan_build(fp32, "jetson-nano-4gb", trt_version="8.2.1", out_dir=str(tmp_path / "e82"))
    man = build_engine(plan, trt)
    assert ("network", 1) in trt.calls and ("set", "max_workspace_size", 256 << 20) in trt.calls
    assert ("build_serialized_network",) in trt.calls and ("flag", "FP16") in trt.calls
    assert not [c for c in trt.calls if c[0] == "pool"]  # no memory pools before 8.4
    on_disk = json.loads((tmp_path / "e82" / "model.jetson-nano-4gb.fp16.trt8.2.1.json").read_text())
    assert on_disk["tensorrt"] == "8.2.1" and on_disk["precision"] == "fp16" and on_disk == man
    assert on_disk["io"][0]["name"] == "image" and on_disk["onnx_sha256"] == plan.onnx_sha256
    assert on_disk["io"][0]["dtype"].startswith("<DataType.FLOAT")  # read back from the built engine
    # TensorRT 10 (Orin) with a Q/DQ model: strongly typed, memory pool, no precision flags.
    trt = fake_trt("10.3.0")
    plan = plan_build(
        str(qdq),
        "orin-nano-8gb",
        trt_version="10.3.0",
        out_dir=str(tmp_path / "e10"),
        timing_cache=str(tmp_path / "timing.cache"),
    )
    (tmp_path / "timing.cache").write_bytes(b"")
    build_engine(plan, trt)
    assert ("network", 1 << 1) in trt.calls and ("pool", "WORKSPACE", 1024 << 20) in trt.calls
    assert ("build_serialized_network",) in trt.calls and not [c for c in trt.calls if c[0] == "flag"]
    assert (tmp_path / "timing.cache").read_bytes() == b"TIMING:"
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


def test_strict_fakes_match_the_real_bindings():
    """What the build code's feature tests rely on, per generation (from the real bindings' attributes)."""
    t82, t85, t10, t11 = (fake_trt(v) for v in ("8.2.1", "8.5.2", "10.3.0", "11.4.0"))
    assert all(hasattr(t.Builder, "build_serialized_network") for t in (t82, t85, t10, t11))
    assert hasattr(t82.Builder, "build_engine") and not hasattr(t10.Builder, "build_engine")
    assert not hasattr(t82, "MemoryPoolType") and hasattr(t85, "MemoryPoolType")
    assert int(t10.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert int(t11.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert not hasattr(t11.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert not hasattr(t11, "IInt8EntropyCalibrator2") and not hasattr(t11.BuilderFlag, "INT8")
    assert not hasattr(t11.BuilderFlag, "FP16") and hasattr(t10.BuilderFlag, "FP16")
    config = t10.Builder(t10.Logger(t10.Logger.WARNING)).create_builder_config()
    with pytest.raises(AttributeError):
        config.max_workspace_size = 1 << 20  # removed in 10.0; pybind refuses unknown attributes
    with pytest.raises(AttributeError):
        config.anything_else = 1


def test_tensorrt_11_builds_the_workstation_fp16_onnx(exported, tmp_path):
    from edgedepth.export.fp16 import write_fp16_onnx

    bdir, _ = exported
    trt = fake_trt("11.4.0")
    plan = plan_build(
        str(bdir / "model.onnx"), "x86-dgpu", "fp16", trt_version="11.4.0", out_dir=str(tmp_path)
    )
    with pytest.raises(ConfigError, match="model.fp16.onnx, which is missing.*workstation"):
        build_engine(plan, trt)
    fp16 = write_fp16_onnx(bdir / "model.onnx")
    try:
        build_engine(plan, trt)
        parsed = next(c[1] for c in trt.calls if c[0] == "parse")
        assert parsed.endswith("model.fp16.onnx") and ("network", 1 << 0) in trt.calls
    finally:
        fp16.unlink()


def test_calibration_cache_of_another_tensorrt_is_refused(calibrated_like):
    bdir, _ = calibrated_like  # its calibration.cache was written for TensorRT 10.3.0
    with pytest.raises(ConfigError, match="written for TensorRT 10.3.0, not 8.5.2.*--device"):
        plan_build(str(bdir / "model.onnx"), "agx-xavier", "int8", dla_core=0)


def test_versions_compare_as_integers():
    from edgedepth.backends.tensorrt.manifest import version_tuple

    assert version_tuple("8.10.1") > version_tuple("8.4") and "8.10.1" < "8.4"
    assert version_tuple("10.3.0.post1") == (10, 3, 0)
    from edgedepth.backends.tensorrt.build import api_for

    assert api_for(version_tuple("8.10")) == "pool-8.4+" and api_for(version_tuple("8.3.9")) == "legacy-8.2"


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
    ref_d, ref_u = ort_session(str(bdir / "model.onnx")).run(None, {"image": x})[:2]
    np.testing.assert_allclose(bufs["depth"].cpu().numpy(), ref_d, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(bufs["uncertainty"].cpu().numpy(), ref_u, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------ mixed Q/DQ models (float fallback layers)
@pytest.fixture(scope="module")
def mixed_like(calibrated_like, tmp_path_factory):
    """A mixed model: the Q/DQ model with its first and a middle Conv left in float (as the fallback
    writes it), alone in a bundle-like folder, with the float layers' names."""
    import onnx
    from edgedepth.calibrate.fallback import quantized_layers, with_float_layers

    _, qdq = calibrated_like
    full = onnx.load(str(qdq))
    convs = [n for n in quantized_layers(full) if n.endswith("Conv")]
    # the first Conv, a middle one and the depth head (whose FP16 output reaches the depth unquantized)
    float_layers = [convs[0], convs[len(convs) // 2], next(c for c in convs if "depth_head" in c)]
    folder = tmp_path_factory.mktemp("mixed")
    path = folder / "model.int8.trt.onnx"
    onnx.save(with_float_layers(full, float_layers), str(path))
    return path, float_layers


def test_mixed_model_float_layers_get_fp16_on_every_tensorrt(mixed_like, calibrated_like):
    path, float_layers = mixed_like
    _, full = calibrated_like
    assert plan_build(str(full), "orin-nano-8gb").float_layers_fp16 is None  # fully quantized: no change
    # TensorRT 8.6 and 10.3: weakly typed, INT8 + FP16 builder flags, the Q/DQ ONNX as it is.
    for board, version in (("agx-xavier", "8.6.1"), ("orin-nano-8gb", "10.3.0")):
        p = plan_build(str(path), board, trt_version=version)
        assert (p.model_kind, p.float_layers_fp16) == ("qdq-int8-mixed", "builder-flags")
        assert (p.strongly_typed, p.flags, p.convert_to_fp16_onnx) == (False, ["INT8", "FP16"], False)
        assert any("3 weighted layers without Q/DQ run in FP16" in n for n in p.notes)
    # TensorRT 10.12+ and 11: strongly typed from the workstation's FP16 copy of the mixed model.
    for version in ("10.12.0", "11.4.0"):
        p = plan_build(str(path), "x86-dgpu", trt_version=version)
        assert (p.model_kind, p.float_layers_fp16, p.strongly_typed, p.flags) == (
            "qdq-int8-mixed", "fp16-onnx", True, [])
        assert p.convert_to_fp16_onnx and p.fp16_onnx.endswith("model.int8.trt.fp16.onnx")
    res = CliRunner().invoke(cli, ["build", str(path), "--device", "orin-nano-8gb", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "float_layers_fp16       builder-flags" in res.output and "INT8 + FP16 builder flags" in res.output


def test_fp16_copy_of_a_mixed_model_keeps_qdq_and_matches_onnxruntime(mixed_like):
    """The FP16 copy: every Q/DQ node as it was (FP32 scales), the float layers FP16, the INT8 layers and
    the graph I/O FP32, no FP32 -> FP16 -> FP32 round trips; its depth vs the mixed FP32 model on
    onnxruntime CPU."""
    import onnx
    import onnxruntime as ort
    from edgedepth.calibrate.fallback import quantized_layers
    from edgedepth.export.fp16 import write_fp16_onnx

    path, float_layers = mixed_like
    out = write_fp16_onnx(path)
    assert out.name == "model.int8.trt.fp16.onnx"
    src, fp16 = onnx.load(str(path)), onnx.load(str(out))
    onnx.checker.check_model(fp16, full_check=True)  # sorted, and every tensor's type consistent
    qdq = lambda m: sorted(  # noqa: E731
        (n.op_type, n.name, tuple(n.input[1:])) for n in m.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    assert qdq(fp16) == qdq(src) and len(qdq(src)) > 0
    inits = {t.name: t.data_type for t in fp16.graph.initializer}
    nodes = {n.name: n for n in fp16.graph.node}
    F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    scales = {n.input[1] for n in fp16.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert {inits[s] for s in scales} == {F32}
    for name in float_layers:
        assert inits[nodes[name].input[1]] == F16, name  # FP16 weights: the layer runs in FP16
    for name in quantized_layers(fp16):
        if nodes[name].op_type == "Conv":
            assert nodes[name].input[1] not in inits  # weights still through their DequantizeLinear
    producer = {o: n for n in fp16.graph.node for o in n.output}
    casts = [n for n in fp16.graph.node if n.op_type == "Cast"]
    assert not [c for c in casts if c.attribute[0].i == F32 and producer.get(c.input[0]) is not None
                and producer[c.input[0]].op_type == "Cast"]
    assert len(casts) < 4 * len(float_layers) + 4  # Casts only at the boundaries of the float part
    assert [i.type.tensor_type.elem_type for i in fp16.graph.input] == [F32]
    assert {o.type.tensor_type.elem_type for o in fp16.graph.output} == {F32}
    shape = [d.dim_value or 1 for d in src.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(3).random(shape).astype(np.float32)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as written
    cpu = ["CPUExecutionProvider"]
    ref, got = (ort.InferenceSession(str(p), opts, providers=cpu).run(["depth"], {"image": x})
                for p in (path, out))
    rel = float(np.max(np.abs(got[0] - ref[0]) / np.abs(ref[0])))
    print(f"mixed FP16 vs mixed FP32 (onnxruntime CPU): max relative depth error {rel:.5f}")
    assert got[0].dtype == np.float32 and rel < 0.02


def test_mixed_model_builder_calls(mixed_like, tmp_path):
    from edgedepth.export.fp16 import write_fp16_onnx

    path, _ = mixed_like
    trt = fake_trt("10.3.0")  # weakly typed: no STRONGLY_TYPED, INT8 and FP16 flags
    plan = plan_build(str(path), "orin-nano-8gb", trt_version="10.3.0", out_dir=str(tmp_path / "a"))
    build_engine(plan, trt)
    assert ("network", 0) in trt.calls and ("flag", "INT8") in trt.calls and ("flag", "FP16") in trt.calls
    assert next(c[1] for c in trt.calls if c[0] == "parse") == str(path)
    trt = fake_trt("11.4.0")  # strongly typed from the FP16 copy; TensorRT 11 has no FP16 flag to set
    plan = plan_build(str(path), "x86-dgpu", trt_version="11.4.0", out_dir=str(tmp_path / "b"))
    fp16 = path.with_name("model.int8.trt.fp16.onnx")
    if fp16.exists():
        fp16.unlink()
    with pytest.raises(ConfigError, match="model.int8.trt.fp16.onnx, which is missing.*--fp16-onnx-only"):
        build_engine(plan, trt)
    from edgedepth.export.lint import lint_model

    from edgedepth.devices import load_device

    trt11 = load_device("x86-dgpu").model_copy(update={"tensorrt": "11.4.0"})
    finding = lambda: next(f for f in lint_model(str(path), trt11).findings if f.code == "float-layers")  # noqa: E731
    assert finding().level == "warning" and "model.int8.trt.fp16.onnx is missing" in finding().message
    write_fp16_onnx(path)
    assert finding().level == "info" and "strongly typed on TensorRT 11.4.0" in finding().message
    build_engine(plan, trt)
    assert next(c[1] for c in trt.calls if c[0] == "parse").endswith("model.int8.trt.fp16.onnx")
    assert ("network", 1 << 0) in trt.calls and not [c for c in trt.calls if c[0] == "flag"]
