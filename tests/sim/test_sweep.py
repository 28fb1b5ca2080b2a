"""The upload-budget sweep: which points it runs or reuses, and the arithmetic of its report."""

from __future__ import annotations

import json
import math

import pytest

from edgedepth.errors import ConfigError
from edgedepth.sim import sweep
from edgedepth.sim.config import SimConfig


def _point(budget: int, seed: int, cfg: SimConfig, uploaded: dict, shifted: dict) -> dict:
    base = {"shifted": {"abs_rel": 0.5, "d1": 0.5}, "original": {"abs_rel": 0.2, "d1": 0.7}}
    runs = {}
    for strategy in cfg.strategies:
        m = {"shifted": {"abs_rel": shifted[strategy], "d1": 0.6}, "original": {"abs_rel": 0.19, "d1": 0.7}}
        n = uploaded[strategy]
        runs[strategy] = {str(seed): [{"uploaded": n, "upload_bytes": 1000 * n, "promoted": True,
                                       "deployed_metrics": m}]}
    config = dict(cfg.to_dict(), budget_per_device=budget, seeds=[seed])
    return {"config": config, "base": base, "runs": runs, "plot": "x.png"}


def test_uploads_to_match_interpolates_in_log2_and_says_when_it_cannot():
    m = sweep.uploads_to_match([16, 32, 64], [0.40, 0.30, 0.20], 0.25)
    assert m["kind"] == "interpolated" and m["frames"] == pytest.approx(2 ** 5.5)
    assert sweep.uploads_to_match([64, 16, 32], [0.20, 0.40, 0.30], 0.25)["frames"] == pytest.approx(2 ** 5.5)
    first = sweep.uploads_to_match([16, 32], [0.2, 0.1], 0.25)
    assert first == {"frames": 16.0, "kind": "at_or_below_smallest"}
    assert sweep.uploads_to_match([16, 32], [0.4, 0.3], 0.25) == {"frames": None, "kind": "never"}


def test_report_rows_summary_and_the_ratio_against_random():
    cfg = SimConfig(strategies=["hard", "random"])
    points = []
    for seed in (9, 10):  # hard: 0.40 -> 0.30 at budgets 5 -> 10; random reaches 0.35 at budget 10
        points.append(_point(5, seed, cfg, {"hard": 16, "random": 20}, {"hard": 0.40, "random": 0.45}))
        points.append(_point(10, seed, cfg, {"hard": 32, "random": 40}, {"hard": 0.30, "random": 0.35}))
    rows = sweep.point_rows(points)
    assert len(rows) == 8 and rows[0]["bytes"] == 16000
    summary = sweep.summarise(rows)
    hard10 = next(s for s in summary if s["strategy"] == "hard" and s["budget"] == 10)
    assert hard10["seeds"] == [9, 10] and hard10["shifted_abs_rel_sd"] == 0.0
    assert hard10["bytes_per_point"] == pytest.approx(32000 / 20)  # 0.50 -> 0.30: 20 points of 0.01
    match = sweep.match_random(summary)
    assert match["random_uploaded"] == 40 and match["kind"] == "interpolated"
    assert match["hard_frames"] == pytest.approx(2 ** 4.5) and match["ratio"] == pytest.approx(2 ** 4.5 / 40)
    assert "0.57x random's uploads" in match["note"]
    assert "hard" in sweep.format_table(summary)
    no_gain = sweep.summarise([dict(rows[0], shifted_abs_rel=0.6)])
    assert math.isnan(no_gain[0]["bytes_per_point"]) and "no gain" in sweep.format_table(no_gain)


def test_sweep_runs_each_point_once_and_resumes(tmp_path, monkeypatch):
    calls = []

    def fake_run(cfg, say=print):
        calls.append((cfg.budget_per_device, tuple(cfg.seeds), cfg.workdir))
        assert (tmp_path / "points" / f"b{cfg.budget_per_device:03d}-s{cfg.seeds[0]}" / "shared").resolve() \
            == (tmp_path / "shared").resolve()  # every point shares the round-0 model
        result = _point(cfg.budget_per_device, cfg.seeds[0], cfg, {"hard": 4, "random": 8},
                        {"hard": 0.3, "random": 0.4})
        (tmp_path / cfg.workdir / "simulation.json").write_text(json.dumps(result))
        return result

    import edgedepth.sim.simulate as simulate

    monkeypatch.setattr(simulate, "run_simulation", fake_run)
    base = SimConfig(workdir=str(tmp_path), strategies=["hard", "random"], progress=False)
    out = sweep.run_sweep(base, [5, 10], [9, 10], say=lambda m: None)
    assert [c[:2] for c in calls] == [(5, (9,)), (10, (9,)), (5, (10,)), (10, (10,))]  # seed-major
    assert len(out) == 4
    sweep.run_sweep(base, [5, 10, 20], [9, 10], say=lambda m: None)  # only the new budget runs
    assert [c[:2] for c in calls[4:]] == [(20, (9,)), (20, (10,))]
    assert len(sweep.collect_points(tmp_path, base)) == 6
    other = SimConfig(workdir=str(tmp_path), strategies=["hard", "random"], finetune_steps=5)
    assert sweep.collect_points(tmp_path, other) == []  # another recipe's points are not mixed in
    with pytest.raises(ConfigError):
        sweep.run_sweep(base, [], [9])
    # a point another process holds is left to it
    import fcntl

    busy = tmp_path / "points" / "b040-s9"
    busy.mkdir(parents=True)
    with open(busy / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        said = []
        sweep.run_sweep(base, [40], [9, 10], say=said.append)
    assert [c[:2] for c in calls[6:]] == [(40, (10,))] and "another process" in said[0]
