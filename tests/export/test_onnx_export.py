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
    assert ops <= {"Conv", "Relu", "Add", "Resize", "Sigmoid", "Mul", "Exp"}
    assert mp.opset_import[0].version == 13 and report["opset"] == 13
    assert [i.name for i in mp.graph.input] == ["image"]
    assert [o.name for o in mp.graph.output] == ["depth", "uncertainty"]
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
    depth, unc = sess.run(None, {"image": np.zeros((3, 3, 64, 96), np.float32)})
    assert depth.shape == (3, 1, 64, 96) and unc.shape == (3, 1, 64, 96) and np.all(depth > 0)
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
