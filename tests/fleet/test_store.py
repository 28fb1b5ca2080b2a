"""Local directory store: all-or-nothing create-only items, the SQLite frame index, `since`."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from edgedepth.errors import ConfigError, DataError
from edgedepth.fleet.store import StoreUnavailable, open_store
from edgedepth.fleet.store.local import LocalStore
from edgedepth.spool import compute_item_id


def item(seed: int, device: str = "cam-1", received_at=None):
    files = {"rgb.png": b"rgb-%d" % seed, "depth.png": b"depth-%d" % seed * 3}
    entries = {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in files.items()}
    item_id = compute_item_id(entries)
    meta = {
        "id": item_id,
        "device_id": device,
        "captured_at": "2026-11-24T18:00:00.000Z",
        "score": seed / 10,
        "labels": ["depth_sensor"],
        "model": {"name": "edgedepth", "version": "3"},
        "files": entries,
    }
    if received_at:
        meta["received_at"] = received_at
    return item_id, files, meta


def test_put_read_duplicate_and_index(tmp_path):
    store = open_store(str(tmp_path / "s"), min_free_bytes=0)
    assert isinstance(store, LocalStore)
    iid, files, meta = item(1)
    assert not store.has(iid)
    assert store.put_item(iid, files, meta) is True
    assert store.has(iid)
    assert store.read_file(iid, "rgb.png") == files["rgb.png"]
    got = store.get_meta(iid)
    assert got["device_id"] == "cam-1" and got["stored_bytes"] == sum(map(len, files.values()))
    assert got["received_at"].endswith("Z")
    # The same id again: nothing written, False.
    before = sorted(p.name for p in (store.item_dir(iid)).iterdir())
    assert store.put_item(iid, {"rgb.png": b"other"}, meta) is False
    assert store.read_file(iid, "rgb.png") == files["rgb.png"]
    assert (
        sorted(p.name for p in store.item_dir(iid).iterdir())
        == before
        == ["depth.png", "meta.json", "rgb.png"]
    )
    rows = list(store.iter_items())
    assert [r["id"] for r in rows] == [iid]
    assert store.index.count() == 1
    with pytest.raises(DataError):
        store.read_file(iid, "../meta.json")
    with pytest.raises(DataError):
        store.get_meta("0" * 64)
    with pytest.raises(DataError):
        store.has("../../etc")
    store.close()


def test_iter_since_is_strictly_after_and_ordered(tmp_path):
    store = LocalStore(tmp_path, min_free_bytes=0)
    stamps = ["2026-11-24T18:00:00.000000Z", "2026-11-24T18:00:00.000001Z", "2026-11-24T18:00:01.500000Z"]
    ids = []
    for n, stamp in enumerate(reversed(stamps)):
        iid, files, meta = item(n, received_at=stamp)
        store.put_item(iid, files, meta)
        ids.append(iid)
    ids.reverse()
    assert [m["id"] for m in store.iter_items()] == ids
    # "18:00:00Z" must compare as a time, not as a string ('Z' sorts after '.').
    assert [m["id"] for m in store.iter_items(since="2026-11-24T18:00:00Z")] == ids[1:]
    assert [m["id"] for m in store.iter_items(since="2026-11-24T18:00:01.5Z")] == []
    assert [m["id"] for m in store.iter_items(since="2026-11-24T18:00:01+00:00")] == ids[2:]
    with pytest.raises(DataError, match="bad time"):
        list(store.iter_items(since="yesterday"))
    # Pages of the keyset pagination join up without gaps or repeats.
    assert [m["id"] for m in store.index.iter_meta(batch=1)] == ids


def test_write_failure_leaves_nothing_and_disk_full_is_transient(tmp_path, monkeypatch):
    store = LocalStore(tmp_path, min_free_bytes=0)
    iid, files, meta = item(5)
    import edgedepth.fleet.store.local as local

    real = local._write_file
    calls = []

    def failing(path, data):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")  # ENOSPC on the second file
        real(path, data)

    monkeypatch.setattr(local, "_write_file", failing)
    with pytest.raises(StoreUnavailable, match="retry later"):
        store.put_item(iid, files, meta)
    monkeypatch.setattr(local, "_write_file", real)
    assert not store.has(iid) and list((tmp_path / "tmp").iterdir()) == []
    assert not (tmp_path / "items" / iid[:2] / iid).exists() and list(store.iter_items()) == []
    assert store.put_item(iid, files, meta) is True  # the retry works

    full = LocalStore(tmp_path / "full", min_free_bytes=1 << 60)  # "disk full": reserve not available
    with pytest.raises(StoreUnavailable, match="free"):
        full.put_item(iid, files, meta)
    assert not full.has(iid)


def test_index_rebuilds_and_heals(tmp_path):
    store = LocalStore(tmp_path, min_free_bytes=0)
    ids = []
    for n in range(3):
        iid, files, meta = item(n)
        store.put_item(iid, files, meta)
        ids.append(iid)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        p = tmp_path / f"index.db{suffix}"
        if p.exists():
            os.remove(p)
    again = LocalStore(tmp_path, min_free_bytes=0)  # no index but items: rebuilt on open
    assert sorted(m["id"] for m in again.iter_items()) == sorted(ids)
    # A crash between the rename and the index insert: the retry of that item heals the index.
    iid, files, meta = item(9)
    again.put_item(iid, files, meta)
    again.index._db.execute("DELETE FROM items WHERE id = ?", (iid,))
    assert iid not in {m["id"] for m in again.iter_items()}
    assert again.put_item(iid, files, meta) is False
    assert iid in {m["id"] for m in again.iter_items()}
    assert json.loads((again.item_dir(iid) / "meta.json").read_text())["id"] == iid


def test_open_store_rejects_bad_uris_and_names(tmp_path):
    with pytest.raises(ConfigError, match="unsupported store URI"):
        open_store("ftp://x/y")
    with pytest.raises(ConfigError, match="endpoint"):
        open_store(str(tmp_path), endpoint_url="http://127.0.0.1:9")
    store = open_store("file://" + str(tmp_path / "f"), min_free_bytes=0)
    iid, files, meta = item(1)
    with pytest.raises(DataError, match="reserved"):
        store.put_item(iid, {"meta.json": b"x"}, meta)
    with pytest.raises(DataError, match="bad item file name"):
        store.put_item(iid, {"../x": b"x"}, meta)
    with pytest.raises(DataError, match="bad item id"):
        store.put_item("../" + iid[3:], files, meta)
    assert list(store.iter_items()) == []


def test_head_style_has_heals_an_unindexed_item(tmp_path):
    """Killed between the rename and the index insert, then asked by HEAD: the daemon will never POST
    again, so `has` must index the committed item itself."""
    store = LocalStore(tmp_path, min_free_bytes=0)
    iid, files, meta = item(4)
    store.put_item(iid, files, meta)
    store.index._db.execute("DELETE FROM items WHERE id = ?", (iid,))
    assert iid not in {m["id"] for m in store.iter_items()}
    assert store.has(iid) is True
    assert iid in {m["id"] for m in store.iter_items()}
    assert store.has("0" * 64) is False
