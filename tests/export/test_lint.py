"""Lint: what TensorRT on a given board would refuse, found without a GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from edgedepth.export.lint import lint_model

from edgedepth.cli.main import cli


def _codes(report, level="error"):
    return {f.code for f in report.findings if f.level == level}


@pytest.fixture(scope="module")
def ort_default_int8(exported, tmp_path_factory):
    """onnxruntime's default static quantization: asymmetric UINT8 activations (not TensorRT-safe)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    bdir, _ = exported
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = [{"image": rng.normal(size=(1, 3, 64, 64)).astype(np.float32)} for _ in range(4)]

        def get_next(self):
            return self.items.pop() if self.items else None

    out = tmp_path_factory.mktemp("ortq") / "default.onnx"
    quantize_static(str(bdir / "model.onnx"), str(out), Reader(), activation_type=QuantType.QUInt8)
    return out


def test_rejects_onnxruntime_default_quantization(ort_default_int8):
    rep = lint_model(str(ort_default_int8), "orin-nano-8gb")
    assert not rep.ok
    assert {"qdq-type", "qdq-zero-point"} <= _codes(rep)
    assert any("UINT8" in f.message for f in rep.errors)


def test_rejects_opset_too_high_for_the_board(tmp_path, tiny_ckpt, frames_dir):
    from edgedepth.export.onnx import export_onnx

    export_onnx(str(tiny_ckpt), str(tmp_path), opset=17, data=str(frames_dir), parity_frames=2)
    rep = lint_model(str(tmp_path / "model.onnx"), "jetson-nano-4gb")
    assert "opset" in _codes(rep) and "--opset 13" in rep.errors[0].message
    assert lint_model(str(tmp_path / "model.onnx"), "xavier-nx").ok


def test_int8_on_the_nano_is_an_error_and_trt_output_passes_on_orin(exported, tmp_path):
    from edgedepth.calibrate import quantize as q

    bdir, _ = exported
    pre = tmp_path / "pre.onnx"
    q.pre_process(str(bdir / "model.onnx"), str(pre))
    x = np.random.default_rng(0).normal(size=(6, 3, 64, 64)).astype(np.float32)
    ranges = q.calibrate_ranges(str(pre), x, "minmax", tmp_path / "r.json")
    out = q.quantize_trt(str(pre), str(tmp_path / "trt.onnx"), ranges, "minmax")
    ok = lint_model(out, "orin-nano-8gb")
    assert ok.ok, [f.line() for f in ok.errors]
    nano = lint_model(out, "jetson-nano-4gb")
    assert "int8" in _codes(nano) and "fp16" in next(f for f in nano.errors if f.code == "int8").message
    xavier = lint_model(out, "xavier-nx", dla_core=0)
    assert "dla-qdq" in _codes(xavier, "warning") and "dla-fallback" in _codes(xavier, "warning")


def test_model_level_checks(tmp_path, exported):
    import onnx
    from onnx import helper, numpy_helper

    bdir, _ = exported
    mp = onnx.load(str(bdir / "model.onnx"))
    mp.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    mp.graph.initializer.append(numpy_helper.from_array(np.array([1, 2], np.int64), "some_int64"))
    mp.graph.node.append(helper.make_node("Identity", ["some_int64"], ["unused_out"], name="id0"))
    path = tmp_path / "m.onnx"
    onnx.save(mp, str(path))
    report = {"activation_ranges": {"/Exp_output_0": [0.1, 1.0e6], "x": [0.0, 3.0]}}
    (tmp_path / "calibration.json").write_text(json.dumps(report))
    rep = lint_model(str(path), "agx-orin-64gb", calib_report=str(tmp_path / "calibration.json"))
    warn = _codes(rep, "warning")
    assert rep.ok and {"int64", "dynamic-batch", "fp16-overflow"} <= warn
    dla = next(f for f in rep.findings if f.code == "dla-fallback")
    assert "Exp" in dla.message


def test_cli_exit_codes(ort_default_int8, exported):
    bdir, _ = exported
    res = CliRunner().invoke(cli, ["lint", str(ort_default_int8), "--device", "orin-nano-8gb"])
    assert res.exit_code == 1 and "ERROR" in res.output
    res = CliRunner().invoke(cli, ["lint", str(bdir / "model.onnx"), "--device", "xavier-nx", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["ok"] is True
    res = CliRunner().invoke(cli, ["lint", str(bdir / "model.onnx"), "--device", "jetson-nano-4gb",
                                   "--precision", "int8"])
    assert res.exit_code == 1 and "nearest valid precision: fp16" in res.output
