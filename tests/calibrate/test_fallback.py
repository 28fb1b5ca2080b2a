"""Per-layer float fallback of the TensorRT INT8 target: a layer made sensitive on purpose is found,
left un-quantized, and the gate then passes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgedepth import bundle

SCALE = 3000.0  # one activation channel this much wider than the rest: per-tensor INT8 crushes the others


def _sensitive_copy(src, dst) -> str:
    """Copy model.onnx with one pointwise conv made INT8-sensitive, the float function unchanged.

    One channel of the depthwise conv before it is scaled up by SCALE (weights and bias; ReLU commutes
    with a positive scale) and the pointwise conv's weights for that input channel scaled down by it.
    The pointwise conv's input then spans SCALE times the range of its other channels.
    """
    import onnx
    from onnx import numpy_helper

    mp = onnx.load(str(src))
    inits = {t.name: t for t in mp.graph.initializer}
    consumers = {i: n for n in mp.graph.node for i in n.input}
    convs = [n for n in mp.graph.node if n.op_type == "Conv"]
    for dw in reversed(convs):  # the last block: an untrained network's output hardly depends on others
        group = next((a.i for a in dw.attribute if a.name == "group"), 1)
        relu = consumers.get(dw.output[0])
        pw = consumers.get(relu.output[0]) if relu is not None and relu.op_type == "Relu" else None
        if group > 1 and pw is not None and pw.op_type == "Conv":
            break
    else:
        raise AssertionError("no depthwise -> ReLU -> pointwise block found")

    def scale(name, index, factor):
        arr = numpy_helper.to_array(inits[name]).copy()
        arr[index] *= factor
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))

    c = int(np.argmax(numpy_helper.to_array(inits[dw.input[2]])))  # largest bias: active after ReLU
    scale(dw.input[1], c, SCALE)
    scale(dw.input[2], c, SCALE)
    scale(pw.input[1], (slice(None), c), 1.0 / SCALE)
    onnx.save(mp, str(dst))
    return pw.name


@pytest.fixture(scope="module")
def rgb_only_frames(tmp_path_factory, frames_dir):
    """The shared frames with every depth pixel invalid: the gate then scores INT8 against the FP32
    output (an untrained test network's error against ground truth says little)."""
    import cv2

    out = tmp_path_factory.mktemp("rgb-only")
    shutil.copytree(frames_dir / "rgb", out / "rgb")
    (out / "depth").mkdir()
    for p in (frames_dir / "depth").iterdir():
        cv2.imwrite(str(out / "depth" / p.name), np.zeros_like(cv2.imread(str(p), cv2.IMREAD_UNCHANGED)))
    return out


def test_rewired_graph_equals_the_written_mixed_model(exported, tmp_path):
    """Sensitivity and the greedy search run on Q/DQ pairs bypassed in the full model; the artifact is
    onnxruntime's quantization with nodes_to_exclude, then the same bypass for inputs shared with a
    quantized layer (the depth head shares its input with the uncertainty head). Both must agree."""
    import onnx
    from edgedepth.calibrate import accuracy_gate as gate
    from edgedepth.calibrate import quantize as q
    from edgedepth.calibrate.fallback import quantized_layers, with_float_layers

    bdir, _ = exported
    pre = tmp_path / "pre.onnx"
    q.pre_process(str(bdir / "model.onnx"), str(pre))
    x = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    ranges = q.calibrate_ranges(str(pre), x, "minmax", tmp_path / "r.json")
    full = q.quantize_trt(str(pre), str(tmp_path / "full.onnx"), ranges, "minmax")
    layers = quantized_layers(onnx.load(full))
    assert len(layers) >= 40 and sum(1 for n in layers if "Add" in n) >= 3
    pick = [layers[0], layers[len(layers) // 2], next(n for n in layers if "Add" in n),
            next(n for n in layers if "depth_head" in n)]
    onnx.save(with_float_layers(onnx.load(full), pick), str(tmp_path / "rewired.onnx"))
    ref = q.quantize_trt(str(pre), str(tmp_path / "excluded.onnx"), ranges, "minmax", exclude=pick)
    assert any("depth_head" in n for n in quantized_layers(onnx.load(ref)))  # the shared input's Q/DQ
    onnx.save(with_float_layers(onnx.load(ref), pick), ref)
    rewired, excluded = onnx.load(str(tmp_path / "rewired.onnx")), onnx.load(ref)
    assert not set(pick) & set(quantized_layers(excluded))
    assert sorted(quantized_layers(rewired)) == sorted(quantized_layers(excluded))
    assert sorted(n.op_type for n in rewired.graph.node) == sorted(n.op_type for n in excluded.graph.node)
    np.testing.assert_allclose(gate.predict(str(tmp_path / "rewired.onnx"), x), gate.predict(ref, x),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(gate.predict(full, x), gate.predict(ref, x))


def test_fallback_keeps_the_sensitive_layer_in_float(tmp_path, exported, rgb_only_frames):
    import onnx
    from edgedepth.calibrate.fallback import quantized_layers
    from edgedepth.export.lint import lint_model

    from edgedepth.backends.tensorrt.build import fp16_onnx_for, plan_build
    from edgedepth.cli.main import cli

    bdir, _ = exported
    work = tmp_path / "b"
    work.mkdir()
    victim = _sensitive_copy(bdir / "model.onnx", work / "model.onnx")
    res = CliRunner().invoke(cli, ["calibrate", str(work / "model.onnx"), "--data", str(rgb_only_frames),
                                   "--target", "trt", "--frames", "12", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "float fallback" in res.output and victim in res.output
    rep = json.loads((work / bundle.CALIB_REPORT).read_text())
    sec = rep["targets"]["trt"]
    assert sec["gate_reference"] == "FP32 output"
    m = sec["methods"]["minmax"]
    fb = m["fallback"]
    assert fb["sensitivity"][0]["layer"] == victim  # found by measurement
    assert not m["fallback"]["steps"][-1].get("requantized")
    assert fb["passed"] and fb["float_layers"][0] == victim
    assert fb["gate"]["passed"] and fb["gate"]["d1_drop"] <= 0.01
    assert m["gate"]["passed"] and sec["gate_passed"] and sec["written"]
    assert sec["float_layers"] == fb["float_layers"]
    share = fb["share"]
    assert share["int8_weighted_layers"] == share["weighted_layers"] - len(fb["float_layers"])
    assert 0.5 < share["int8_mac_fraction"] < 1.0 and fb["full_share"]["int8_mac_fraction"] == 1.0
    assert fb["cpu_latency"]["mixed_ms"] > 0
    written = onnx.load(str(work / bundle.MODEL_INT8_TRT))
    assert victim not in quantized_layers(written)
    assert len(quantized_layers(written)) == fb["quantized_layers"] - len(fb["float_layers"])
    lint = lint_model(str(work / bundle.MODEL_INT8_TRT), "orin-nano-8gb")
    assert lint.ok, [f.line() for f in lint.errors]
    mixed = next(f for f in lint.findings if f.code == "float-layers")
    assert f"{len(fb['float_layers'])} of" in mixed.message and victim in mixed.message
    assert mixed.level == "info" and "FP16" in mixed.message and "builder flags" in mixed.message  # 10.3
    trt8 = next(f for f in lint_model(str(work / bundle.MODEL_INT8_TRT), "xavier-nx").findings
                if f.code == "float-layers")
    assert trt8.level == "info" and "FP16" in trt8.message
    assert "% of the MACs" in res.output and "all layers INT8" in res.output
    man = bundle.read_manifest(work)
    assert man["calibration"]["trt"]["float_layers"] == fb["float_layers"]
    # the FP16 copy a strongly typed TensorRT 10.12+ / 11 build of the mixed model parses
    assert sec["fp16_onnx"] == "model.int8.trt.fp16.onnx"
    plan = plan_build(str(work / bundle.MODEL_INT8_TRT), "x86-dgpu", trt_version="11.4.0")
    assert plan.float_layers_fp16 == "fp16-onnx" and fp16_onnx_for(plan).endswith(sec["fp16_onnx"])
