"""Evaluation and prediction: .pt and .onnx agree, per-domain rows, odd image sizes, CLI errors."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from edgedepth.checkpoint import checkpoint_info, model_from_checkpoint, save_checkpoint
from edgedepth.evaluation import evaluate
from edgedepth.models import build_model
from edgedepth.models.catalog import model_config
from edgedepth.predictor import Predictor
from edgedepth.preprocess import Preprocessing


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_model(model_config("tiny", 0.1, 40.0))
    model.eval()
    with torch.no_grad():  # non-trivial BN statistics so the outputs vary over the image
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    pre = Preprocessing(64, 96, min_depth=0.1, max_depth=40.0)
    return save_checkpoint(tmp_path / "tiny.pt", model, model_config("tiny", 0.1, 40.0), pre, seed=0, epoch=0)


def export_onnx(ckpt_path, onnx_path):
    import onnx

    model, ckpt = model_from_checkpoint(ckpt_path)
    pre = Preprocessing.from_dict(ckpt["preprocessing"])
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(model, torch.zeros(1, 3, pre.height, pre.width), str(onnx_path), input_names=["image"],
                      output_names=["depth", "uncertainty"], opset_version=17,
                      dynamic_axes={"image": {0: "n"}, "depth": {0: "n"}, "uncertainty": {0: "n"}}, **kwargs)
    proto = onnx.load(str(onnx_path))
    for k, v in checkpoint_info(ckpt).to_metadata_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(onnx_path))
    return onnx_path


def test_eval_pt_and_onnx_give_the_same_metrics_with_domain_rows(tmp_path, tiny_ckpt, folder_dataset):
    indoor = folder_dataset("indoor", n=5, h=60, w=80, seed=4, domain="indoor")
    night = folder_dataset("night", n=4, h=60, w=80, seed=5, domain="night")
    onnx_path = export_onnx(tiny_ckpt, tmp_path / "tiny.onnx")
    r_pt = evaluate(str(tiny_ckpt), [str(indoor), str(night)])
    r_onnx = evaluate(str(onnx_path), [str(indoor), str(night)])
    assert r_pt.overall["frames"] == 9 and set(r_pt.per_domain) == {"indoor", "night"}
    for key in ("abs_rel", "rmse", "d1", "rmse_log"):
        assert r_onnx.overall[key] == pytest.approx(r_pt.overall[key], rel=1e-4, abs=1e-5)
        assert r_onnx.per_domain["night"][key] == pytest.approx(r_pt.per_domain["night"][key], rel=1e-4,
                                                                abs=1e-5)
    assert r_pt.per_domain["night"]["frames"] == 4
    assert [f.name for f in r_pt.frames] == [f.name for f in r_onnx.frames]
    assert all(np.isfinite(f.mean_uncertainty) for f in r_pt.frames)
    table = r_pt.table()
    assert "indoor" in table and "night" in table and "Spearman" in table
    # the CLI on the ONNX file (no torch needed for it) prints the table and writes JSON
    out = tmp_path / "eval.json"
    res = subprocess.run([sys.executable, "-m", "edgedepth", "eval", str(onnx_path), "--data",
                          f"{indoor},{night}", "--json", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "night" in res.stdout and "AbsRel" in res.stdout
    doc = json.loads(out.read_text())
    assert len(doc["frames"]) == 9
    assert doc["overall"]["abs_rel"] == pytest.approx(r_pt.overall["abs_rel"], rel=1e-4)


def test_predict_odd_sized_image_writes_three_files(tmp_path, tiny_ckpt):
    img = (np.random.default_rng(0).random((37, 71, 3)) * 255).astype(np.uint8)
    path = tmp_path / "odd.jpg"
    cv2.imwrite(str(path), img)
    out = tmp_path / "pred"
    res = subprocess.run([sys.executable, "-m", "edgedepth", "predict", "--model", str(tiny_ckpt), str(path),
                          "--out", str(out), "--colormap", "turbo"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "metric metres" in res.stdout
    mm = cv2.imread(str(out / "odd.depth.png"), cv2.IMREAD_UNCHANGED)
    metres = np.load(out / "odd.depth.npy")
    colour = cv2.imread(str(out / "odd.color.png"))
    assert mm.dtype == np.uint16 and mm.shape == (37, 71)
    assert metres.dtype == np.float32 and metres.shape == (37, 71)
    assert colour.shape[0] == 37 and colour.shape[1] > 71 + 30  # the preview, then its colour bar in metres
    assert np.abs(mm.astype(np.float64) / 1000.0 - metres).max() <= 0.0006
    assert metres.min() >= 0.1 and metres.max() <= 40.0
    # same numbers through the library
    pred = Predictor(tiny_ckpt).predict(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    assert np.allclose(pred.depth, metres, rtol=1e-5)


def test_predict_on_a_folder_keeps_the_input_names(tmp_path, tiny_ckpt):
    rng = np.random.default_rng(1)
    src = tmp_path / "imgs"
    (src / "sub").mkdir(parents=True)
    for name in ("kitchen_001.png", "sub/hall.jpg", "dup.png", "dup.jpg"):
        cv2.imwrite(str(src / name), (rng.random((40, 56, 3)) * 255).astype(np.uint8))
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "pred"
    res = subprocess.run([sys.executable, "-m", "edgedepth", "predict", "--model", str(tiny_ckpt), str(src),
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.depth.npy"))
    assert written == ["dup.jpg.depth.npy", "dup.png.depth.npy", "kitchen_001.depth.npy",
                       "sub/hall.depth.npy"]
    assert (out / "kitchen_001.color.png").is_file() and (out / "sub" / "hall.depth.png").is_file()


@pytest.mark.parametrize("args", [
    ["train", "--data", "/nonexistent/dir", "--epochs", "1", "--out", "OUT"],
    ["eval", "MODEL", "--data", "/nonexistent/dir"],
])
def test_cli_errors_are_one_clear_line(tmp_path, tiny_ckpt, args):
    args = [str(tmp_path / "o") if a == "OUT" else str(tiny_ckpt) if a == "MODEL" else a for a in args]
    res = subprocess.run([sys.executable, "-m", "edgedepth", *args], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "/nonexistent/dir" in lines[0] and "does not exist" in lines[0], res.stderr


def test_predict_missing_model_fails_clearly(tmp_path):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((10, 10, 3), np.uint8))
    res = subprocess.run([sys.executable, "-m", "edgedepth", "predict", "--model",
                          str(tmp_path / "none.onnx"), str(img), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "does not exist" in res.stderr


def test_cli_train_passes_the_frame_weight_and_refuses_a_negative_one(tmp_path, folder_dataset):
    data = folder_dataset("train", n=8, h=64, w=96, seed=1)

    def cli_train(weight: str, out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgedepth", "train", "--data", str(data), "--model",
                               "tiny", "--size", "64x96", "--epochs", "1", "--batch-size", "4",
                               "--no-progress", "--frame-weight", weight, "--out", str(tmp_path / out)],
                              capture_output=True, text=True, timeout=120)

    bad = cli_train("-1", "bad")
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode != 0 and len(lines) == 1 and "--frame-weight must be >= 0" in lines[0], bad.stderr
    ok = cli_train("2.5", "ok")
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "ok" / "run.json").read_text())["config"]["frame_weight"] == 2.5
