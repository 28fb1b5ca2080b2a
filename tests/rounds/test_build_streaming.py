"""The round's files written as the frames come: the same text as json.dumps of the whole document, and a
scratch folder that never outlives the build."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgedepth.data.formats import _json_default
from edgedepth.fleet.store.local import LocalStore
from edgedepth.rounds import build
from edgedepth.rounds.build import RoundConfig, build_round
from edgedepth.rounds.splitfiles import LINEAGE_KEYS, META_KEYS, SplitFiles


def _rows():
    rows = {"train": [], "val": []}
    for i in range(6):
        rows["val" if i in (2, 4) else "train"].append(dict(
            name=f"frame{i}-\u00e9\n\"", domain=None if i == 3 else ("fog", "indoor")[i % 2],
            label="depth_gt", label_kind="sensor", item=f"id{i}", device_id=f"cam-{i % 2}",
            captured_at=f"2026-11-24T18:0{i}:00Z",
            score=i / 7, intrinsics=[[5.0, 0.0, 4.0], [0.0, 5.0, 3.0], [0.0, 0.0, 1.0]] if i % 2 else None,
            replay_of=None if i else "r0:0001"))
    return rows


def test_streamed_meta_and_lineage_are_the_whole_document_dumped(tmp_path):
    rows = _rows()
    files = SplitFiles(tmp_path / "work")
    for i in range(6):  # the splits interleaved, as the build meets them
        for side in ("train", "val"):
            if any(r["item"] == f"id{i}" for r in rows[side]):
                files.add(side, next(r for r in rows[side] if r["item"] == f"id{i}"))
    for side in ("train", "val"):
        files.write_meta(tmp_path / side, side)
        expect = {"source": "round", "split": side, "frames": {
            r["name"]: {k: r[k] for k in META_KEYS if r.get(k) is not None} for r in rows[side]}}
        text = json.dumps(expect, indent=1, default=_json_default)
        assert (tmp_path / side / "meta.json").read_text() == text
    head = {"format": "edgedepth.round/1", "report": {"train": 4, "domains": {"fog": 1}}, "teacher": None}
    files.write_lineage(tmp_path / "lineage.json", head)
    frames = [{"name": r["name"], "split": s, **{k: r.get(k) for k in LINEAGE_KEYS}}
              for s in ("train", "val") for r in rows[s]]
    assert (tmp_path / "lineage.json").read_text() == json.dumps({**head, "frames": frames}, indent=1,
                                                                 default=str)
    files.close()

    empty = SplitFiles(tmp_path / "work2")
    empty.write_meta(tmp_path / "none", "train")
    empty.write_lineage(tmp_path / "none" / "lineage.json", head)
    assert json.loads((tmp_path / "none" / "meta.json").read_text())["frames"] == {}
    assert (tmp_path / "none" / "lineage.json").read_text() == json.dumps({**head, "frames": []}, indent=1)
    empty.close()


def test_scratch_folder_is_removed_when_the_build_fails(tmp_path, monkeypatch):
    from tests.rounds.test_build import make_item

    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    for i in range(4):
        make_item(store, 300 + i, t=f"2026-11-24T18:0{i}:00.000Z")
    store.close()
    seen = []

    def failing_write(root, *args, **kwargs):
        seen.extend(p.name for p in tmp_path.iterdir() if p.name.startswith(".r.build-"))
        raise OSError("disk full")

    monkeypatch.setattr(build, "write_sample", failing_write)
    with pytest.raises(OSError, match="disk full"):
        build_round(RoundConfig(store=str(tmp_path / "store"), out=str(tmp_path / "r")))
    assert seen  # the spilled records existed while the frames were written ...
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.build-")]  # ... and are gone


def test_scores_and_order_survive_the_spill(tmp_path):
    from tests.rounds.test_build import make_item

    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    made = []
    for i, score in enumerate([0.1, 1 / 3, np.pi, 7, 0.1]):
        item_id, _, _ = make_item(store, 400 + i, t=f"2026-11-24T18:0{4 - i}:00.000Z", score=score)
        made.append((f"2026-11-24T18:0{4 - i}:00.000Z", item_id, float(score)))
    store.close()
    build_round(RoundConfig(store=str(tmp_path / "store"), out=str(tmp_path / "r"), val_fraction=0.0))
    frames = json.loads((tmp_path / "r" / "meta.json").read_text())["frames"]
    assert [(f["captured_at"], f["item"], f["score"]) for f in frames.values()] == sorted(made)
