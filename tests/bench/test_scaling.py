"""Scaling study: crossover arithmetic, the compute rule, and the whole plumbing with a fake trainer."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest

from edgedepth.bench.classical_eval import SeqFrame
from edgedepth.bench.scaling import (
    StudyConfig,
    StudyData,
    TrainedModel,
    compute_plan,
    crossover,
    format_summary,
    run_study,
    target_steps,
)
from edgedepth.errors import ConfigError


def test_crossover_interpolates_in_log2():
    c = crossover([32, 64, 128, 256], [0.5, 0.6, 0.8, 0.9], 0.7, "d1")
    assert c.kind == "interpolated" and c.frames == pytest.approx(2 ** 6.5)
    c = crossover([32, 64, 128], [0.30, 0.20, 0.10], 0.25, "abs_rel")  # lower is better
    assert c.frames == pytest.approx(2 ** 5.5)
    c = crossover([32, 64, 128], [0.30, 0.20, 0.10], 0.175, "abs_rel")
    assert c.frames == pytest.approx(2 ** 6.25)
    # Unsorted input, and a lucky early point: the crossing is where it *stays* better.
    c = crossover([128, 32, 256, 64], [0.8, 0.8, 0.9, 0.6], 0.7, "d1")
    assert c.frames == pytest.approx(2 ** 6.5)


def test_crossover_never_and_always():
    c = crossover([32, 64, 4096], [0.3, 0.5, 0.69], 0.7, "d1")
    assert c.frames is None and c.kind == "never"
    assert "0.6900" in c.note and "4096" in c.note and "0.7000" in c.note
    c = crossover([32, 64], [0.9, 0.95], 0.7, "d1")
    assert c.kind == "at_or_below_smallest" and c.frames == 32
    c = crossover([32, 64], [0.5, 0.7], 0.7, "d1")  # equal is not better
    assert c.kind == "never"
    assert crossover([32, 64], [0.5, 0.7], float("nan"), "d1").kind == "no_baseline"
    with pytest.raises(ConfigError):
        crossover([32], [0.1], 0.2, "accuracy")
    with pytest.raises(ConfigError):
        crossover([32, 64], [0.1], 0.2, "d1")


def test_compute_rule_gives_the_same_steps_at_every_size():
    steps = {n: compute_plan(n, 256, 16, 4) for n in (2 ** k for k in range(5, 13))}
    assert {s for _, _, s in steps.values()} == {256}
    assert steps[32] == (32, 4, 256) and steps[4096] == (1, 1, 256)
    repeat, epochs, s = compute_plan(100, 256, 16, 4)
    assert abs(s - 256) / 256 < 0.1
    assert compute_plan(3, 10, 16, 1)[2] >= 1  # batch larger than the set: still trains
    with pytest.raises(ConfigError):
        compute_plan(0, 256, 16, 4)


def test_proportional_rule_grows_with_the_set_and_is_capped(tmp_path):
    cfg = StudyConfig(out_dir=str(tmp_path), rule="proportional", steps=256, epochs=4, max_steps=1024)
    plan = {n: compute_plan(n, target_steps(cfg, n), 16, 4)[2] for n in (32, 1024, 2048, 4096, 8192)}
    assert plan == {32: 256, 1024: 256, 2048: 512, 4096: 1024, 8192: 1024}
    assert target_steps(StudyConfig(out_dir=str(tmp_path)), 4096) == 256  # "fixed" is the default
    with pytest.raises(ConfigError):
        StudyConfig(out_dir=str(tmp_path), rule="more").validate()


def _plane_sequence(n: int, Z: float = 3.0, f: float = 100.0, shift_px: int = 4, seed: int = 0):
    """A textured wall at depth Z seen by a camera sliding sideways: frame i is the texture shifted by
    i * shift_px pixels, which is exactly a move of shift_px * Z / f metres (pinhole, fronto-parallel)."""
    H, W = 64, 96
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((H, W + n * shift_px)).astype(np.float32), (0, 0), 1.2)
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    frames = []
    for i in range(n):
        crop = tex[:, i * shift_px:i * shift_px + W]
        pose = np.eye(4)
        pose[0, 3] = i * shift_px * Z / f
        depth = np.full((H, W), Z, np.float32)
        frames.append(SeqFrame(np.dstack([crop] * 3), depth, pose, K, f"p{i}", "wall"))
    return frames


def test_study_plumbing_with_a_fake_trainer(tmp_path, monkeypatch):
    test = _plane_sequence(6)
    sizes = [2 ** k for k in range(3, 13)]
    jobs = []

    def fake_trainer(job):
        jobs.append(job)
        value = 3.0 * (1 + 2.0 / job.frames)  # a learned model that improves with data: AbsRel = 2 / n
        steps = job.epochs * (job.repeat * job.frames // job.batch_size)
        return TrainedModel(lambda images: [np.full(im.shape[:2], value, np.float32) for im in images],
                            steps=steps, train_seconds=0.01)

    cfg = StudyConfig(out_dir=str(tmp_path / "study"), sizes=sizes, seeds=[0, 1], steps=8,
                      batch_size=4, epochs=2, test_frames=6, test_sequences=1, gap=1, max_depth=10.0)
    run_study(cfg, trainer=fake_trainer, data=StudyData(lambda n: "unused", "unused", test))
    out = tmp_path / "study"
    assert (out / "scaling.png").stat().st_size > 5000
    assert len(jobs) == 2 * len(sizes) and sorted({j.frames for j in jobs}) == sizes
    # The same budget (8 steps of 4) wherever it is at least one epoch; one epoch beyond that.
    assert all(j.epochs * (j.repeat * j.frames // j.batch_size) == max(8, j.frames // 4) for j in jobs)
    rows = list(csv.DictReader(open(out / "scaling.csv")))
    assert len(rows) == 2 * len(sizes) + 1 and rows[-1]["method"] == "classical"
    saved = json.loads((out / "scaling.json").read_text())
    classical = saved["classical"]["filled"]["abs_rel"]
    assert saved["classical"]["pairs_ok"] == 6 and 0 < classical < 0.05  # a textured wall: easy for it
    assert [s["abs_rel"] for s in saved["summary"]] == pytest.approx([2 / n for n in sizes], rel=1e-4)
    # Expected crossing of 2/n with the classical line, linear in log2(n) between the bracketing sizes.
    hi = min(n for n in sizes if 2 / n < classical)
    lo = hi // 2
    x = math.log2(lo) + (classical - 2 / lo) / (2 / hi - 2 / lo)
    cx = saved["crossover"]["abs_rel"]
    assert cx["kind"] == "interpolated" and cx["frames"] == pytest.approx(2 ** x, rel=1e-3)
    assert "crossover" in format_summary(saved)
    # The slope: AbsRel = 2 / n falls with the data, so the fitted line reaches the classical level.
    fit = saved["fit"]["abs_rel"]
    assert fit["per_doubling"] < 0 and fit["crossing_frames"] > 0 and len(fit["fit_frames"]) == len(sizes)
    assert "log-linear fit" in format_summary(saved)
    from edgedepth.bench.scaling_fit import study_record

    rec = json.loads(study_record(saved, tmp_path / "results").read_text())
    expected = "scaling_proportional" if saved["config"]["rule"] == "proportional" else "scaling_study"
    assert rec["schema"] == "edgedepth.result/1" and rec["name"] == expected and rec["data"]["summary"]
    assert all(rec[k] for k in ("command", "commit", "date", "machine")) and len(rec["figures"]) > len(sizes)
    # A second call resumes from the finished runs instead of training again, and from the classical
    # baseline's saved report and masks instead of evaluating it again.
    import edgedepth.bench.classical_eval as classical_eval

    def no_second_evaluation(*a, **k):
        raise AssertionError("the classical baseline was evaluated again")

    monkeypatch.setattr(classical_eval, "evaluate_classical", no_second_evaluation)
    again = run_study(cfg, trainer=fake_trainer, data=StudyData(lambda n: "unused", "unused", test))
    assert len(jobs) == 2 * len(sizes)
    assert again["summary_on_classical_pixels"] == saved["summary_on_classical_pixels"]
    # ... but not from runs made under other settings.
    cfg.sizes, cfg.steps = [8, 16], 16
    run_study(cfg, trainer=fake_trainer, data=StudyData(lambda n: "unused", "unused", test))
    assert len(jobs) == 2 * len(sizes) + 4


def test_a_run_another_process_is_training_is_left_to_it(tmp_path):
    from edgedepth.fsutil import try_lock

    test = _plane_sequence(6)
    trained = []

    def fake_trainer(job):
        trained.append((job.frames, job.seed))
        return TrainedModel(lambda images: [np.full(im.shape[:2], 3.0, np.float32) for im in images],
                            steps=1, train_seconds=0.01)

    cfg = StudyConfig(out_dir=str(tmp_path), sizes=[8, 16], seeds=[0], steps=2, batch_size=4, epochs=1,
                      test_frames=6, test_sequences=1, gap=1, max_depth=10.0)
    busy = tmp_path / "runs" / "n00016_s0"
    busy.mkdir(parents=True)
    said = []
    with try_lock(busy / ".lock") as mine:
        assert mine
        result = run_study(cfg, trainer=fake_trainer, data=StudyData(lambda n: "unused", "unused", test),
                           progress=said.append)
    assert trained == [(8, 0)] and [r["frames"] for r in result["runs"]] == [8]
    assert any("another process" in m for m in said)
    run_study(cfg, trainer=fake_trainer, data=StudyData(lambda n: "unused", "unused", test))
    assert trained == [(8, 0), (16, 0)]  # once free, it is trained; the finished one is reused
