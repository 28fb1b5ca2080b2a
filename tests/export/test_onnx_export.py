"""Export: checker-clean FP32 ONNX, BN folded, metadata, parity vs PyTorch, opset chosen per board."""

from __future__ import annotations

import numpy as np
import pytest

from edgedepth.errors import ConfigError, ModelError


def test_export_is_clean_documented_and_matches_pytorch(exported):
    import onnx

    from edgedepth.modelmeta import read_onnx_info

    bdir, report = exported
    mp = onnx.load(str(bdir / "model.onnx"))
    onnx.checker.check_model(mp, full_check=True)
    ops = {n.op_type for n in mp.graph.node}
    assert "BatchNormalization" not in ops and "Identity" not in ops and "Constant" not in ops
    network = {n.op_type for n in mp.graph.node if not n.name.startswith("selection/")}
    assert network <= {"Conv", "Relu", "Add", "Resize", "Sigmoid", "Mul", "Exp"}
    assert ops - network <= {"Slice", "Exp", "GlobalAveragePool", "Flatten", "Log", "Shape", "Cast", "Concat",
                             "Resize", "Mul", "Add"}  # the selection features (export/selection_graph.py)
    assert mp.opset_import[0].version == 13 and report["opset"] == 13
    assert [i.name for i in mp.graph.input] == ["image"]
    assert [o.name for o in mp.graph.output] == ["depth", "uncertainty", "selection"]
    assert "metres" in mp.graph.output[0].doc_string and "image" in mp.graph.doc_string
    dims = [d.dim_value for d in mp.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]
    assert not [t.name for t in mp.graph.initializer if t.data_type == onnx.TensorProto.INT64]
    info = read_onnx_info(str(bdir / "model.onnx"))
    assert info.name == "tiny-test" and info.preprocessing.height == 64 and len(info.checkpoint_sha256) == 64
    assert "edgedepth.export" in info.extra
    par = report["parity"]
    assert par["frames"] == 8 and par["max_rel_depth"] <= 1e-4
    assert par["delta1_vs_reference"] == 1.0 and par["delta1_agreement"] <= 1e-3


def test_opset_follows_the_board_and_is_refused_above_it(tmp_path, tiny_ckpt, frames_dir):
    from edgedepth.export.onnx import choose_opset, export_onnx

    from edgedepth.devices import load_device

    assert choose_opset(None, load_device("jetson-nano-4gb")) == 13
    assert choose_opset(None, load_device("xavier-nx")) == 17
    assert choose_opset(None, None) == 17
    with pytest.raises(ConfigError, match="use --opset 13"):
        export_onnx(str(tiny_ckpt), str(tmp_path), opset=17, device="jetson-nano-4gb", data=str(frames_dir))
    with pytest.raises(ConfigError, match="needs opset >= 13"):
        choose_opset(11, None)
    assert not (tmp_path / "model.onnx").exists()


def test_parity_beyond_tolerance_refuses_the_export(tmp_path, tiny_ckpt, frames_dir):
    from edgedepth.export.onnx import export_onnx

    with pytest.raises(ModelError, match="differs from PyTorch"):
        export_onnx(str(tiny_ckpt), str(tmp_path), data=str(frames_dir), parity_frames=2, tolerance=0.0)
    assert not (tmp_path / "model.onnx").exists()
    assert not list(tmp_path.glob(".model.onnx.tmp*"))


def test_dynamic_batch_and_other_size_via_cli(tmp_path, tiny_ckpt, frames_dir):
    import onnxruntime as ort
    from click.testing import CliRunner

    from edgedepth.cli.main import cli

    res = CliRunner().invoke(cli, ["export", str(tiny_ckpt), "--out", str(tmp_path), "--size", "64x96",
                                   "--dynamic-batch", "--data", str(frames_dir), "--frames", "4",
                                   "--device", "xavier-nx"])
    assert res.exit_code == 0, res.output
    assert "max relative depth error" in res.output and "opset 17" in res.output
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    depth, unc, sel = sess.run(None, {"image": np.zeros((3, 3, 64, 96), np.float32)})
    assert depth.shape == (3, 1, 64, 96) and unc.shape == (3, 1, 64, 96) and np.all(depth > 0)
    assert sel.shape == (3, 1 + 8 * 12 + 576) and np.isfinite(sel).all()  # selection features per frame
    res = CliRunner().invoke(cli, ["export", str(tiny_ckpt), "--out", str(tmp_path), "--size", "60x96"])
    assert res.exit_code == 2 and "multiples of 32" in res.output


def test_export_ships_the_training_reference_for_novelty(tiny_ckpt, frames_dir, tmp_path):
    from click.testing import CliRunner

    from edgedepth.bundle import read_manifest, verify_bundle
    from edgedepth.cli.main import cli
    from edgedepth.runtime.reference import REFERENCE_FILE, load_reference

    res = CliRunner().invoke(cli, ["export", str(tiny_ckpt), "--out", str(tmp_path), "--size", "64x64",
                                   "--data", str(frames_dir), "--frames", "4",
                                   "--reference-data", str(frames_dir)])
    assert res.exit_code == 0, res.output
    ref = load_reference(tmp_path)
    assert ref is not None and REFERENCE_FILE in str(res.output)
    assert any(REFERENCE_FILE in str(f) for f in read_manifest(tmp_path)["files"])
    verify_bundle(tmp_path)


def test_uint8_input_graph_matches_the_float_pipeline(tmp_path, tiny_ckpt, frames_dir, exported):
    """--input-format uint8-hwc-bgr: the camera's BGR bytes in, preprocessing inside the graph; the same
    depth as the float model fed by edgedepth.preprocess."""
    import onnx
    import onnxruntime as ort
    from edgedepth.export.onnx import export_onnx

    from edgedepth.data.frames import load_frameset
    from edgedepth.modelmeta import read_onnx_info

    float_dir, _ = exported  # the same checkpoint exported with the float input, 64x64
    report = export_onnx(str(tiny_ckpt), str(tmp_path), opset=13, data=str(frames_dir), parity_frames=8,
                         input_format="uint8-hwc-bgr", input_size=(128, 128))
    mp = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(mp, full_check=True)
    inp = mp.graph.input[0]
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 128, 128, 3]
    head = [n.op_type for n in mp.graph.node[:6]]
    assert head == ["Cast", "Transpose", "Gather", "AveragePool", "Sub", "Div"]
    info = read_onnx_info(str(tmp_path / "model.onnx"))
    assert info.input.format == "uint8-hwc-bgr" and (info.input.height, info.input.width) == (128, 128)
    assert info.input_shape == (1, 128, 128, 3) and info.preprocessing.size == (64, 64)
    assert report["input"] == [1, 128, 128, 3] and report["input_graph"]["resize"] == "average-pool 2x2"
    assert report["input_graph"]["max_rel_depth"] <= report["input_graph"]["tolerance"] == 2e-2
    assert any("uint8 input" in line for line in report["lines"])

    frames = load_frameset(str(frames_dir), 128, 128, limit=6)
    u8 = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    fp = ort.InferenceSession(str(float_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    worst = 0.0
    for rgb in frames.rgb:
        ref = fp.run(None, {"image": info.preprocessing.apply(rgb)})[0]
        bgr = np.ascontiguousarray(rgb[..., ::-1])[None]
        depth = u8.run(None, {"image": bgr})[0]
        worst = max(worst, float(np.max(np.abs(depth - ref) / ref)))
    assert worst <= 2e-2
    # a camera at the model's size: nothing to resize, the graph computes what the CPU would
    report = export_onnx(str(tiny_ckpt), str(tmp_path / "same"), opset=13, data=str(frames_dir),
                         parity_frames=4, input_format="uint8-hwc-rgb")
    assert report["input_graph"]["resize"] == "none" and report["input_graph"]["max_rel_depth"] <= 1e-4


def test_uint8_input_options_and_lint(tmp_path, tiny_ckpt, frames_dir):
    from click.testing import CliRunner
    from edgedepth.export.lint import lint_model

    from edgedepth.cli.main import cli

    res = CliRunner().invoke(cli, ["export", str(tiny_ckpt), "--out", str(tmp_path),
                                   "--input-size", "96x128"])
    assert res.exit_code != 0 and "--input-format" in res.output
    res = CliRunner().invoke(cli, ["export", str(tiny_ckpt), "--out", str(tmp_path), "--opset", "13",
                                   "--data", str(frames_dir), "--frames", "4",
                                   "--input-format", "uint8-hwc-rgb", "--input-size", "96x160"])
    assert res.exit_code == 0, res.output
    assert "input [1, 96, 160, 3]" in res.output and "resize linear" in res.output
    ok = lint_model(str(tmp_path / "model.onnx"), "orin-nano-8gb")
    assert ok.ok and any(f.code == "uint8-input" and f.level == "info" for f in ok.findings)
    old = lint_model(str(tmp_path / "model.onnx"), "jetson-nano-4gb")
    assert not old.ok and [f.code for f in old.errors] == ["uint8-input"]
