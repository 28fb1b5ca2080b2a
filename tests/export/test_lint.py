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


def test_lint_runs_on_a_base_install_without_onnx(ort_default_int8, exported, tmp_path):
    """`edgedepth lint` is part of the device install, which has onnxruntime but not the onnx package."""
    import subprocess
    import sys

    from edgedepth.calibrate import quantize as q

    bdir, _ = exported
    pre = tmp_path / "pre.onnx"
    q.pre_process(str(bdir / "model.onnx"), str(pre))
    x = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    trt = q.quantize_trt(str(pre), str(tmp_path / "trt.onnx"),
                         q.calibrate_ranges(str(pre), x, "minmax", tmp_path / "r.json"), "minmax")
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('onnx', 'torch', 'onnxscript'):\n"
        "            raise ImportError('blocked for the test: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edgedepth.cli.main import main\n"
        "sys.argv = ['edgedepth'] + sys.argv[1:]\n"
        "main()\n"
    )

    def run(*args):
        return subprocess.run([sys.executable, "-c", blocker, "lint", *args, "--json"], capture_output=True,
                              text=True, timeout=120)

    bad = run(str(ort_default_int8), "--device", "orin-nano-8gb")
    assert bad.returncode == 1, bad.stderr[-2000:]
    found = json.loads(bad.stdout)
    assert found == lint_model(str(ort_default_int8), "orin-nano-8gb").to_dict()
    assert {"qdq-type", "qdq-zero-point"} <= {f["code"] for f in found["findings"] if f["level"] == "error"}
    good = run(trt, "--device", "xavier-nx", "--dla-core", "0")
    assert good.returncode == 0, good.stderr[-2000:]
    codes = {f["code"] for f in json.loads(good.stdout)["findings"]}
    assert {"dla-qdq", "dla-fallback", "summary"} <= codes


def test_graph_reader_matches_onnx(ort_default_int8):
    """edgedepth.onnxgraph.read_model decodes what onnx.load decodes (nodes, attributes, tensors, I/O)."""
    import onnx
    from onnx import helper, numpy_helper

    from edgedepth.onnxgraph import read_model

    ref = onnx.load(str(ort_default_int8))
    got = read_model(str(ort_default_int8))
    assert got.ir_version == ref.ir_version
    opsets = [(o.domain, o.version) for o in ref.opset_import]
    assert [(o.domain, o.version) for o in got.opset_import] == opsets
    assert len(got.graph.node) == len(ref.graph.node)
    for g, r in zip(got.graph.node, ref.graph.node):
        assert (g.name, g.op_type, g.domain, g.input, g.output) == (
            r.name, r.op_type, r.domain, list(r.input), list(r.output))
        for a in r.attribute:
            want = helper.get_attribute_value(a)
            have = g.attr(a.name)
            if isinstance(want, onnx.TensorProto):
                assert np.array_equal(have.to_array(), numpy_helper.to_array(want))
            else:
                want = list(want) if isinstance(want, (list, tuple)) else want
                assert have == want or np.allclose(have, want)
    assert len(got.graph.initializer) == len(ref.graph.initializer)
    for g, r in zip(got.graph.initializer, ref.graph.initializer):
        assert g.name == r.name and g.data_type == r.data_type and g.dims == list(r.dims)
        assert np.array_equal(g.to_array(), numpy_helper.to_array(r))
    for g, r in zip(got.graph.input, ref.graph.input):
        dims = [(d.dim_value, d.dim_param) for d in r.type.tensor_type.shape.dim]
        assert g.name == r.name and [(d.dim_value, d.dim_param) for d in g.dims] == dims


def test_graph_reader_decodes_typed_fields(tmp_path):
    """Tensors written with typed fields (not raw_data), negative ints, float16, lists and strings."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgedepth.onnxgraph import read_model

    vals = {
        "f": (TensorProto.FLOAT, [1.5, -2.0, 3.25, 0.0]),
        "i8": (TensorProto.INT8, [-128, 0, 5, 127]),
        "i64": (TensorProto.INT64, [-(2**40), -1, 0, 2**62]),
        "h": (TensorProto.FLOAT16, [0.5, -1.0, 65504.0, 1e-3]),
        "d": (TensorProto.DOUBLE, [0.1, -0.2, 1e300, 4.0]),
    }
    inits = [helper.make_tensor(name, dt, [2, 2], v) for name, (dt, v) in vals.items()]
    node = helper.make_node("Pad", ["x"], ["y"], name="p", mode="reflect", pads=[-1, 2, 3, -4],
                            value=0.5, names=["a", "b"], scales=[1.0, 2.5])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "typed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    got = read_model(str(path))
    arrays = {t.name: t.to_array() for t in got.graph.initializer}
    assert arrays["f"].tolist() == [[1.5, -2.0], [3.25, 0.0]] and arrays["f"].dtype == np.float32
    assert arrays["i8"].tolist() == [[-128, 0], [5, 127]]
    assert arrays["i64"].ravel().tolist() == vals["i64"][1]
    assert arrays["h"].dtype == np.float16
    assert arrays["h"].ravel().tolist() == np.array([0.5, -1.0, 65504.0, 1e-3], np.float16).tolist()
    assert arrays["d"].ravel().tolist() == vals["d"][1]
    for t in onnx.load(str(path)).graph.initializer:
        assert not t.raw_data and np.array_equal(arrays[t.name], numpy_helper.to_array(t))
    n = got.graph.node[0]
    assert n.attr("mode") == b"reflect" and n.attr("pads") == [-1, 2, 3, -4] and n.attr("value") == 0.5
    assert n.attr("names") == [b"a", b"b"] and n.attr("scales") == [1.0, 2.5] and n.attr("nope", 7) == 7
    assert [(d.dim_value, d.dim_param) for d in got.graph.input[0].dims] == [(0, "N"), (3, "")]
    assert got.opset_import[0].version == 13
