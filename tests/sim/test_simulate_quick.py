"""The simulation's plumbing end to end in --quick mode: real loop, daemon, ingest server, rounds, gate,
registry, device updates (the figures of a quick run mean nothing; the structure and counts do)."""

from __future__ import annotations

import json

import pytest

from edgedepth.errors import ConfigError
from edgedepth.sim.config import SimConfig, quick_config


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from edgedepth.sim.simulate import run_simulation

    work = tmp_path_factory.mktemp("sim")
    cfg = quick_config(workdir=str(work), progress=False)
    lines = []
    result = run_simulation(cfg, say=lines.append)
    return cfg, result, lines


def test_every_strategy_ran_a_round_through_the_whole_pipeline(sim):
    cfg, result, _ = sim
    assert set(result["runs"]) == {"hard", "random", "duplicate"}
    for strategy, per_seed in result["runs"].items():
        (rec,) = per_seed["0"]  # one seed, one round
        budget = cfg.budget_per_device * cfg.devices
        assert 0 < rec["uploaded"] <= budget, strategy
        assert sum(d["frames"] for d in rec["devices"]) == cfg.devices * cfg.frames_per_device
        assert rec["build"]["ingested"] == rec["uploaded"]  # the round read exactly this round's uploads
        # bytes on the wire, for the data-efficiency report (edgedepth.sim.sweep): each item is an RGB
        # image plus a 16-bit depth PNG of at least one byte per pixel
        assert rec["upload_bytes"] >= rec["uploaded"] * cfg.size[0] * cfg.size[1], strategy
        assert rec["build"]["train"] >= 1 and rec["train"]["steps"] >= 1
        assert {c["metric"] for s in rec["gate"]["sets"] for c in s["checks"]} == {"abs_rel", "d1"}
        for group in ("shifted", "original"):
            assert 0 < rec["candidate_metrics"][group]["abs_rel"] < 5
        if rec["promoted"]:
            assert rec["version"] == "2" and rec["deployed_metrics"] == rec["candidate_metrics"]
        else:
            assert rec["deployed_metrics"] == result["base"]


def test_duplicate_uploads_are_copies_of_training_data(sim):
    _, result, _ = sim
    rec = result["runs"]["duplicate"]["0"][0]
    assert rec["build"]["domains"] == {"indoor": rec["build"]["train"] + rec["build"]["val"]}
    assert all(d["selected"] == 0 for d in rec["devices"])  # the loop selected nothing itself
    hard = result["runs"]["hard"]["0"][0]
    assert sum(hard["selected_domains"].values()) == sum(d["selected"] for d in hard["devices"])


def test_round_folder_store_registry_and_device_updates(sim):
    cfg, result, _ = sim
    from pathlib import Path

    from edgedepth.fleet.store import open_store

    root = Path(cfg.workdir) / "runs" / "seed0" / "hard"
    lineage = json.loads((root / "rounds" / "1" / "lineage.json").read_text())
    assert lineage["format"] == "edgedepth.round/1"
    store = open_store(str(root / "store"))
    try:
        items = list(store.iter_items())
    finally:
        store.close()
    rec = result["runs"]["hard"]["0"][0]
    assert len(items) == rec["uploaded"]
    assert all(it["selection"] == "hard" and it["labels"] == ["depth_gt"] for it in items)
    index = json.loads((root / "registry" / "index.json").read_text())
    promoted = [v["version"] for v in index["versions"] if v["promoted"]]
    assert promoted[0] == "1"
    for dev in result["final_update"]["hard"]["0"]:
        if rec["promoted"]:
            assert dev["version"] == "2" and dev["swap"]["healthy"] is True
        else:
            assert dev["version"] == "1"


def test_table_plot_and_json(sim):
    cfg, result, lines = sim
    from pathlib import Path

    from edgedepth.sim.report import acceptance, table

    text = table(result)
    for strategy in ("hard", "random", "duplicate"):
        assert f"\n{strategy}" in text
    assert "shifted AbsRel" in text and "±" in text
    names = [c[0] for c in acceptance(result)]
    assert any("hard vs random" in n for n in names) and any("duplicate" in n for n in names)
    png = Path(result["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((Path(cfg.workdir) / "simulation.json").read_text())
    assert saved["runs"].keys() == result["runs"].keys()
    assert any("round-0 model" in ln for ln in lines)


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown strategies"):
        SimConfig(strategies=["clever"]).validate()
    with pytest.raises(ConfigError, match="budget"):
        SimConfig(budget_per_device=0).validate()
    with pytest.raises(ConfigError, match="original domain"):
        SimConfig(mix={"night": 1.0}).validate()
    assert SimConfig(frames_per_device=1000).validate().rate == 20 / 1000


def test_every_candidate_is_a_gate_aware_wise_ft_merge(sim):
    cfg, result, _ = sim
    from pathlib import Path

    import torch

    from edgedepth.checkpoint import load_checkpoint
    from edgedepth.train.regularize import interpolate_state

    assert cfg.merge == "wise" and cfg.merge_frames > 0
    for strategy, per_seed in result["runs"].items():
        rec = per_seed["0"][0]
        merge = rec["train"]["merge"]
        alphas = [p["alpha"] for p in merge["points"]]
        assert alphas[0] == 0.0 and alphas[-1] == 1.0, strategy
        assert merge["alpha"] == max([p["alpha"] for p in merge["points"] if p["ok"]], default=0.0)
        assert next(p for p in merge["points"] if p["alpha"] == 0.0)["abs_rel"] <= merge["limit_abs_rel"]
        merged = load_checkpoint(merge["checkpoint"])
        assert merged["lineage"]["merge"]["alpha"] == merge["alpha"]
        assert "merge" in Path(merge["checkpoint"]).name
        # the gate judged the merged weights: theta0 + alpha (theta_ft - theta0)
        root = Path(cfg.workdir) / "runs" / "seed0" / strategy / "train" / "1"
        ft = load_checkpoint(root / "last.pt")["state_dict"]
        base = load_checkpoint(Path(result["assets"]) / "base" / "best.pt")["state_dict"]
        expected = interpolate_state(base, ft, merge["alpha"])
        assert all(torch.allclose(merged["state_dict"][k], expected[k]) for k in expected)
        assert rec["gate"]["candidate"] == merge["checkpoint"]


def test_merge_config_validation():
    with pytest.raises(ConfigError, match="merge"):
        SimConfig(merge="average").validate()
    with pytest.raises(ConfigError, match="merge"):
        SimConfig(merge_frames=-1).validate()


def test_rounds_train_on_all_original_frames_with_a_fixed_new_share(sim):
    cfg, result, _ = sim
    from pathlib import Path

    assert cfg.new_share == 0.25
    for strategy, per_seed in result["runs"].items():
        rec = per_seed["0"][0]
        assert rec["build"]["replay"] == 0, strategy  # rounds/0 is replayed whole instead of sampled
        data, shares = rec["train"]["data"], rec["train"]["data_shares"]
        assert Path(data[0]).name == "train0" and shares[0] == pytest.approx(0.75)
        assert sum(shares) == pytest.approx(1.0) and len(data) == len(shares)
        if rec["build"]["train"] > 0:
            assert Path(data[-1]).name == "1"


def test_new_share_data_skips_empty_rounds(tmp_path):
    import numpy as np

    from edgedepth.data.formats import write_sample
    from edgedepth.rounds.finetune import new_share_data

    def write_folder(root, n):
        for i in range(n):
            write_sample(root, f"f{i}", np.full((32, 64, 3), 100, np.uint8),
                         np.full((32, 64), 2.0, np.float32))
        return root

    r0 = write_folder(tmp_path / "r0", n=8)
    r1 = write_folder(tmp_path / "r1", n=3)
    r2 = tmp_path / "r2"
    r2.mkdir()  # a round whose frames all went to val: no train folder
    r3 = write_folder(tmp_path / "r3", n=1)
    data, shares = new_share_data([r0, r1, r2, r3], 0.4)
    assert data == [r0, r1, r3] and shares == pytest.approx([0.6, 0.3, 0.1])
    assert new_share_data([r0, r2], 0.4) == ([r0], [1.0])


def test_gate_target_set_grows_with_the_rounds(tmp_path):
    from edgedepth.rounds.finetune import gate_target_set

    rounds = [tmp_path / "1", tmp_path / "2", tmp_path / "3"]
    for r in rounds[:2]:
        (r / "val" / "rgb").mkdir(parents=True)
    rounds[2].mkdir()  # a round whose frames all went to train: no val split
    assert gate_target_set(rounds[:1], rounds[0], True) == str(rounds[0] / "val")
    assert gate_target_set(rounds[:2], rounds[1], True) == [str(rounds[0] / "val"), str(rounds[1] / "val")]
    assert gate_target_set(rounds[:2], rounds[1], False) == str(rounds[1] / "val")
    assert gate_target_set(rounds, rounds[2], True) == [str(rounds[0] / "val"), str(rounds[1] / "val")]
    assert gate_target_set(rounds[2:], rounds[2], True) == str(rounds[2])  # nothing held out: its own data
