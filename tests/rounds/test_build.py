"""Round build against a real LocalStore filled with put_item (no server needed)."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from edgedepth.errors import DataError
from edgedepth.fleet.store.local import LocalStore
from edgedepth.rounds.build import RoundConfig, build_round, group_key
from edgedepth.spool import compute_item_id

H, W = 24, 32


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def make_item(store, seed, device="dev-a", t="2026-11-24T18:00:00.000Z", depth=True, domain="night",
              score=0.5, rgb=None):
    rng = np.random.default_rng(seed)
    if rgb is None:
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    files = {"rgb.png": _png(rgb[..., ::-1])}
    kinds = {"rgb.png": ("rgb", None)}
    depth_m = None
    if depth:
        depth_m = rng.uniform(0.5, 9.0, (H, W)).astype(np.float32)
        files["depth.png"] = _png(np.round(depth_m * 1000).astype(np.uint16))
        kinds["depth.png"] = ("depth_gt", "mm_uint16")
    entries = {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b), "kind": kinds[n][0], "offset": 0,
                   "units": kinds[n][1]} for n, b in files.items()}
    item_id = compute_item_id(entries)
    meta = {"schema": "edgedepth.spool/1", "id": item_id, "files": entries, "device_id": device,
            "captured_at": t, "score": score, "domain": domain, "width": W, "height": H,
            "labels": ["depth_gt"] if depth else []}
    assert store.put_item(item_id, files, meta)
    return item_id, rgb, depth_m


def _names(root):
    return sorted(p.stem for p in (root / "rgb").glob("*.png"))


def test_labels_from_uploaded_depth_and_lineage(tmp_path):
    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    made = {}
    for i in range(12):
        dev = "dev-a" if i < 6 else "dev-b"
        item_id, rgb, depth = make_item(store, i, device=dev, t=f"2026-11-24T18:{i:02d}:00.000Z",
                                        depth=i != 11, domain="fog" if i % 2 else "indoor", score=i / 10)
        made[item_id[:24]] = (item_id, rgb, depth, "fog" if i % 2 else "indoor")
    store.close()
    out = tmp_path / "rounds" / "1"
    rep = build_round(RoundConfig(store=str(tmp_path / "store"), out=str(out), val_fraction=0.3,
                                  time_block_s=120.0, seed=3))
    assert rep.ingested == 12 and rep.unlabelled == 1 and rep.labelled == {"depth_gt": 11}
    assert rep.train + rep.val == 11 and rep.val > 0 and rep.replay == 0
    from edgedepth.data.dataset import open_dataset

    ds = open_dataset(str(out))
    assert len(ds) == rep.train
    for i in range(len(ds)):
        s = ds[i]
        item_id, rgb, depth, domain = made[s.name]
        np.testing.assert_array_equal(s.rgb, rgb)
        np.testing.assert_allclose(s.depth, depth, atol=6e-4)  # mm quantisation
        assert s.domain == domain
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["format"] == "edgedepth.round/1"
    assert lineage["report"]["labelled"] == {"depth_gt": 11}
    frames = {f["name"]: f for f in lineage["frames"]}
    assert len(frames) == 11
    for name, f in frames.items():
        assert f["item"] == made[name][0] and f["label"] == "depth_gt" and f["split"] in ("train", "val")
    meta = json.loads((out / "meta.json").read_text())
    assert {v["domain"] for v in meta["frames"].values()} <= {"fog", "indoor"}


def test_split_keeps_device_time_groups_on_one_side(tmp_path):
    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    metas = {}
    k = 0
    for dev in ("a", "b", "c", "d"):
        for minute in range(0, 40, 4):  # 10 frames per device, blocks of 10 min -> 4 blocks per device
            item_id, _, _ = make_item(store, 1000 + k, device=f"dev-{dev}",
                                      t=f"2026-11-24T18:{minute:02d}:30.000Z")
            metas[item_id[:24]] = store.get_meta(item_id)
            k += 1
    store.close()
    out = tmp_path / "r1"
    rep = build_round(RoundConfig(store=str(tmp_path / "store"), out=str(out), val_fraction=0.25,
                                  time_block_s=600.0, seed=1))
    train, val = _names(out), _names(out / "val")
    assert len(train) + len(val) == 40 and val
    g_train = {group_key(metas[n], 600.0) for n in train}
    g_val = {group_key(metas[n], 600.0) for n in val}
    assert g_train and g_val and not (g_train & g_val)
    assert rep.groups["train"] == len(g_train) and rep.groups["val"] == len(g_val)
    assert 0.1 <= len(val) / 40 <= 0.4


def test_dedupe_drops_near_duplicate_keeping_higher_score(tmp_path):
    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    base = np.random.default_rng(7).integers(0, 256, (H, W, 3), dtype=np.uint8)
    near = np.clip(base.astype(int) + 1, 0, 255).astype(np.uint8)  # a different file, same picture
    low, _, _ = make_item(store, 1, rgb=base, score=0.1)
    high, _, _ = make_item(store, 2, rgb=near, score=0.9)
    other, _, _ = make_item(store, 3, score=0.2)
    store.close()
    out = tmp_path / "r"
    rep = build_round(RoundConfig(store=str(tmp_path / "store"), out=str(out), val_fraction=0.0))
    assert rep.duplicates == 1
    assert set(_names(out)) == {high[:24], other[:24]}


def test_replay_mixing_from_earlier_round(tmp_path):
    from edgedepth.data.formats import write_meta, write_sample

    r0 = tmp_path / "rounds" / "0"
    rng = np.random.default_rng(0)
    for i in range(30):
        write_sample(r0, f"{i:04d}", rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                     rng.uniform(1, 5, (H, W)).astype(np.float32))
    write_meta(r0, {"domain": "indoor"})
    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    for i in range(10):
        make_item(store, 50 + i)
    store.close()
    out = tmp_path / "rounds" / "1"
    rep = build_round(RoundConfig(store=str(tmp_path / "store"), out=str(out), replay=[str(r0)],
                                  replay_fraction=0.5, val_fraction=0.0))
    assert rep.train == 15 and rep.replay == 5 and rep.domains.get("indoor") == 5
    names = _names(out)
    assert sum(n.startswith("replay_") for n in names) == 5
    lineage = json.loads((out / "lineage.json").read_text())
    replayed = [f for f in lineage["frames"] if f["label"] == "replay"]
    assert len(replayed) == 5 and all(f["replay_of"].startswith(str(r0)) for f in replayed)
    assert lineage["replay_sources"][0]["frames"] == 30 and len(lineage["replay_sources"][0]["sha256"]) == 64
    # the same seed gives the same replay sample (reproducible rounds)
    out2 = tmp_path / "rounds" / "1b"
    build_round(RoundConfig(store=str(tmp_path / "store"), out=str(out2), replay=[str(r0)],
                            replay_fraction=0.5, val_fraction=0.0))
    assert _names(out2) == names


def test_since_filters_and_no_labelled_frames_is_a_clear_error(tmp_path):
    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    for i in range(3):
        make_item(store, 80 + i, depth=False)
    store.close()
    with pytest.raises(DataError, match="no labelled frames.*--teacher"):
        build_round(RoundConfig(store=str(tmp_path / "store"), out=str(tmp_path / "r")))
    with pytest.raises(DataError, match="no labelled frames"):
        build_round(RoundConfig(store=str(tmp_path / "store"), out=str(tmp_path / "r2"),
                                since="2999-01-01T00:00:00Z"))


def test_cli_round_build_and_trainer_reads_it(tmp_path):
    from click.testing import CliRunner

    from edgedepth.cli.main import cli
    from edgedepth.train.torchdata import load_many

    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    for i in range(6):
        make_item(store, 200 + i, device=f"dev-{i % 3}")
    store.close()
    out = tmp_path / "rounds" / "1"
    res = CliRunner().invoke(cli, ["round", "build", "--store", str(tmp_path / "store"), "--out", str(out),
                                   "--val-fraction", "0.3"])
    assert res.exit_code == 0, res.output
    assert "6 ingested" in res.output
    frames = load_many([str(out)], 32, 32)  # the trainer's loader reads the round folder as is
    assert 1 <= len(frames) <= 6
    res = CliRunner().invoke(cli, ["round", "build", "--store", str(tmp_path / "store"), "--out", str(out)])
    assert res.exit_code == 2 and "not empty" in res.output


def test_the_same_items_give_the_same_round_whatever_their_arrival_order(tmp_path):
    def build(order, name):
        store = LocalStore(tmp_path / f"store-{name}", min_free_bytes=0)
        for i in order:
            make_item(store, i, device="dev-a" if i % 2 else "dev-b", t=f"2026-11-24T18:{i:02d}:00.000Z",
                      score=0.5)  # equal scores: de-duplication ties are broken by a fixed order too
        store.close()
        build_round(RoundConfig(store=str(tmp_path / f"store-{name}"), out=str(tmp_path / name),
                                val_fraction=0.3, time_block_s=120.0))
        lineage = json.loads((tmp_path / name / "lineage.json").read_text())
        return [(f["name"], f["split"]) for f in lineage["frames"]]

    forward, backward = build(range(12), "a"), build(reversed(range(12)), "b")
    assert forward == backward and {s for _, s in forward} == {"train", "val"}
