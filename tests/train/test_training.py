"""A tiny training run: loss goes down, checkpoints round-trip, resume continues, runs are reproducible."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgedepth.checkpoint import load_checkpoint, model_from_checkpoint
from edgedepth.errors import ConfigError, DataError
from edgedepth.sizes import parse_network_size as parse_size
from edgedepth.train.config import TrainConfig
from edgedepth.train.loop import CosineSchedule, train
from edgedepth.train.torchdata import dataset_lineage, load_frames


def tiny_config(tmp_path, data, val, out="run", **kw):
    base = dict(data=[str(data)], val=[str(val)], out=str(tmp_path / out), model="tiny", size=(64, 96),
                epochs=2, batch_size=8, lr=3e-3, progress=False, workers=1, threads=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def small_data(folder_dataset):
    return folder_dataset("train", n=24, h=72, w=96, seed=1), folder_dataset("val", n=6, h=72, w=96, seed=2)


def test_training_lowers_the_loss_and_writes_the_run(tmp_path, small_data):
    data, val = small_data
    res = train(tiny_config(tmp_path, data, val, epochs=8))
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5, losses
    assert res.history[-1]["val_abs_rel"] < res.history[0]["val_abs_rel"]
    for name in ("best.pt", "last.pt", "curves.png", "run.json"):
        assert (res.out_dir / name).is_file(), name
    summary = json.loads((res.out_dir / "run.json").read_text())
    assert summary["epochs_completed"] == 8 and summary["stop_reason"] == "epochs"
    assert res.best_metrics["abs_rel"] == min(h["val_abs_rel"] for h in res.history)


def test_checkpoint_round_trip_and_contents(tmp_path, small_data):
    data, val = small_data
    res = train(tiny_config(tmp_path, data, val, epochs=1))
    model, ckpt = model_from_checkpoint(res.best_checkpoint)
    for key in ("model_config", "preprocessing", "metrics", "lineage", "seed", "epoch", "optimizer",
                "scheduler", "code_version", "history", "train_config"):
        assert key in ckpt, key
    assert ckpt["seed"] == 3 and ckpt["epoch"] == 0
    assert ckpt["preprocessing"]["height"] == 64 and ckpt["model_config"]["size"] == "tiny"
    assert ckpt["lineage"]["train"][0]["sha256"] == dataset_lineage(str(data))["sha256"]
    assert ckpt["lineage"]["train"][0]["method"] == "content-sha256"
    assert ckpt["metrics"]["abs_rel"] == pytest.approx(res.best_metrics["abs_rel"])
    x = torch.randn(2, 3, 64, 96)
    again, _ = model_from_checkpoint(res.best_checkpoint)
    with torch.no_grad():
        assert torch.equal(model(x)[0], again(x)[0])


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(tmp_path, small_data):
    data, val = small_data
    full = train(tiny_config(tmp_path, data, val, out="full", epochs=2))
    train(tiny_config(tmp_path, data, val, out="split", epochs=1))
    # the schedule of a 1-epoch run differs, so resume a 2-epoch run stopped after its first epoch
    part = tiny_config(tmp_path, data, val, out="split2", epochs=2)
    first = train(tiny_config(tmp_path, data, val, out="split2", epochs=1))
    assert first.epochs_completed == 1
    ck = load_checkpoint(first.last_checkpoint)
    assert ck["epoch"] == 0
    part.resume = True
    resumed = train(part)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert load_checkpoint(resumed.last_checkpoint)["epoch"] == 1
    assert resumed.steps == full.steps
    # nothing left to do: a second resume is a no-op
    again = train(part)
    assert again.stop_reason == "already complete" and again.steps == resumed.steps


def test_same_seed_same_weights_on_cpu(tmp_path, small_data):
    data, val = small_data
    a = train(tiny_config(tmp_path, data, val, out="a", epochs=1))
    b = train(tiny_config(tmp_path, data, val, out="b", epochs=1))
    sa = load_checkpoint(a.last_checkpoint)["state_dict"]
    sb = load_checkpoint(b.last_checkpoint)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ema_checkpoints_hold_the_average_and_resume_continues_it(tmp_path, small_data):
    data, val = small_data
    full = train(tiny_config(tmp_path, data, val, out="ema", epochs=2, ema_decay=0.9))
    ck = load_checkpoint(full.last_checkpoint)
    avg, raw = ck["state_dict"], ck["train_state_dict"]
    assert ck["ema"] == {"decay": 0.9, "updates": full.steps}
    assert any(not torch.equal(avg[k], raw[k]) for k in avg if avg[k].is_floating_point())
    # the trained weights are those of a run without EMA: averaging does not change training
    plain = load_checkpoint(train(tiny_config(tmp_path, data, val, out="plain", epochs=2)).last_checkpoint)
    assert all(torch.equal(plain["state_dict"][k], raw[k]) for k in raw)
    model, _ = model_from_checkpoint(full.last_checkpoint)  # what export/predict load is the average
    assert all(torch.equal(model.state_dict()[k], avg[k]) for k in avg)
    # a resumed run trains from the trained weights and continues the saved average (not a fresh one)
    first = load_checkpoint(train(tiny_config(tmp_path, data, val, out="ema2", epochs=1,
                                              ema_decay=0.9)).last_checkpoint)
    resumed = train(tiny_config(tmp_path, data, val, out="ema2", epochs=2, ema_decay=0.9, resume=True))
    again = load_checkpoint(resumed.last_checkpoint)
    assert again["ema"]["updates"] == resumed.steps == first["ema"]["updates"] + resumed.steps // 2
    assert any(not torch.equal(again["state_dict"][k], again["train_state_dict"][k]) for k in avg
               if avg[k].is_floating_point())
    with pytest.raises(ConfigError, match="--ema"):
        tiny_config(tmp_path, data, val, ema_decay=1.0).validate()


def test_init_from_keeps_the_checkpoint_config_and_minutes_budget_stops(tmp_path, small_data):
    data, val = small_data
    base = train(tiny_config(tmp_path, data, val, out="base", epochs=1))
    ticks = iter(range(10**6))
    clock = lambda: 0.25 * next(ticks)  # noqa: E731 - simulated seconds: each reading is 0.25 s later
    tuned = train(tiny_config(tmp_path, data, val, out="tuned", epochs=None, minutes=0.1, size=(32, 32),
                              model="small", init_from=str(base.best_checkpoint)), clock=clock)
    ck = load_checkpoint(tuned.last_checkpoint)
    assert ck["model_config"]["size"] == "tiny" and ck["preprocessing"]["width"] == 96
    assert ck["lineage"]["init_from"]["sha256"]
    # the 6 s budget, less its reserve for the final validation, ends training on the simulated clock
    assert tuned.stop_reason == "budget" and tuned.steps >= 1 and tuned.elapsed_s <= 6.0


def test_bad_configs_fail_clearly(tmp_path, small_data):
    data, val = small_data
    with pytest.raises(DataError, match="does not exist"):
        tiny_config(tmp_path, tmp_path / "nope", val).validate()
    with pytest.raises(ConfigError, match="exactly one"):
        tiny_config(tmp_path, data, val, minutes=1.0).validate()
    with pytest.raises(ConfigError, match="multiples of 32"):
        parse_size("100x128")
    with pytest.raises(ConfigError, match="--resume"):
        tiny_config(tmp_path, data, val, out="fresh", resume=True).validate()


def test_in_memory_frames_keep_metric_depth(tmp_path, folder_dataset):
    d = folder_dataset("mm", n=3, h=70, w=90, png_depth=True)
    f = load_frames(str(d), 64, 96, workers=2)
    assert f.rgb.shape == (3, 64, 96, 3) and f.depth.shape == (3, 64, 96)
    vals = f.depth[f.depth > 0]
    assert vals.min() >= 0.5 and vals.max() <= 9.0  # nearest resize keeps real (mm-rounded) values
    assert np.allclose(vals * 1000, np.round(vals * 1000), atol=1e-2)
    assert set(f.domains) == {"indoor"}


def test_cosine_schedule_shape():
    s = CosineSchedule(1.0, warmup=0.1, final_fraction=0.0)
    assert s.lr_at(0.05) == pytest.approx(0.5)
    assert s.lr_at(0.1) == pytest.approx(1.0)
    assert s.lr_at(0.55) == pytest.approx(0.5)
    assert s.lr_at(1.0) == pytest.approx(0.0, abs=1e-9)
