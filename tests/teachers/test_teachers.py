"""Teachers behind one interface, the label cache, alignment of relative teachers, relative training."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from teacher_models import make_hf_depth_anything, make_onnx_teacher, write_scenes

from edgedepth.errors import ConfigError, DataError
from edgedepth.teachers import (
    LabelCache,
    LabelPolicy,
    TeacherLabeler,
    TeacherOptions,
    label_folder,
    open_teacher,
)
from edgedepth.teachers.align import align, fit_scale_shift, ground_points
from edgedepth.teachers.base import input_size


# -- alignment -------------------------------------------------------------------------------------
def test_robust_fit_recovers_scale_and_shift_despite_outliers():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 2.0, 400)
    y = 0.37 * x + 0.8
    y[:40] += rng.uniform(1, 5, 40)  # 10 % gross outliers
    s, t, inliers, _ = fit_scale_shift(x, y)
    assert s == pytest.approx(0.37, rel=1e-3) and t == pytest.approx(0.8, rel=1e-3)
    assert 0.85 < inliers < 0.95


def test_align_disparity_to_sparse_noisy_points():
    rng = np.random.default_rng(1)
    h, w = 96, 128
    depth = rng.uniform(1.0, 8.0, (h, w)).astype(np.float32)
    disparity = (1.0 / depth - 0.05) / 0.2  # 1/d = 0.2 * output + 0.05
    pts = np.zeros_like(depth)
    idx = rng.choice(h * w, int(0.005 * h * w), replace=False)  # 0.5 % of the pixels, 1 % noise
    pts.flat[idx] = depth.flat[idx] * (1 + 0.01 * rng.standard_normal(idx.size))
    aligned, fit = align(disparity, "disparity", pts)
    assert fit.points == idx.size and fit.scale == pytest.approx(0.2, rel=0.03)
    assert float(np.median(np.abs(aligned / depth - 1))) < 0.01
    with pytest.raises(DataError, match="metric point"):
        align(disparity, "disparity", np.zeros_like(depth))


def test_ground_plane_points_match_a_floor_seen_by_a_level_camera():
    h, w, height = 48, 64, 1.2
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    z = ground_points((h, w), K, height, rows=0.25)
    v = np.arange(h, dtype=np.float64)
    with np.errstate(divide="ignore"):
        expect = height * 50.0 / (v - 24)
    rows = np.nonzero(z[:, 0])[0]
    assert rows.min() == h - 12 and np.allclose(z[rows, 5], expect[rows], rtol=1e-5)
    assert not z[: h - 12].any()


# -- teachers behind one interface ------------------------------------------------------------------
def test_input_size_rounds_to_the_patch_multiple():
    assert input_size((48, 64), None, 14, 56) == (56, 70)
    assert input_size((480, 640), (500, 700), 14) == (504, 700)


def test_onnx_teacher_reads_metadata_or_refuses_without_an_output_kind(tmp_path, onnx_disparity):
    t = open_teacher(str(onnx_disparity))
    assert t.kind == "disparity" and t.multiple == 14 and t.backend == "onnxruntime"
    assert "metadata" in t.detected["output"]
    out = t.predict_many([np.full((30, 40, 3), 100, np.uint8), np.zeros((20, 20, 3), np.uint8)])
    assert [o.shape for o in out] == [(30, 40), (20, 20)] and all(np.isfinite(o).all() for o in out)
    bare = make_onnx_teacher(tmp_path / "bare.onnx", output=None)
    with pytest.raises(ConfigError, match="--teacher-output"):
        open_teacher(str(bare))
    t2 = open_teacher(str(bare), TeacherOptions(output="metric", size=(28, 28)))
    assert t2.kind == "metric" and t2.detected["output"] == "option" and t2.multiple == 14
    assert t2.identity != open_teacher(str(bare), TeacherOptions(output="metric")).identity


def test_onnx_teacher_with_a_fixed_input_shape(tmp_path):
    path = make_onnx_teacher(tmp_path / "fixed.onnx", output="metric", fixed_hw=(28, 42))
    t = open_teacher(str(path))
    assert t.size == (28, 42) and "fixed" in t.detected["input size"]
    assert t(np.zeros((50, 70, 3), np.uint8)).shape == (50, 70)


def test_edgedepth_checkpoint_teacher(tiny_ckpt):
    ckpt = tiny_ckpt  # tests/conftest.py
    t = open_teacher(str(ckpt))
    assert t.kind == "metric" and t.backend == "edgedepth"
    d = t.predict_many([np.zeros((40, 50, 3), np.uint8)] * 3)
    assert len(d) == 3 and d[0].shape == (40, 50) and (d[0] > 0).all()
    with pytest.raises(ConfigError, match="metric"):
        open_teacher(str(ckpt), TeacherOptions(output="disparity"))


def test_hf_depth_anything_from_a_local_save_pretrained_folder(tmp_path, hf_relative):
    t = open_teacher(str(hf_relative))
    assert t.backend == "transformers" and t.kind == "disparity" and t.multiple == 14
    assert t.short_side == 56 and t.mean == (0.5, 0.5, 0.5)
    imgs = [np.full((30, 40, 3), 50 * i, np.uint8) for i in range(3)] + [np.zeros((40, 30, 3), np.uint8)]
    out = t.predict_many(imgs)
    assert [o.shape for o in out] == [(30, 40)] * 3 + [(40, 30)]
    metric = make_hf_depth_anything(tmp_path / "da-metric", kind="metric")
    assert open_teacher(str(metric)).kind == "metric"
    assert open_teacher(str(hf_relative), TeacherOptions(output="relative")).kind == "relative"


def test_unknown_teacher_spec_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        open_teacher(str(tmp_path / "nope.onnx"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        open_teacher(str(tmp_path / "folder"))


# -- labels, cache, refusal -------------------------------------------------------------------------
def test_second_labelling_run_reads_the_cache(tmp_path, onnx_disparity):
    src = write_scenes(tmp_path / "src", n=5, depth="sparse")
    cache = LabelCache(tmp_path / "cache")
    teacher = open_teacher(str(onnx_disparity))
    labeler = TeacherLabeler(teacher, LabelPolicy(target="metric"), cache)
    first = label_folder(labeler, src, tmp_path / "a")
    assert first.computed == 5 and first.cached == 0 and first.counts == {"teacher-aligned": 5}
    runs = teacher.frames_run
    again = TeacherLabeler(open_teacher(str(onnx_disparity)), LabelPolicy(target="metric"), cache)
    second = label_folder(again, src, tmp_path / "b")
    assert second.computed == 0 and second.cached == 5 and again.teacher.frames_run == 0
    assert teacher.frames_run == runs
    a = np.load(tmp_path / "a" / "depth" / "f000.npy")
    assert np.array_equal(a, np.load(tmp_path / "b" / "depth" / "f000.npy")) and (a > 0).mean() > 0.9
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["frames"]["f000"]["label_kind"] == "teacher-aligned" and meta["depth_units"] == "metres"
    assert meta["frames"]["f000"]["alignment"]["source"] == "sensor"
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 5


def test_metric_labels_from_a_relative_teacher_without_metric_points_are_refused(tmp_path, onnx_disparity):
    src = write_scenes(tmp_path / "src", n=3, depth="none")
    labeler = TeacherLabeler(open_teacher(str(onnx_disparity)), LabelPolicy(target="metric"))
    with pytest.raises(ConfigError, match="--camera-height.*--target relative"):
        label_folder(labeler, src, tmp_path / "out")
    assert labeler.teacher.frames_run == 0  # refused before the teacher ran
    # the ground-plane prior is one of the ways out: the intrinsics are in meta.json
    ground = TeacherLabeler(labeler.teacher, LabelPolicy(target="metric", camera_height=1.0))
    rep = label_folder(ground, src, tmp_path / "ground")
    assert rep.counts == {"teacher-aligned": 3} and rep.sources == {"ground-plane": 3}
    rel = TeacherLabeler(labeler.teacher, LabelPolicy(target="relative"))
    rep = label_folder(rel, src, tmp_path / "rel")
    assert rep.counts == {"teacher-relative": 3}
    assert json.loads((tmp_path / "rel" / "meta.json").read_text())["depth_units"] == "relative"


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgedepth", *args], capture_output=True, text=True, cwd=cwd)


def test_train_from_a_relative_teacher_cli(tmp_path, onnx_disparity):
    src = write_scenes(tmp_path / "src", n=8, depth="none")
    val = write_scenes(tmp_path / "val", n=3, depth="dense", seed=5)
    common = ["train", "--data", str(src), "--val", str(val), "--model", "tiny", "--size", "32x64",
              "--epochs", "1", "--batch-size", "4", "--no-progress", "--teacher", str(onnx_disparity),
              "--label-cache", str(tmp_path / "cache")]
    refused = _cli(*common, "--out", str(tmp_path / "metric"))
    assert refused.returncode != 0
    assert "--camera-height" in refused.stderr and "--target relative" in refused.stderr
    assert len([ln for ln in refused.stderr.splitlines() if ln.strip()]) == 1, refused.stderr
    ok = _cli(*common, "--out", str(tmp_path / "rel"), "--target", "relative")
    assert ok.returncode == 0, ok.stderr
    assert "teacher-relative 8" in ok.stdout
    from edgedepth.checkpoint import checkpoint_info, load_checkpoint

    ckpt = load_checkpoint(tmp_path / "rel" / "last.pt")
    info = checkpoint_info(ckpt)
    assert ckpt["depth_units"] == "relative" and info.relative
    from edgedepth.modelmeta import ModelInfo

    assert ModelInfo.from_metadata_props(info.to_metadata_props()).depth_units == "relative"
    # the exported model says so, and the live loop refuses point clouds in metres from it
    bundle = tmp_path / "bundle"
    exp = _cli("export", str(tmp_path / "rel" / "last.pt"), "--out", str(bundle), "--frames", "2")
    assert exp.returncode == 0, exp.stderr
    from edgedepth.modelmeta import read_onnx_info

    assert read_onnx_info(str(bundle / "model.onnx")).relative
    run = _cli("run", str(bundle), "--input", str(src / "rgb"), "--headless", "--max-frames", "1",
               "--save-pointcloud", str(tmp_path / "pc"))
    assert run.returncode != 0 and "relative-depth model" in run.stderr
    assert not (tmp_path / "pc").exists()
    # relative labels cannot train a metric model, even given directly
    again = _cli("train", "--data", str(tmp_path / "rel" / "teacher-labels" / "0"), "--model", "tiny",
                 "--size", "32x64", "--epochs", "1", "--out", str(tmp_path / "x"), "--no-progress")
    assert again.returncode != 0 and "--target relative" in again.stderr


def test_eval_and_check_a_teacher_cli(tmp_path, onnx_disparity, hf_relative):
    data = write_scenes(tmp_path / "d", n=4, depth="dense")
    res = _cli("eval", "--teacher", str(onnx_disparity), "--data", str(data), "--label-cache",
               str(tmp_path / "c"))
    assert res.returncode == 0, res.stderr
    assert "aligned to each frame's ground truth" in res.stdout and "all" in res.stdout
    chk = _cli("teacher", "check", str(hf_relative), "--teacher-device", "cpu")
    assert chk.returncode == 0, chk.stderr
    assert "transformers" in chk.stdout and "disparity" in chk.stdout and "one frame" in chk.stdout


def test_scale_shift_invariant_loss_ignores_scale_and_shift():
    import torch

    from edgedepth.train.losses import ScaleShiftInvariantLoss

    torch.manual_seed(0)
    depth = torch.rand(2, 1, 16, 16) * 5 + 1
    target = 1.0 / (3.0 / depth + 0.2)  # label inverse depth = 3 x prediction's + 0.2
    unc = torch.zeros_like(depth)
    valid = torch.ones_like(depth, dtype=torch.bool)
    loss, parts = ScaleShiftInvariantLoss(grad_weight=0.0)(depth, unc, target, valid)
    assert parts["ssi"] < 1e-5
    _, worse = ScaleShiftInvariantLoss(grad_weight=0.0)(depth.flip(-1), unc, target, valid)
    assert worse["ssi"] > 0.05


def test_two_view_triangulation_aligns_a_relative_teacher(tmp_path):
    """A perfect relative teacher (disparity = 3/d + 0.7) aligned only by points triangulated from a posed
    neighbour frame: the labels come out metric."""
    import shutil

    from edgedepth.data.dataset import open_dataset
    from edgedepth.data.synth import write_synth_dataset
    from edgedepth.metrics import frame_metrics
    from edgedepth.teachers.base import Teacher
    from edgedepth.teachers.cache import frame_hash

    full = write_synth_dataset(tmp_path / "seq", "indoor", 8, 192, 256, 3, sequence=True, progress=False)
    ds = open_dataset(str(full))
    truth = {frame_hash(ds[i].rgb): ds[i].depth for i in range(len(ds))}

    class Oracle(Teacher):
        kind, backend, source = "disparity", "test", "oracle"

        def identity_parts(self):
            return {}

        def _predict(self, images):
            return [3.0 / np.maximum(truth[frame_hash(im)], 1e-3) + 0.7 for im in images]

    src = tmp_path / "rgb-only"
    shutil.copytree(full / "rgb", src / "rgb")
    shutil.copy(full / "meta.json", src / "meta.json")
    labeler = TeacherLabeler(Oracle(), LabelPolicy(two_view=True, two_view_gap=5))
    rep = label_folder(labeler, src, tmp_path / "labels")
    aligned = rep.counts.get("teacher-aligned", 0)
    assert aligned >= 5 and rep.sources == {"two-view": aligned}  # the rest: too few good matches
    labels = open_dataset(str(tmp_path / "labels"))
    gt = {ds[i].name: ds[i].depth for i in range(len(ds))}
    abs_rel = [frame_metrics(labels[i].depth, gt[labels[i].name])["abs_rel"] for i in range(len(labels))]
    assert float(np.median(abs_rel)) < 0.2
