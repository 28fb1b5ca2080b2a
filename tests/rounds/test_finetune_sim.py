"""`edgedepth round train` on the fleet simulation's own data reproduces the simulation's round: same
recipe, same training data and shares, same candidate, same gate figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgedepth.cli.main import cli
from edgedepth.sim.config import quick_config


def _checks(gate: dict):
    return [(s["name"], c["metric"], round(c["baseline"], 6), round(c["candidate"], 6))
            for s in gate["sets"] for c in s["checks"]]


def test_round_train_reproduces_the_simulations_round(tmp_path):
    from edgedepth.sim.fleet import derive_seed
    from edgedepth.sim.simulate import run_simulation

    cfg = quick_config(workdir=str(tmp_path / "sim"), strategies=["random"], progress=False)
    result = run_simulation(cfg, say=lambda _s: None)
    (rec,) = result["runs"]["random"]["0"]
    shared = Path(result["assets"])
    data_dir = next((tmp_path / "sim" / "shared").glob("data-*"))
    round_dir = tmp_path / "sim" / "runs" / "seed0" / "random" / "rounds" / "1"
    out = tmp_path / "round-train"
    res = CliRunner().invoke(cli, [
        "round", "train", str(round_dir), "--from", str(shared / "base" / "best.pt"), "--out", str(out),
        "--steps", str(cfg.finetune_steps), "--batch-size", str(cfg.batch_size),
        "--merge-set", str(data_dir / f"merge{cfg.merge_frames}"),
        "--seed", str(derive_seed(0, 1, 13) % 100000), "--threads", "1", "--workers", "1", "--no-progress"],
        catch_exceptions=False)
    print(res.output)
    assert res.exit_code in (0, 2), res.output
    record = json.loads((out / "round.json").read_text())
    assert [Path(d).resolve() for d in record["data"]] == [Path(d).resolve() for d in rec["train"]["data"]]
    assert record["data_shares"] == pytest.approx(rec["train"]["data_shares"])
    assert record["train"]["steps"] == rec["train"]["steps"]
    assert record["merge"]["alpha"] == rec["train"]["merge"]["alpha"]
    assert _checks(record["gate"]) == _checks(rec["gate"])
    assert record["gate"]["verdict"] == ("promote" if rec["promoted"] else "refuse")
