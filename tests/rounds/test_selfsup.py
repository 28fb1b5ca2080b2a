"""Self-supervised labels: photometric refinement against posed neighbour frames, alone and in a round."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from edgedepth.data.synth import SceneStream
from edgedepth.errors import DataError
from edgedepth.fleet.store.local import LocalStore
from edgedepth.rounds.build import RoundConfig, build_round
from edgedepth.rounds.selfsup import neighbor_transforms, photometric_label, relative_pose
from edgedepth.spool import compute_item_id

H, W, K_STEP = 72, 96, 3


@pytest.fixture(scope="module")
def clip():
    stream = SceneStream("indoor", seed=4, height=H, width=W)
    return [stream.next() for _ in range(2 * K_STEP + 4)]


def _absrel(pred, gt, mask):
    return float(np.mean(np.abs(pred[mask] - gt[mask]) / gt[mask]))


def test_photometric_label_recovers_the_metric_scale_from_posed_neighbours(clip):
    frame, prev, nxt = clip[K_STEP + 2], clip[2], clip[2 * K_STEP + 2]
    gt = frame.depth
    init = cv2.GaussianBlur(gt, (9, 9), 3) * 1.3  # a blurred prediction with a 30 % scale error
    neighbors = [
        (prev.rgb, relative_pose(frame.pose, prev.pose)),
        (nxt.rgb, relative_pose(frame.pose, nxt.pose)),
    ]
    label = photometric_label(frame.rgb, neighbors, frame.intrinsics, init)
    valid = (label.depth > 0) & (gt > 0.1)
    assert label.valid_fraction > 0.5
    assert 0.93 < float(np.median(label.depth[valid] / gt[valid])) < 1.07  # the scale error is gone
    assert _absrel(label.depth, gt, valid) < 0.5 * _absrel(init, gt, valid)
    assert label.error_after < label.error_before
    # the wrong pose (neighbours swapped) cannot explain the images as well
    swapped = [
        (prev.rgb, relative_pose(frame.pose, nxt.pose)),
        (nxt.rgb, relative_pose(frame.pose, prev.pose)),
    ]
    assert photometric_label(frame.rgb, swapped, frame.intrinsics, init).error_after > label.error_after


def test_bad_input_is_a_clear_error(clip):
    frame = clip[0]
    with pytest.raises(DataError, match="neighbour"):
        photometric_label(frame.rgb, [], frame.intrinsics, frame.depth)
    with pytest.raises(DataError, match="does not match"):
        photometric_label(frame.rgb, [(frame.rgb[:10], np.eye(4))], frame.intrinsics, frame.depth)
    assert neighbor_transforms({"pose": None, "neighbors": {"prev": True}}) == []
    meta = {
        "pose": np.eye(4).tolist(),
        "neighbors": {"prev": True, "prev_pose": np.eye(4).tolist(), "next": False},
    }
    assert [k for k, _ in neighbor_transforms(meta)] == ["prev"]


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def _put_posed_item(store, frame, prev, nxt, minute: int, with_poses: bool = True) -> str:
    files = {"rgb.png": _png(frame.rgb), "prev.png": _png(prev.rgb), "next.png": _png(nxt.rgb)}
    kinds = {
        "rgb.png": ("rgb", 0),
        "prev.png": ("rgb_neighbor", -K_STEP),
        "next.png": ("rgb_neighbor", K_STEP),
    }
    entries = {
        n: {
            "sha256": hashlib.sha256(b).hexdigest(),
            "bytes": len(b),
            "kind": kinds[n][0],
            "offset": kinds[n][1],
        }
        for n, b in files.items()
    }
    item_id = compute_item_id(entries)
    neighbors = {"k": K_STEP, "prev": True, "next": True}
    if with_poses:
        neighbors.update(prev_pose=prev.pose.tolist(), next_pose=nxt.pose.tolist())
    meta = {
        "schema": "edgedepth.spool/1",
        "id": item_id,
        "files": entries,
        "device_id": "dev-a",
        "captured_at": f"2026-11-29T18:{minute:02d}:00.000Z",
        "score": 0.5,
        "domain": "indoor",
        "width": W,
        "height": H,
        "labels": [],
        "intrinsics": frame.intrinsics.tolist(),
        "pose": frame.pose.tolist() if with_poses else None,
        "neighbors": neighbors,
    }
    assert store.put_item(item_id, files, meta)
    return item_id


def test_round_build_labels_posed_frames_without_depth(tmp_path, clip, tiny_ckpt):
    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    posed = [
        _put_posed_item(store, clip[i + K_STEP], clip[i], clip[i + 2 * K_STEP], minute=i) for i in (0, 3)
    ]
    _put_posed_item(store, clip[1 + K_STEP], clip[1], clip[1 + 2 * K_STEP], minute=30, with_poses=False)
    store.close()
    out = tmp_path / "round"
    report = build_round(
        RoundConfig(
            store=str(tmp_path / "store"),
            out=str(out),
            self_supervised=str(tiny_ckpt),
            val_fraction=0.0,
            dedupe_distance=0.0,
        )
    )
    assert report.labelled == {"selfsup": 2} and report.unlabelled == 1  # no poses: no label
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["self_supervision"]["model"] == str(tiny_ckpt)
    assert {f["item"] for f in lineage["frames"]} == set(posed)
    from edgedepth.data.dataset import open_dataset

    ds = open_dataset(str(out))
    assert len(ds) == 2 and all(
        ds[i].depth.shape == (H, W) and (ds[i].depth > 0).mean() > 0.2 for i in range(2)
    )
    # without the option the same store has nothing to train on
    with pytest.raises(DataError, match="self-supervised"):
        build_round(RoundConfig(store=str(tmp_path / "store"), out=str(tmp_path / "r2")))
