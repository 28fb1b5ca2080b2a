"""Round build with teacher labels: every frame's label kind recorded; the gate reports per label kind."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np

from edgedepth.fleet.store.local import LocalStore
from edgedepth.rounds.build import RoundConfig, build_round
from edgedepth.spool import compute_item_id

H, W = 32, 48
K = [[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]]


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def put(store, i: int, depth: str, intrinsics: bool = True) -> str:
    """An item whose brightness grows towards the bottom (nearer), with dense, sparse or no depth."""
    rng = np.random.default_rng(i)
    rows = np.linspace(0.2, 1.0, H, dtype=np.float32)[:, None] * np.ones((1, W), np.float32)
    rgb = np.clip(255 * rows[..., None] * rng.uniform(0.7, 1.0, 3) + rng.normal(0, 2, (H, W, 3)), 0, 255
                  ).astype(np.uint8)
    true = (1.0 / (0.15 + 0.6 * rows)).astype(np.float32)
    files = {"rgb.png": _png(rgb[..., ::-1])}
    kinds = {"rgb.png": ("rgb", None)}
    if depth == "dense":
        files["depth.png"] = _png(np.round(true * 1000).astype(np.uint16))
        kinds["depth.png"] = ("depth_gt", "mm_uint16")
    elif depth == "sparse":  # a few LiDAR-like returns: 3 % of the pixels
        pts = np.where(rng.random((H, W)) < 0.03, true, 0)
        files["depth.png"] = _png(np.round(pts * 1000).astype(np.uint16))
        kinds["depth.png"] = ("depth_sensor", "mm_uint16")
    entries = {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b), "kind": kinds[n][0],
                   "offset": 0, "units": kinds[n][1]} for n, b in files.items()}
    item_id = compute_item_id(entries)
    meta = {"schema": "edgedepth.spool/1", "id": item_id, "files": entries, "device_id": f"dev-{i % 2}",
            "captured_at": f"2026-11-24T18:{i:02d}:00.000Z", "score": 0.5, "domain": "indoor",
            "width": W, "height": H, "labels": [], "intrinsics": K if intrinsics else None}
    assert store.put_item(item_id, files, meta)
    return item_id


def _kinds(out) -> dict:
    lineage = json.loads((out / "lineage.json").read_text())
    return {f["item"]: f["label_kind"] for f in lineage["frames"]}


def test_round_records_label_kinds_and_aligns_a_relative_teacher(tmp_path, onnx_disparity):
    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    dense = [put(store, i, "dense") for i in range(0, 3)]
    sparse = [put(store, i, "sparse") for i in range(3, 6)]
    bare = [put(store, i, "none") for i in range(6, 9)]
    store.close()
    common = dict(store=str(tmp_path / "store"), teacher=str(onnx_disparity), val_fraction=0.0,
                  dedupe_distance=0.0, label_cache=str(tmp_path / "cache"))
    rep = build_round(RoundConfig(out=str(tmp_path / "r1"), **common))
    kinds = _kinds(tmp_path / "r1")
    assert {kinds[i] for i in dense} == {"sensor"} and {kinds[i] for i in sparse} == {"teacher-aligned"}
    assert not set(bare) & set(kinds)  # relative teacher, no metric points: left unlabelled
    assert rep.label_kinds == {"sensor": 3, "teacher-aligned": 3}
    assert rep.unlabelled == 3 and rep.unreadable == 0
    meta = json.loads((tmp_path / "r1" / "meta.json").read_text())
    assert sorted(f["label_kind"] for f in meta["frames"].values()) == \
        ["sensor"] * 3 + ["teacher-aligned"] * 3
    # the ground-plane prior aligns the frames that came with intrinsics only
    rep2 = build_round(RoundConfig(out=str(tmp_path / "r2"), camera_height=1.0, **common))
    assert rep2.label_kinds == {"sensor": 3, "teacher-aligned": 6}
    from edgedepth.data.dataset import open_dataset

    labels = {s.name: s.depth for s in (lambda ds: [ds[i] for i in range(len(ds))])(open_dataset(
        str(tmp_path / "r2")))}
    rows = np.linspace(0.2, 1.0, H, dtype=np.float32)[:, None]
    true = np.broadcast_to(1.0 / (0.15 + 0.6 * rows), (H, W))
    aligned = labels[sparse[0][:24]]  # aligned to its sparse returns: close to the truth
    good = aligned > 0
    assert good.mean() > 0.8 and float(np.median(np.abs(aligned[good] / true[good] - 1))) < 0.1
    ground = labels[bare[0][:24]]  # aligned to the floor 1 m below the camera: the floor rows match it
    z = 40.0 / (np.arange(H - 8, H) - H / 2)
    assert np.allclose(np.median(ground[H - 8:], axis=1), z, rtol=0.15)


def test_metric_teacher_instead_of_uploaded_depth_and_gate_by_label_kind(tmp_path, tiny_ckpt):
    from edgedepth.gate import gate

    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    items = [put(store, i, "dense" if i % 2 else "none") for i in range(8)]
    store.close()
    common = dict(store=str(tmp_path / "store"), teacher=str(tiny_ckpt), val_fraction=0.0,
                  dedupe_distance=0.0, label_cache=str(tmp_path / "cache"))
    build_round(RoundConfig(out=str(tmp_path / "mixed"), **common))
    kinds = _kinds(tmp_path / "mixed")
    assert [kinds[i] for i in items] == ["teacher-metric", "sensor"] * 4
    rep = build_round(RoundConfig(out=str(tmp_path / "teacher-only"), use_uploaded_depth=False, **common))
    assert rep.label_kinds == {"teacher-metric": 8}
    result = gate(tiny_ckpt, tiny_ckpt, tmp_path / "mixed", tmp_path / "mixed")
    per_kind = result.sets[0].candidate["per_label_kind"]
    assert sorted(per_kind) == ["sensor", "teacher-metric"] and per_kind["sensor"]["frames"] == 4
    assert "regression set by label kind: sensor AbsRel" in result.table()
