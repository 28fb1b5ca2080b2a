"""Backends: ONNX Runtime against a direct session, the auto choice, clear errors, TensorRT vs ORT."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgedepth.errors import ConfigError, ModelError
from edgedepth.runtime.backends import cpu_int8_verdict, find_engines, load_backend
from edgedepth.runtime.backends.onnxruntime import OrtBackend

MODEL_H, MODEL_W = 64, 96  # the size tests/runtime/conftest.py exports at


def test_ort_backend_matches_plain_session_and_reads_metadata(tiny_onnx):
    import onnxruntime as ort

    be = load_backend(tiny_onnx, backend="ort-cpu")
    assert be.name == "ort-cpu" and be.info.version == "7" and be.info.name == "tiny-test"
    assert be.input_shape == (1, 3, MODEL_H, MODEL_W) and len(be.model_sha256) == 64
    x = np.random.default_rng(0).standard_normal(be.input_shape).astype(np.float32)
    ref_d, ref_u = ort.InferenceSession(str(tiny_onnx)).run(["depth", "uncertainty"], {"image": x})
    d, u = be.infer(x)
    np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(u, ref_u, rtol=1e-4, atol=1e-5)
    assert (d > 0).all()
    # the output ring: results of earlier calls stay valid for ring-1 further calls
    first = d.copy()
    x2 = x * 0.5
    d2, _ = be.infer(x2)
    assert not np.shares_memory(d, d2)
    np.testing.assert_array_equal(d, first)
    plain = OrtBackend(tiny_onnx, io_binding=False)
    np.testing.assert_allclose(plain.infer(x2)[0], d2, rtol=1e-4, atol=1e-5)
    be.close()


def test_auto_on_a_bundle_explains_its_choice(tiny_bundle):
    be = load_backend(tiny_bundle)
    assert be.name.startswith("ort") and be.reason
    assert "no model.int8.cpu.onnx" in be.reason


def test_int8_cpu_verdict_from_the_calibration_report(tmp_path, tiny_onnx):
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(tiny_onnx, b / "model.onnx")
    shutil.copy(tiny_onnx, b / "model.int8.cpu.onnx")  # stands in for a quantized model
    assert cpu_int8_verdict(b)[0] is False  # no report: not trusted
    report = {
        "targets": {
            "cpu": {
                "gate_passed": True,
                "written": True,
                "chosen_method": "minmax",
                "methods": {"minmax": {"speed": {"fp32_ms": 6.0, "int8_ms": 5.0, "ratio": 1.2}}},
            }
        }
    }
    (b / "calibration.json").write_text(json.dumps(report))
    ok, why = cpu_int8_verdict(b)
    assert ok and "1.20x" in why
    be = load_backend(b, backend="auto")
    assert be.model_path.endswith("model.int8.cpu.onnx")
    report["targets"]["cpu"]["methods"]["minmax"]["speed"]["ratio"] = 0.8
    (b / "calibration.json").write_text(json.dumps(report))
    assert cpu_int8_verdict(b) == (
        False,
        "model.int8.cpu.onnx passed its gate but is not faster than FP32 (0.80x)",
    )
    report["targets"]["cpu"].update(gate_passed=False, written=False)
    (b / "calibration.json").write_text(json.dumps(report))
    assert not cpu_int8_verdict(b)[0]
    assert load_backend(b, backend="auto").model_path.endswith("model.onnx")


def test_clear_errors_before_the_loop(tmp_path, tiny_bundle):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        load_backend(bad)
    with pytest.raises(ModelError, match="does not exist"):
        load_backend(tmp_path / "missing")
    with pytest.raises(ConfigError, match="unknown backend"):
        load_backend(tiny_bundle, backend="magic")
    with pytest.raises(ModelError):
        load_backend(tiny_bundle, backend="trt")  # tensorrt missing here, or no engine for the board
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no model.onnx"):
        load_backend(empty)


def test_onnx_without_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["depth"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match="not exported by"):
        load_backend(path)


def test_engine_discovery_and_mismatched_manifest(tmp_path):
    from edgedepth.export.trt_build import ENGINE_FORMAT

    from edgedepth.runtime.backends.tensorrt import check_manifest

    eng = tmp_path / "engines"
    eng.mkdir()
    for name in (
        "model.orin-nano-8gb.fp16.trt10.3.engine",
        "model.orin-nano-8gb.int8.trt10.3.engine",
        "model.xavier-nx.int8.trt8.5.2.engine",
    ):
        (eng / name).write_bytes(b"x")
    found = [p.name for p in find_engines(tmp_path, "orin-nano-8gb")]
    assert found == ["model.orin-nano-8gb.int8.trt10.3.engine", "model.orin-nano-8gb.fp16.trt10.3.engine"]
    assert len(find_engines(tmp_path, None)) == 3
    path = eng / "model.xavier-nx.int8.trt8.5.2.engine"
    manifest = {
        "format": ENGINE_FORMAT,
        "engine": path.name,
        "tensorrt": "8.5.2",
        "board": "xavier-nx",
        "gpu_sm": "7.2",
    }
    with pytest.raises(ModelError, match="built with TensorRT 8.5.2"):
        check_manifest(path, manifest, "10.3.0", "xavier-nx", gpu_sm="7.2")
    with pytest.raises(ModelError, match="SM 7.2"):
        check_manifest(path, manifest, "8.5.2", "xavier-nx", gpu_sm="8.7")
    with pytest.raises(ModelError, match="built for board"):
        check_manifest(path, manifest, "8.5.2", "orin-nano-8gb", gpu_sm="7.2")
    with pytest.raises(ModelError, match="sha256"):
        check_manifest(path, dict(manifest, engine_sha256="0" * 64), "8.5.2", "xavier-nx", gpu_sm="7.2")
    check_manifest(path, manifest, "8.5.2", "xavier-nx", gpu_sm="7.2")  # a match passes


def _gpu_trt_reason():
    try:
        import pycuda.driver as cuda  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"tensorrt/pycuda not installed ({exc.name})"
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA GPU"
    except Exception as exc:  # pycuda raises its own error types when no driver is present
        return f"no usable CUDA driver ({exc})"
    return ""


@pytest.mark.gpu
@pytest.mark.skipif(bool(_gpu_trt_reason()), reason=_gpu_trt_reason() or "ok")
def test_tensorrt_engine_matches_onnxruntime(tmp_path, tiny_onnx):
    import tensorrt as trt

    from edgedepth.runtime.backends.tensorrt import TrtBackend

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = (
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
        else 0
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(tiny_onnx.read_bytes()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    blob = builder.build_serialized_network(network, config)
    engine = tmp_path / "model.test.fp32.trt.engine"
    engine.write_bytes(bytes(blob))
    ort_be = load_backend(tiny_onnx, backend="ort-cpu")
    props = ort_be.info.to_metadata_props()
    from edgedepth.export.trt_build import ENGINE_FORMAT

    engine.with_suffix(".json").write_text(
        json.dumps({"format": ENGINE_FORMAT, "tensorrt": trt.__version__, "metadata_props": props})
    )
    be = TrtBackend(engine)
    x = np.random.default_rng(1).standard_normal(be.input_shape).astype(np.float32)
    d, u = be.infer(x)
    rd, ru = ort_be.infer(x)
    np.testing.assert_allclose(d, rd, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(u, ru, rtol=1e-3, atol=1e-3)
    be.close()


def test_auto_falls_back_to_onnxruntime_when_tensorrt_is_missing(tmp_path, tiny_onnx):
    import importlib.util

    if importlib.util.find_spec("tensorrt") and importlib.util.find_spec("pycuda"):
        pytest.skip("tensorrt and pycuda are installed here")
    b = tmp_path / "b"
    (b / "engines").mkdir(parents=True)
    shutil.copy(tiny_onnx, b / "model.onnx")
    (b / "engines" / "model.orin-nano-8gb.fp16.trt10.3.engine").write_bytes(b"engine")
    (b / "engines" / "model.orin-nano-8gb.fp16.trt10.3.json").write_text("{}")
    be = load_backend(b, backend="auto", device="orin-nano-8gb")
    assert be.name == "ort-cpu" and "is not installed" in be.reason
    with pytest.raises(ModelError, match="JetPack"):
        load_backend(b, backend="trt", device="orin-nano-8gb")


def test_pipeline_threads_leave_one_core_to_the_loop_stages():
    from edgedepth.runtime.backends.onnxruntime import pipeline_threads

    assert [pipeline_threads(n) for n in (1, 2, 4, 8)] == [1, 1, 3, 7]
    assert pipeline_threads() >= 1
