"""Spool: atomic put, idempotent put, readers ignore partial items, score eviction, ENOSPC, orphans."""

from __future__ import annotations

import errno
import json
import os
import re
import time

import pytest

from edgedepth import spool as spool_mod
from edgedepth.errors import DataError
from edgedepth.spool import Spool, SpoolMeta, captured_at, compute_item_id, parse_meta


def frame(i: int, size: int = 1000):
    data = bytes([i % 251]) * 16 + os.urandom(size)
    return {"rgb.png": (data, "rgb"), "depth.png": (data[::-1], "depth_sensor", 0, "mm_uint16")}


def meta(score: float = 0.5, **kw):
    return dict(device_id="dev-1", captured_at=captured_at(), score=score, width=64, height=48, **kw)


def test_put_writes_all_files_and_valid_metadata(tmp_path):
    sp = Spool(tmp_path)
    item_id = sp.put(frame(1), meta(0.7, source="synthetic://indoor", labels=["depth_sensor"]))
    names = sorted(os.listdir(tmp_path))
    assert names == sorted([f"{item_id}.json", f"{item_id}.rgb.png", f"{item_id}.depth.png"])
    m = parse_meta((tmp_path / f"{item_id}.json").read_bytes())
    assert m.id == item_id and m.score == 0.7 and m.files["depth.png"].units == "mm_uint16"
    assert compute_item_id({n: e.model_dump() for n, e in m.files.items()}) == item_id
    [item] = sp.items()
    assert item.id == item_id and item.paths["rgb.png"].read_bytes() == frame_bytes(tmp_path, item_id)
    assert item.nbytes == sp.total_bytes()


def frame_bytes(root, item_id):
    return (root / f"{item_id}.rgb.png").read_bytes()


def test_identical_put_is_a_noop(tmp_path):
    sp = Spool(tmp_path)
    files = frame(2)
    a = sp.put(files, meta(0.1))
    mtime = (tmp_path / f"{a}.json").stat().st_mtime_ns
    time.sleep(0.01)
    b = sp.put(files, meta(0.9))
    assert a == b and len(sp.items()) == 1
    assert (tmp_path / f"{a}.json").stat().st_mtime_ns == mtime


def test_captured_at_is_iso_utc_with_millis():
    s = captured_at(1795000000.1234)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", s), s
    assert s.endswith(".123Z")


def test_items_ignore_incomplete_invalid_and_temp_files(tmp_path):
    sp = Spool(tmp_path)
    good = sp.put(frame(3), meta())
    # files without metadata (a put in progress), a temp file, a foreign file
    partial = "b" * 64
    (tmp_path / f"{partial}.rgb.png").write_bytes(b"x")
    (tmp_path / f".tmp-{partial}.json.1.abc").write_text("{}")
    (tmp_path / "README").write_text("hi")
    # metadata present but a file missing
    broken = sp.put(frame(4), meta())
    os.unlink(tmp_path / f"{broken}.depth.png")
    # metadata that does not parse
    (tmp_path / f"{'c' * 64}.json").write_text("{not json")
    assert [it.id for it in sp.items()] == [good]
    assert sp.get(broken) is None and sp.get(partial) is None
    with pytest.raises(DataError, match="missing"):
        sp.load(broken)


def test_items_sorted_by_score_and_remove_deletes_everything(tmp_path):
    sp = Spool(tmp_path)
    ids = {s: sp.put(frame(i), meta(s)) for i, s in enumerate([0.2, 0.9, 0.5])}
    assert [it.score for it in sp.items()] == [0.9, 0.5, 0.2]
    sp.remove(ids[0.9])
    assert not any(n.startswith(ids[0.9]) for n in os.listdir(tmp_path))
    assert len(sp) == 2


def test_cap_evicts_lowest_scores_first(tmp_path, caplog):
    probe = Spool(tmp_path / "probe")
    one = probe.items()[0].nbytes if probe.put(frame(0), meta()) else 0
    sp = Spool(tmp_path / "s", max_bytes=int(one * 4.5))
    scores = [0.5, 0.1, 0.9, 0.3, 0.7, 0.05, 0.8]
    ids = {s: sp.put(frame(i + 10), meta(s)) for i, s in enumerate(scores)}
    kept = sorted(it.score for it in sp.items())
    assert kept == [0.5, 0.7, 0.8, 0.9]
    assert sp.evicted == 3 and sp.total_bytes() <= sp.max_bytes
    assert sp.get(ids[0.05]) is None and sp.get(ids[0.1]) is None


def test_cap_never_evicts_a_locked_item(tmp_path):
    probe = Spool(tmp_path / "probe")
    probe.put(frame(0), meta())
    one = probe.items()[0].nbytes
    sp = Spool(tmp_path / "s", max_bytes=int(one * 2.5))
    low = sp.put(frame(1), meta(0.01))
    mid = sp.put(frame(2), meta(0.5))
    with sp.lock(low):
        assert sp.is_locked(low)  # flock is per open file: a probe through a new descriptor sees it
        other = Spool(tmp_path / "s", max_bytes=int(one * 2.5))  # e.g. the live loop in another process
        other.put(frame(3), meta(0.6))
        assert other.get(low) is not None  # the locked low-score item survived
        assert other.get(mid) is None  # the next lowest went instead
    assert not sp.is_locked(low)


def test_enospc_evicts_and_retries_once(tmp_path, monkeypatch):
    sp = Spool(tmp_path)
    low = sp.put(frame(1), meta(0.01))
    high = sp.put(frame(2), meta(0.99))
    real = spool_mod._write_atomic
    calls = {"n": 0}

    def full_once(directory, name, data):
        calls["n"] += 1
        if calls["n"] == 2:  # fail in the middle of the item: one file already written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(directory, name, data)

    monkeypatch.setattr(spool_mod, "_write_atomic", full_once)
    new = sp.put(frame(3), meta(0.5))
    assert sp.get(new) is not None and sp.get(high) is not None
    assert sp.get(low) is None and sp.evicted == 1
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_enospc_twice_raises_and_leaves_nothing_partial(tmp_path, monkeypatch):
    sp = Spool(tmp_path)
    keep = sp.put(frame(1), meta(0.5))
    real = spool_mod._write_atomic

    def always_full(directory, name, data):
        if "rgb" in name:
            real(directory, name, data)  # a file lands, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(directory, name, data)

    monkeypatch.setattr(spool_mod, "_write_atomic", always_full)
    with pytest.raises(DataError, match="disk full"):
        sp.put(frame(2), meta(0.9))
    # the only other item was evicted to make room; no partial files of the failed item remain
    assert sp.get(keep) is None
    assert os.listdir(tmp_path) == [] or all(n.startswith(".") for n in os.listdir(tmp_path))


def test_invalid_metadata_is_refused_before_writing(tmp_path):
    sp = Spool(tmp_path)
    with pytest.raises(DataError, match="device_id"):
        sp.put(frame(1), dict(captured_at=captured_at(), width=4, height=4))
    with pytest.raises(DataError, match="rgb"):
        sp.put({"depth.png": (b"x", "depth_gt")}, meta())
    assert os.listdir(tmp_path) == []


def test_cleanup_orphans_removes_old_partials_only(tmp_path):
    sp = Spool(tmp_path)
    good = sp.put(frame(1), meta())
    orphan = tmp_path / f"{'d' * 64}.rgb.png"
    orphan.write_bytes(b"x")
    temp = tmp_path / f".tmp-{'e' * 64}.json.1.abc"
    temp.write_bytes(b"y")
    fresh = tmp_path / f"{'f' * 64}.rgb.png"
    fresh.write_bytes(b"z")
    old = time.time() - 3600
    for p in (orphan, temp, tmp_path / f"{good}.rgb.png"):
        os.utime(p, (old, old))
    assert sp.cleanup_orphans(min_age_s=60) == 2
    assert fresh.exists() and not orphan.exists() and not temp.exists()
    assert sp.get(good) is not None


def test_move_to_failed_keeps_files_and_reason(tmp_path):
    sp = Spool(tmp_path)
    item_id = sp.put(frame(1), meta())
    sp.move_to_failed(item_id, {"status": 415, "reason": "not an image"})
    assert sp.items() == []
    failed = tmp_path / "failed"
    assert (failed / f"{item_id}.rgb.png").exists() and (failed / f"{item_id}.json").exists()
    assert json.loads((failed / f"{item_id}.failed.json").read_text())["status"] == 415


def test_meta_round_trip_uses_schema_alias(tmp_path):
    sp = Spool(tmp_path)
    item_id = sp.put(frame(1), meta())
    doc = json.loads((tmp_path / f"{item_id}.json").read_text())
    assert doc["schema"] == "edgedepth.spool/1" and "schema_" not in doc
    assert SpoolMeta.model_validate(doc).id == item_id


def test_failed_items_count_in_the_cap_and_go_first_oldest_first(tmp_path):
    probe = Spool(tmp_path / "probe")
    probe.put(frame(0), meta())
    one = probe.items()[0].nbytes
    sp = Spool(tmp_path / "s")
    rejected = []
    for i in range(3):  # three items the server refused for good, the first one rejected longest ago
        item_id = sp.put(frame(20 + i), meta(0.99))
        sp.move_to_failed(item_id, {"status": 415, "reason": "not an image"})
        reason = tmp_path / "s" / "failed" / f"{item_id}.failed.json"
        os.utime(reason, (time.time() - 1000 + i, time.time() - 1000 + i))
        rejected.append(item_id)
    live = [sp.put(frame(30 + i), meta(0.1)) for i in range(2)]
    assert sp.total_bytes() > 5 * one  # failed/ is part of the spool's footprint
    capped = Spool(tmp_path / "s", max_bytes=int(one * 4.5))  # e.g. the live loop with its cap
    capped.put(frame(40), meta(0.5))
    left_failed = {p.name[:64] for p in (tmp_path / "s" / "failed").iterdir()}
    assert left_failed == {rejected[2]}  # the two oldest rejections went, and no live item did
    assert {it.id for it in capped.items()} >= set(live)
    assert capped.evicted == 0 and capped.evicted_failed == 2
    assert capped.total_bytes() <= capped.max_bytes


def test_a_full_disk_evicts_failed_items_before_live_ones(tmp_path, monkeypatch):
    sp = Spool(tmp_path)
    low = sp.put(frame(1), meta(0.01))
    bad = sp.put(frame(2), meta(0.99))
    sp.move_to_failed(bad, {"status": 415, "reason": "x"})
    real = spool_mod._write_atomic
    calls = {"n": 0}

    def flaky(directory, name, data):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(directory, name, data)

    monkeypatch.setattr(spool_mod, "_write_atomic", flaky)
    new = sp.put(frame(3), meta(0.5))
    assert sp.get(new) is not None and sp.get(low) is not None  # the live low-score item stayed
    assert not list((tmp_path / "failed").glob(f"{bad}.*"))


def test_spool_cap_is_in_mib():
    from edgedepth.errors import ConfigError

    assert spool_mod.cap_bytes(1.5) == 1572864 and spool_mod.cap_bytes(None) is None
    with pytest.raises(ConfigError, match="MiB"):
        spool_mod.cap_bytes(0)


def test_both_commands_take_the_spool_cap_in_mib():
    from click.testing import CliRunner

    from edgedepth.cli.run import run
    from edgedepth.cli.upload import upload

    for cmd in (run, upload):
        out = CliRunner().invoke(cmd, ["--help"], terminal_width=200)
        text = " ".join(out.output.split())
        assert "--spool-max-mb" in text and "Spool size cap in MiB" in text or "Spool disk cap in MiB" in text
