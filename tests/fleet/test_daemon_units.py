"""Daemon building blocks: job table transitions and recovery, tar wire format, token bucket, back-off."""

from __future__ import annotations

import hashlib
import io
import random
import sqlite3
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import uploadkit as uk  # noqa: E402

from edgedepth.errors import ConfigError  # noqa: E402
from edgedepth.fleet.daemon import backoff_delay  # noqa: E402
from edgedepth.fleet.queue import DONE, FAILED, GONE, QUEUED, UPLOADING, JobQueue  # noqa: E402
from edgedepth.fleet.ratelimit import TokenBucket, parse_bandwidth  # noqa: E402
from edgedepth.fleet.validate import parse_upload  # noqa: E402
from edgedepth.fleet.wire import (  # noqa: E402
    LocalCorruption,
    body_length,
    encode_files,
    encode_item,
    iter_body,
    members_of,
    prepare,
)
from edgedepth.spool import Spool  # noqa: E402


def test_queue_transitions_and_order(tmp_path):
    q = JobQueue(tmp_path / "q.sqlite")
    assert q.add("a" * 64, 0.2, 10, "2026-01-01T00:00:00.000Z")
    assert q.add("b" * 64, 0.9, 20, "2026-01-01T00:00:01.000Z")
    assert q.add("c" * 64, 0.9, 30, "2026-01-01T00:00:00.500Z")
    assert not q.add("a" * 64, 0.2, 10, "x")  # already queued: untouched
    assert q.next_ready().id == "c" * 64  # highest score, then oldest capture
    q.mark_uploading("c" * 64)
    assert q.next_ready().id == "b" * 64
    q.retry_later("b" * 64, 100.0, "HTTP 500")
    assert q.next_ready().id == "a" * 64  # b waits on its back-off
    job = q.get("b" * 64)
    assert job.state == QUEUED and job.attempts == 1 and job.check_server and job.last_error == "HTTP 500"
    q.mark_done("c" * 64)
    q.mark_failed("a" * 64, "HTTP 415: not an image")
    assert q.counts() == {QUEUED: 1, UPLOADING: 0, DONE: 1, FAILED: 1, GONE: 0}
    assert q.pending_bytes() == 20 and q.oldest_pending_age() >= 0
    assert q.next_attempt_time() > 0
    # a done item spooled again is queued again and flagged to ask the server first
    assert q.add("c" * 64, 0.9, 30, "y") and q.get("c" * 64).check_server
    q.close()


def test_queue_recovery_after_a_crash(tmp_path):
    path = tmp_path / "q.sqlite"
    q = JobQueue(path)
    q.add("a" * 64, 0.5, 1, "t")
    q.add("b" * 64, 0.5, 1, "t")
    q.mark_uploading("a" * 64)
    # no close(): the process dies here; a new process opens the same file
    q2 = JobQueue(path)
    assert q2.recover() == 1
    a = q2.get("a" * 64)
    assert a.state == QUEUED and a.check_server and not q2.get("b" * 64).check_server
    assert q2.counts()[UPLOADING] == 0
    mode = q2._db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = q2._db.execute("PRAGMA synchronous").fetchone()[0]
    assert mode == "wal" and sync == 2  # FULL
    ro = JobQueue(path, readonly=True)
    assert ro.counts()[QUEUED] == 2
    with pytest.raises(sqlite3.OperationalError):
        ro._db.execute("DELETE FROM jobs")


def test_queue_prunes_finished_rows_only(tmp_path):
    q = JobQueue(tmp_path / "q.sqlite")
    for c, state in zip("abcd", (DONE, GONE, FAILED, QUEUED)):
        q.add(c * 64, 0, 0, "t")
        if state == DONE:
            q.mark_done(c * 64)
        elif state == GONE:
            q.mark_gone(c * 64, "evicted")
        elif state == FAILED:
            q.mark_failed(c * 64, "bad")
    assert q.delete_finished(older_than_s=-1) == 2
    assert q.counts() == {QUEUED: 1, UPLOADING: 0, DONE: 0, FAILED: 1, GONE: 0}


def test_wire_body_is_a_ustar_tar_of_the_item_files(tmp_path):
    frames = uk.make_frames(tmp_path, 1)
    sp = Spool(tmp_path)
    [item] = sp.items()
    body, sha = encode_item(item)
    prep = prepare(item)
    assert prep.sha256 == sha and prep.length == len(body) == body_length(members_of(item))
    assert b"".join(iter_body(prep.members, 100)) == body  # chunking does not change the bytes
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert names == [f"{item.id}.json", f"{item.id}.depth.png", f"{item.id}.rgb.png"]
        assert all(m.isreg() and m.mtime == 0 and m.uid == 0 for m in members)
        got = {m.name[65:]: hashlib.sha256(tf.extractfile(m).read()).hexdigest() for m in members[1:]}
        assert tf.extractfile(members[0]).read() == item.json_path.read_bytes()
    assert got == frames[item.id]
    assert body[257:262] == b"ustar"  # POSIX USTAR magic in the first header
    # the in-memory encoder of the load generators: the same layout, and the server's parser accepts it
    files = {name: path.read_bytes()
             for name, path in item.paths.items()}
    kinds = {name: entry.kind for name, entry in item.meta.files.items()}
    item_id, mem = encode_files(files, kinds, device_id=item.meta.device_id,
                                captured_at="2026-11-24T18:00:00Z", width=item.meta.width,
                                height=item.meta.height)
    assert item_id == item.id and len(mem) % 512 == 0 and mem.endswith(b"\0" * 1024)
    with tarfile.open(fileobj=io.BytesIO(mem), mode="r:") as tf:
        assert [m.name for m in tf.getmembers()] == names
        contents = [tf.extractfile(m).read() for m in tf.getmembers()[1:]]
        assert contents == [files["depth.png"], files["rgb.png"]]
    parsed = parse_upload(item_id, mem)
    assert parsed.meta.id == item_id and parsed.files == files


def test_wire_detects_local_corruption(tmp_path):
    uk.make_frames(tmp_path, 1)
    [item] = Spool(tmp_path).items()
    p = item.paths["rgb.png"]
    data = bytearray(p.read_bytes())
    data[10] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(LocalCorruption, match="SHA-256"):
        prepare(item)


@pytest.mark.parametrize("text,value", [
    ("2MB/s", 2e6), ("500KiB/s", 512000), ("1.5 MiB", 1.5 * 1048576), ("250000", 250000.0),
    ("10kb/s", 10000.0), ("3Mbps", None), ("none", None), ("0", None), (None, None),
])
def test_parse_bandwidth(text, value):
    if text == "3Mbps":
        with pytest.raises(ConfigError):
            parse_bandwidth(text)
        return
    assert parse_bandwidth(text) == value


def test_token_bucket_paces_to_the_rate():
    now = [0.0]

    def sleep(s):
        now[0] += s

    tb = TokenBucket(1000.0, burst=100.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(100):
        tb.consume(50)  # 5000 bytes
    # burst of 100 up front, the other 4900 bytes at 1000 B/s
    assert abs(now[0] - 4.9) < 1e-6
    now[0] += 10.0  # idle: tokens refill only up to the burst
    t = now[0]
    tb.consume(300)
    assert abs((now[0] - t) - 0.2) < 1e-6


def test_backoff_full_jitter_is_bounded_and_grows():
    rng = random.Random(0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (5, 16.0), (30, 300.0), (1000, 300.0)]:
        xs = [backoff_delay(attempt, 1.0, 300.0, rng) for _ in range(300)]
        assert max(xs) <= ceiling and min(xs) >= 0.01
        assert max(xs) > 0.8 * ceiling  # full jitter spans the whole window


def _answer(code, body=b"", ctype="application/json"):
    import httpx

    return httpx.Response(code, headers={"Content-Type": ctype}, content=body)


def test_only_an_answer_naming_the_item_confirms_it():
    import json

    from edgedepth.fleet.client import DUPLICATE, STORED, UNCONFIRMED, classify

    iid = "a" * 64

    def kind(code, body, ctype="application/json"):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return classify(_answer(code, raw, ctype), iid).kind

    assert kind(201, {"id": iid, "stored": True, "duplicate": False}) == STORED
    assert kind(200, {"id": iid, "stored": True, "duplicate": True}) == DUPLICATE
    assert kind(200, b"<html>portal</html>", "text/html") == UNCONFIRMED
    assert kind(204, b"") == UNCONFIRMED
    assert kind(201, {"id": "b" * 64, "stored": True}) == UNCONFIRMED
    assert kind(201, {"id": iid, "stored": False}) == UNCONFIRMED
    assert kind(201, {"id": iid, "stored": "yes"}) == UNCONFIRMED
    assert kind(202, {"id": iid, "stored": True}) == UNCONFIRMED
    assert kind(201, [iid]) == UNCONFIRMED
    out = classify(_answer(201, b"<html>"), iid)
    assert not out.delivered and "is --server the ingest server?" in out.reason


def test_a_403_device_mismatch_is_told_apart_from_a_bad_token():
    import json

    from edgedepth.fleet.client import AUTH, DEVICE_MISMATCH, classify

    body = json.dumps({"error": "device_mismatch",
                       "detail": "metadata device_id 'cam' is not the token's device 'dev-2'"}).encode()
    out = classify(_answer(403, body), "a" * 64)
    assert out.kind == DEVICE_MISMATCH and "'dev-2'" in out.reason
    assert classify(_answer(401, b'{"error": "auth"}'), "a" * 64).kind == AUTH
    assert classify(_answer(403, b'{"error": "forbidden"}'), "a" * 64).kind == AUTH


def test_token_bucket_non_blocking_take():
    now = [0.0]
    tb = TokenBucket(2.0, burst=3.0, clock=lambda: now[0], sleep=lambda s: pytest.fail("must not sleep"))
    assert [tb.try_consume(1.0)[0] for _ in range(4)] == [True, True, True, False]
    ok, wait = tb.try_consume(1.0)
    assert not ok and abs(wait - 0.5) < 1e-9  # nothing taken by a refusal
    now[0] += 0.5
    assert tb.try_consume(1.0) == (True, 0.0)


def test_the_server_rate_limiter_is_the_same_token_bucket():
    from edgedepth.fleet.ratelimit_server import DeviceRateLimiter

    now = [0.0]
    lim = DeviceRateLimiter(rate=0.5, burst=2, clock=lambda: now[0])
    assert lim.take("a") == (True, 0) and lim.take("a") == (True, 0)
    assert lim.take("a") == (False, 2)  # one token in 2 s
    assert lim.take("b") == (True, 0)  # per device
    now[0] += 2.0
    assert lim.take("a") == (True, 0)
    assert all(isinstance(b, TokenBucket) for b in lim._buckets.values())
