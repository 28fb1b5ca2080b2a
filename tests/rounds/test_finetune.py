"""`edgedepth round train`: the README tour's next round on a small scale, promoted by the gate; the recipe
it resolves is the fleet simulation's."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgedepth.cli.main import cli
from edgedepth.rounds.finetune import FinetuneRecipe, read_parent, recipe_from_sim, round_data
from edgedepth.sim.config import SimConfig

H, W = 32, 64


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _upload(store, frame, device: str, minute: int, domain: str) -> None:
    """Store one frame with its depth as the ingest server would (a synthetic source's depth_gt)."""
    from edgedepth.spool import compute_item_id

    files = {"rgb.png": _png(frame.rgb[..., ::-1]),
             "depth.png": _png(np.round(np.clip(frame.depth, 0, 65) * 1000).astype(np.uint16))}
    kinds = {"rgb.png": ("rgb", None), "depth.png": ("depth_gt", "mm_uint16")}
    entries = {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b), "kind": kinds[n][0],
                   "offset": 0, "units": kinds[n][1]} for n, b in files.items()}
    item_id = compute_item_id(entries)
    meta = {"schema": "edgedepth.spool/1", "id": item_id, "files": entries, "device_id": device,
            "captured_at": f"2026-11-24T18:{minute:02d}:00.000Z", "score": 0.5, "domain": domain,
            "width": W, "height": H, "labels": ["depth_gt"]}
    assert store.put_item(item_id, files, meta)


def _run(args):
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    return res


def test_recipe_defaults_are_the_simulations():
    sim = SimConfig()
    assert recipe_from_sim(sim) == FinetuneRecipe()
    r = FinetuneRecipe()
    assert (r.steps, r.lr, r.batch_size, r.new_share, r.freeze_bn, r.merge) == \
        (sim.finetune_steps, sim.finetune_lr, sim.batch_size, sim.new_share, sim.freeze_bn, sim.merge)
    assert FinetuneRecipe(lr=1e-4).overrides() == {"lr": 1e-4}


def test_round_data_replays_the_base_whole_at_a_fixed_share(tmp_path):
    from tests.train.conftest import write_folder

    base = write_folder(tmp_path / "base", n=12, h=H, w=W)
    r1 = write_folder(tmp_path / "r1", n=3, h=H, w=W, seed=1)
    r2 = write_folder(tmp_path / "r2", n=1, h=H, w=W, seed=2)
    (tmp_path / "r3" / "val").mkdir(parents=True)  # everything went to val: no training frames
    data, shares = round_data([str(base)], [str(r1), str(r2), str(tmp_path / "r3")], 0.25)
    assert data == [str(base), str(r1), str(r2)]
    assert shares == pytest.approx([0.75, 0.25 * 3 / 4, 0.25 / 4])
    assert round_data([str(base)], [str(r1)], 0.0) == ([str(base), str(r1)], [])


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """data/indoor + data/indoor-val, round 0 trained with `edgedepth train`, a store holding fog frames
    from two devices, rounds/1 built with `edgedepth round build`."""
    from edgedepth.data.synth import render_frame, write_synth_dataset
    from edgedepth.fleet.store.local import LocalStore

    root = tmp_path_factory.mktemp("tour")
    indoor = write_synth_dataset(root / "data" / "indoor", "indoor", 48, H, W, seed=0, progress=False)
    val = write_synth_dataset(root / "data" / "indoor-val", "indoor", 16, H, W, seed=500, progress=False)
    res = _run(["train", "--data", str(indoor), "--val", str(val), "--model", "tiny", "--size", f"{H}x{W}",
                "--epochs", "6", "--batch-size", "8", "--lr", "2e-3", "--frame-weight", "0", "--workers", "1",
                "--out", str(root / "runs" / "r0"), "--no-progress"])
    assert res.exit_code == 0, res.output
    store = LocalStore(root / "store", min_free_bytes=0)
    for i in range(32):
        frame = render_frame("fog", 7000 + i, H, W)
        _upload(store, frame, device=f"cam-{i % 2}", minute=i // 2, domain="fog")
    store.close()
    res = _run(["round", "build", "--store", str(root / "store"), "--out", str(root / "rounds" / "1"),
                "--val-fraction", "0.25", "--time-block", "240"])
    assert res.exit_code == 0, res.output
    return root


def test_round_train_is_promoted_and_records_its_recipe(tour):
    root = tour
    r0 = root / "runs" / "r0" / "best.pt"
    parent = read_parent(r0)
    assert [p.rsplit("/", 1)[-1] for p in parent.base] == ["indoor"]
    assert parent.regression_set.endswith("indoor-val") and parent.rounds == []
    out = root / "runs" / "r1"
    res = _run(["round", "train", str(root / "rounds" / "1"), "--from", str(r0), "--out", str(out),
                "--steps", "60", "--batch-size", "8", "--workers", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    print(res.output)
    assert "verdict: PROMOTE" in res.output
    record = json.loads((out / "round.json").read_text())
    assert record["gate"]["verdict"] == "promote"
    assert record["recipe"] == asdict(FinetuneRecipe(steps=60, batch_size=8))
    assert record["overrides"] == {"steps": 60, "batch_size": 8}
    assert record["data_shares"] == pytest.approx([0.75, 0.25])
    assert record["target_set"] == [str(root / "rounds" / "1" / "val")]

    from edgedepth.checkpoint import load_checkpoint

    cand = load_checkpoint(record["candidate"])
    assert cand["train_config"]["freeze_bn"] is True and cand["train_config"]["lr"] == FinetuneRecipe.lr
    assert cand["train_config"]["data_shares"] == pytest.approx([0.75, 0.25])
    assert cand["training_round"] == 1
    # the next round finds the whole chain in the candidate's lineage
    child = read_parent(record["candidate"])
    assert child.base == parent.base and child.rounds == [str((root / "rounds" / "1").resolve())]
    assert child.regression_set == str((root / "data" / "indoor-val").resolve())
    assert child.anchor == str(r0.resolve())
    res = _run(["round", "train", str(root / "rounds" / "1"), "--from", record["candidate"], "--out",
                str(root / "runs" / "again")])
    assert res.exit_code == 2 and "already fine-tuned on" in res.output


def test_init_from_without_replay_prints_the_round_train_hint(tour):
    root = tour
    res = CliRunner().invoke(cli, [
        "train", "--init-from", str(root / "runs" / "r0" / "best.pt"), "--data", str(root / "rounds" / "1"),
        "--val", str(root / "data" / "indoor-val"), "--epochs", "1", "--batch-size", "8", "--workers", "1",
        "--out", str(root / "runs" / "plain"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "edgedepth round train ROUND --from" in res.output
