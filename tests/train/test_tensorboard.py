"""`edgedepth train --tensorboard DIR`: event files read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgedepth.train.tensorboard import domain_breakdown, scalars_of

pytest.importorskip("tensorboard")


def read_events(run_dir: Path) -> dict:
    """{tag: [(step, value)]} of one TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_of_a_history_row_maps_tags_and_domains():
    row = {"epoch": 3, "step": 40, "lr": 0.001, "train_loss": 0.5, "train_grad": 0.1, "val_abs_rel": 0.2,
           "val_frame_spearman": 0.6, "val_abs_rel@night": 0.3, "val_frame_spearman@night": 0.4,
           "val_frames": 8, "partial": False, "epoch_s": 2.0}
    runs = scalars_of(row)
    assert runs[""] == {"train/lr": 0.001, "loss/train": 0.5, "loss/grad": 0.1, "val/abs_rel": 0.2,
                        "uncertainty/spearman_frame": 0.6, "time/epoch_s": 2.0}
    assert runs["domain_night"] == {"val/abs_rel": 0.3, "uncertainty/spearman_frame": 0.4}


def test_domain_breakdown_needs_two_domains():
    rows = [{"abs_rel": a, "sq_rel": 0, "rmse": 0, "rmse_log": 0, "d1": 1, "d2": 1, "d3": 1}
            for a in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)]
    assert domain_breakdown(rows, ["a"] * 6, [0.0] * 6) == {}
    out = domain_breakdown(rows, ["a", "a", "a", "b", "b", "b"], [1, 2, 3, 3, 2, 1])
    assert out["abs_rel@a"] == pytest.approx(0.2) and out["abs_rel@b"] == pytest.approx(0.5)
    assert out["frame_spearman@a"] == pytest.approx(1.0) and out["frame_spearman@b"] == pytest.approx(-1.0)


def test_train_writes_tensorboard_events(tmp_path, folder_dataset):
    data = folder_dataset("train", n=16, h=48, w=64, seed=1)
    val_in = folder_dataset("val_indoor", n=6, h=48, w=64, seed=2, domain="indoor")
    val_night = folder_dataset("val_night", n=6, h=48, w=64, seed=3, domain="night")
    tb = tmp_path / "tb"
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "edgedepth", "train", "--data", str(data), "--val", f"{val_in},{val_night}",
         "--model", "tiny", "--size", "64x64", "--epochs", "2", "--batch-size", "8", "--workers", "1",
         "--out", str(out), "--tensorboard", str(tb), "--no-progress"],
        capture_output=True, text=True, timeout=280,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "curves.png").is_file()  # the PNG is still written
    overall = read_events(tb)
    import json

    history = json.loads((out / "run.json").read_text())
    assert {"loss/train", "train/lr", "val/abs_rel", "val/d1", "val/rmse", "uncertainty/spearman_frame",
            "uncertainty/mean"} <= set(overall)
    assert [s for s, _ in overall["val/abs_rel"]] == [0, 1]  # one point per epoch
    last = history["last_metrics"]
    assert overall["val/abs_rel"][-1][1] == pytest.approx(last["abs_rel"], rel=1e-5)
    assert overall["uncertainty/spearman_frame"][-1][1] == pytest.approx(last["frame_spearman"], rel=1e-5)
    for domain in ("indoor", "night"):
        per = read_events(tb / f"domain_{domain}")
        assert {"val/abs_rel", "val/d1", "uncertainty/spearman_frame"} <= set(per)
        assert [s for s, _ in per["val/abs_rel"]] == [0, 1]
        assert per["val/abs_rel"][-1][1] == pytest.approx(last[f"abs_rel@{domain}"], rel=1e-5)
    night, indoor = read_events(tb / "domain_night"), read_events(tb / "domain_indoor")
    assert night["val/abs_rel"][-1][1] != indoor["val/abs_rel"][-1][1]
