"""`edgedepth calibrate`: TensorRT-safe Q/DQ, the CPU layout chosen by measurement, the accuracy gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgedepth import bundle
from edgedepth.errors import GateRefused


def test_trt_target_obeys_tensorrt_qdq_rules(calibrated):
    import onnx
    from edgedepth.export.lint import lint_model
    from onnx import numpy_helper

    bdir, report = calibrated
    mp = onnx.load(str(bdir / bundle.MODEL_INT8_TRT))
    inits = {t.name: t for t in mp.graph.initializer}
    qdq = [n for n in mp.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 40
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.data_type == onnx.TensorProto.INT8 and not numpy_helper.to_array(zp).any()
        scale = numpy_helper.to_array(inits[n.input[1]])
        if scale.size > 1:  # per-channel only on weights, output-channel axis
            assert n.input[0] in inits or n.input[0].endswith("QuantizeLinear_Output")
            assert next(a.i for a in n.attribute if a.name == "axis") == 0
    consumers = {i: n for n in mp.graph.node for i in n.input}
    conv_outs = [n.output[0] for n in mp.graph.node if n.op_type == "Conv"]
    assert not any(
        consumers.get(o) is not None and consumers[o].op_type == "QuantizeLinear" for o in conv_outs
    )
    assert lint_model(str(bdir / bundle.MODEL_INT8_TRT), "orin-nano-8gb").ok
    sec = report["targets"]["trt"]
    assert sec["written"] and sec["gate_passed"] and sec["chosen_method"] == "minmax"
    assert len(sec["frames"]["calibration"]) == 12 and len(sec["frames"]["holdout"]) == 6
    assert not set(sec["frames"]["calibration"]) & set(sec["frames"]["holdout"])
    assert sec["methods"]["minmax"]["gate"]["d1_drop"] <= 0.01
    assert report["activation_ranges"] and "image" in report["activation_ranges"]
    # the fixture calibrates for xavier-nx, whose TensorRT is 8.5.2
    assert (bdir / bundle.CALIB_CACHE).read_text().startswith("TRT-8502-EntropyCalibration2")
    assert sec["trt_cache"]["tensorrt"] == "8.5.2"
    man = bundle.verify_bundle(bdir)
    assert {bundle.MODEL_INT8_TRT, bundle.CALIB_REPORT, bundle.CALIB_CACHE} <= set(man["files"])


def test_cpu_target_measures_layer_types_and_reuses_ranges(calibrated, frames_dir, monkeypatch):
    import onnx
    import onnxruntime.quantization.calibrate as ort_calibrate
    from edgedepth.calibrate.pipeline import calibrate_model

    bdir, _ = calibrated

    def no_calibration(*args, **kwargs):
        raise AssertionError("the ranges must come from the trt run's cache, not a new calibration")

    monkeypatch.setattr(ort_calibrate, "create_calibrator", no_calibration)
    report = calibrate_model(str(bdir / "model.onnx"), str(frames_dir), "cpu", "minmax", n_frames=12)
    sec = report["targets"]["cpu"]
    m = sec["methods"]["minmax"]
    per_type = m["layout"]["per_type"]
    assert {"conv_pointwise", "conv_depthwise_3x3", "conv_depthwise_5x5", "conv_head"} <= set(per_type)
    assert all(v["only_this_int8_ms"] > 0 for v in per_type.values())
    assert (
        m["speed"]["ratio"] > 0 and m["speed"]["rounds"] > 0 and m["layout"]["format"] in ("qdq", "qoperator")
    )
    assert "trt" in report["targets"]  # both targets kept in one report
    if sec["written"]:
        mp = onnx.load(str(bdir / bundle.MODEL_INT8_CPU))
        zps = [t.data_type for t in mp.graph.initializer if t.name.endswith("zero_point")]
        # which layer types stay quantized is chosen by measured speed (noisy); what is quantized has uint8
        # activations (weights int8, biases int32)
        assert 2 in zps or not m["layout"].get("nodes_quantized"), (zps, m["layout"].get("nodes_quantized"))


def test_gate_refusal_writes_report_not_artifact(tmp_path, exported, frames_dir, monkeypatch):
    import shutil

    from edgedepth.calibrate import accuracy_gate
    from edgedepth.calibrate.pipeline import calibrate_model

    from edgedepth.cli.main import cli

    bdir, _ = exported
    work = tmp_path / "b"
    work.mkdir()
    shutil.copy(bdir / "model.onnx", work / "model.onnx")
    strict = accuracy_gate.decide
    monkeypatch.setattr(accuracy_gate, "decide", lambda f, i: strict(f, i, max_d1_drop=-1.0))
    with pytest.raises(GateRefused, match="delta1 drops"):
        calibrate_model(str(work / "model.onnx"), str(frames_dir), "trt", "minmax", n_frames=8)
    assert not (work / bundle.MODEL_INT8_TRT).exists()
    rep = json.loads((work / bundle.CALIB_REPORT).read_text())
    assert rep["targets"]["trt"]["written"] is False and rep["targets"]["trt"]["gate_passed"] is False
    assert rep["targets"]["trt"]["methods"]["minmax"]["fallback"] is not None  # tried stem/heads in float
    res = CliRunner().invoke(
        cli,
        [
            "calibrate",
            str(work / "model.onnx"),
            "--data",
            str(frames_dir),
            "--target",
            "trt",
            "--frames",
            "8",
        ],
    )
    assert res.exit_code == 2 and "refused by the accuracy gate" in res.output and "FAIL" in res.output
    res = CliRunner().invoke(
        cli,
        [
            "calibrate",
            str(work / "model.onnx"),
            "--data",
            str(frames_dir),
            "--target",
            "trt",
            "--frames",
            "8",
            "--allow-drop",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (work / bundle.MODEL_INT8_TRT).exists()


def test_gate_decision_thresholds():
    from edgedepth.calibrate.accuracy_gate import decide

    fp = {"d1": 0.90, "abs_rel": 0.10}
    assert decide(fp, {"d1": 0.895, "abs_rel": 0.104})["passed"]
    d = decide(fp, {"d1": 0.885, "abs_rel": 0.104})
    assert not d["passed"] and "delta1" in d["reasons"][0]
    d = decide(fp, {"d1": 0.90, "abs_rel": 0.106})
    assert not d["passed"] and "AbsRel" in d["reasons"][0]
    assert not decide(fp, {"d1": float("nan"), "abs_rel": 0.1})["passed"]


def test_auto_keeps_the_best_method(tmp_path, exported, frames_dir):
    import shutil

    from edgedepth.calibrate.pipeline import calibrate_model

    bdir, _ = exported
    shutil.copy(bdir / "model.onnx", tmp_path / "model.onnx")
    rep = calibrate_model(str(tmp_path / "model.onnx"), str(frames_dir), "trt", "auto", n_frames=8)
    sec = rep["targets"]["trt"]
    assert set(sec["methods"]) == {"minmax", "entropy", "percentile"}
    best = max(sec["methods"].items(), key=lambda kv: (kv[1]["metrics"]["d1"], -kv[1]["metrics"]["abs_rel"]))
    assert sec["chosen_method"] == best[0]
    assert np.isfinite(sec["methods"]["entropy"]["metrics"]["abs_rel"])
    if sec["written"]:  # no --device: the implicit-INT8 cache is not guessed for some TensorRT version
        assert sec["trt_cache"]["file"] is None and "--device" in sec["trt_cache"]["why"]
        assert not (tmp_path / bundle.CALIB_CACHE).exists()


def test_gate_without_ground_truth_bounds_the_deviation_from_fp32():
    """Reference mode: FP32 scores AbsRel 0 against itself, so the limit applies to INT8's own AbsRel."""
    from edgedepth.calibrate.accuracy_gate import decide

    fp = {"d1": 1.0, "abs_rel": 0.0}
    assert decide(fp, {"d1": 1.0, "abs_rel": 0.01})["passed"]
    d = decide(fp, {"d1": 1.0, "abs_rel": 0.06})
    assert not d["passed"] and "against the FP32 output is 6.00%" in d["reasons"][0]


def test_calibration_feeds_camera_bytes_to_a_uint8_input_model(tmp_path, tiny_ckpt, frames_dir):
    """A model with preprocessing in its graph is calibrated and gated on uint8 camera frames."""
    import onnx
    from edgedepth.calibrate.pipeline import calibrate_model
    from edgedepth.export.lint import lint_model
    from edgedepth.export.onnx import export_onnx

    from edgedepth.modelmeta import read_onnx_info

    export_onnx(str(tiny_ckpt), str(tmp_path), opset=13, data=str(frames_dir), parity_frames=4,
                input_format="uint8-hwc-bgr", input_size=(128, 128))
    report = calibrate_model(str(tmp_path / "model.onnx"), str(frames_dir), "trt", "minmax", n_frames=12)
    sec = report["targets"]["trt"]
    assert report["input_format"] == "uint8-hwc-bgr"
    assert sec["written"] and sec["gate_passed"], sec["methods"]["minmax"]["gate"]
    int8 = tmp_path / bundle.MODEL_INT8_TRT
    mp = onnx.load(str(int8))
    assert mp.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert read_onnx_info(str(int8)).input.format == "uint8-hwc-bgr"
    lo, hi = report["activation_ranges"]["preprocess/float"]  # the graph's cast of the camera bytes
    assert 0 <= lo and 1 < hi <= 255  # calibrated on raw bytes, not on normalised floats
    assert lint_model(str(int8), "orin-nano-8gb").ok
