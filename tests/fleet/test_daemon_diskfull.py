"""Upload daemon on a full spool disk: a real daemon process, a real tmpfs that is full to the last byte.

Sending needs no disk space and every confirmed upload frees some, so the daemon must keep uploading
when its job table cannot be written: housekeeping errors never block sending, and a small reserve file
next to the table is given up so the table can still be opened and written.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import uploadkit as uk  # noqa: E402

from edgedepth.fleet.diskfull import Reserve, is_disk_full, write_or_release  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs (needs root: skipped elsewhere)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> int:
    written = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return written


def test_a_full_spool_disk_does_not_stop_the_daemon(small_fs, tmp_path):
    spool = small_fs / "spool"
    tok = tmp_path / "token"
    tok.write_text("secret\n")
    tok.chmod(0o600)
    port = uk.free_port()
    first = uk.make_frames(spool, 10, seed=1)
    # a first run with no server: the job table is created and holds the 10 items; its reserve is written
    r = subprocess.run(uk.daemon_cmd(spool, port, tok, "--once", "--once-timeout", "1"), capture_output=True,
                       text=True, env=uk.env(), cwd=uk.REPO, timeout=60)
    assert r.returncode == 3, r.stderr[-2000:]
    # the live loop spools 10 more items, then the disk fills up to the last byte
    second = uk.make_frames(spool, 10, seed=2)
    fill(small_fs / "ballast")
    assert os.statvfs(small_fs).f_bavail == 0
    stub = uk.start_stub(tmp_path / "store", port)
    try:
        r = subprocess.run(uk.daemon_cmd(spool, port, tok, "--once", "--once-timeout", "60"),
                           capture_output=True, text=True, env=uk.env(), cwd=uk.REPO, timeout=90)
    finally:
        stub.kill()
        stub.wait(5)
    assert r.returncode == 0, r.stderr[-3000:]
    stored = {d.name for d in (tmp_path / "store").iterdir() if (d / "done").exists()}
    assert stored == set(first) | set(second)  # the 10 already queued and the 10 found on a full disk
    assert uk.spool_item_count(spool) == 0
    assert "released the" in r.stderr  # the reserve gave the job table its room


def test_housekeeping_errors_never_block_sending(tmp_path, monkeypatch):
    """The periodic scan's table write fails every time (disk full); queued items still go out, and the
    scan timer advances although the scan never succeeds."""
    from edgedepth.fleet.daemon import Daemon, DaemonConfig
    from edgedepth.fleet.queue import JobQueue
    from edgedepth.spool import Spool

    spool = tmp_path / "spool"
    frames = uk.make_frames(spool, 6)
    q = JobQueue(spool / ".queue" / "jobs.sqlite")
    q.add_many([(it.id, it.score, it.nbytes, it.meta.captured_at) for it in Spool(spool).items()][:4])
    q.close()
    calls = {"add_many": 0}

    def full(self, rows):
        calls["add_many"] += 1
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(JobQueue, "add_many", full)
    from edgedepth.fleet import client as client_mod

    real_upload = client_mod.UploadClient.upload

    def slow_upload(self, *args, **kwargs):  # each upload outlasts the 0.05 s rescan interval
        time.sleep(0.1)
        return real_upload(self, *args, **kwargs)

    monkeypatch.setattr(client_mod.UploadClient, "upload", slow_upload)
    port = uk.free_port()
    stub = uk.start_stub(tmp_path / "store", port)
    try:
        cfg = DaemonConfig(spool=spool, server=f"http://127.0.0.1:{port}", token="secret", once=True,
                           once_timeout=8.0, poll_interval=0.05, rescan_interval=0.05, backoff_base=0.05,
                           backoff_max=0.2)
        d = Daemon(cfg)
        d._install_signal_handlers = lambda: None  # not the test runner's signals
        code = d.run()
    finally:
        stub.kill()
        stub.wait(5)
    stored = {p.name for p in (tmp_path / "store").iterdir() if (p / "done").exists()}
    assert len(stored) == 4 and stored <= set(frames)  # every queued item went out
    assert code == 0  # --once: the queue drained (the 2 unqueued items wait for a writable table)
    assert calls["add_many"] >= 3  # the scan kept being tried: its timer does not wait for success


def test_reserve_is_released_once_and_written_again(tmp_path):
    reserve = Reserve(tmp_path / "reserve", size=256 << 10)
    assert reserve.ensure() and reserve.held and (tmp_path / "reserve").stat().st_size == 256 << 10
    tries = []

    def write_once_room():
        tries.append(1)
        if reserve.held:
            raise sqlite3.OperationalError("database or disk is full")

    assert write_or_release(reserve, tmp_path, write_once_room) and len(tries) == 2
    assert not reserve.held and reserve.releases == 1
    assert not write_or_release(reserve, tmp_path, lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "x")))
    with pytest.raises(ValueError):  # anything but "disk full" propagates
        write_or_release(reserve, tmp_path, lambda: (_ for _ in ()).throw(ValueError("bug")))
    assert reserve.ensure() and reserve.held
    assert is_disk_full(OSError(errno.EDQUOT, "quota")) and not is_disk_full(OSError(errno.EIO, "io"))


def test_finalizer_deletes_confirmed_items_even_when_the_table_is_full(tmp_path, monkeypatch):
    from edgedepth.fleet.finalizer import Finalizer
    from edgedepth.fleet.queue import DONE, JobQueue

    spool = tmp_path / "spool"
    [item_id] = uk.make_frames(spool, 1)
    db = spool / ".queue" / "jobs.sqlite"
    q = JobQueue(db)
    q.add(item_id, 0.5, 1, "t")
    q.mark_uploading(item_id)
    full = threading.Event()
    full.set()
    real = JobQueue.mark_done

    def mark_done(self, i):
        if full.is_set():
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, i)

    monkeypatch.setattr(JobQueue, "mark_done", mark_done)
    monkeypatch.setattr(Finalizer, "RETRY_S", 0.05)
    fin = Finalizer(db, spool, threading.Lock())
    fin.submit(item_id)
    assert fin.wait_idle(10)
    assert uk.spool_item_count(spool) == 0  # deleted although 'done' could not be written
    assert item_id in fin.pending_ids()  # a scan must not call it gone meanwhile
    full.clear()
    for _ in range(200):
        if item_id not in fin.pending_ids():
            break
        threading.Event().wait(0.05)
    fin.close()
    assert q.get(item_id).state == DONE
    q.close()


def test_first_start_on_a_disk_too_full_for_the_job_table(small_fs, tmp_path):
    """No job table and no reserve yet, the disk full to the last byte: the daemon keeps its queue in
    memory, and uploads (which free the disk) go on."""
    spool = small_fs / "spool"
    tok = tmp_path / "token"
    tok.write_text("secret\n")
    tok.chmod(0o600)
    port = uk.free_port()
    frames = uk.make_frames(spool, 8)
    fill(small_fs / "ballast")
    stub = uk.start_stub(tmp_path / "store", port)
    try:
        r = subprocess.run(uk.daemon_cmd(spool, port, tok, "--once", "--once-timeout", "60"),
                           capture_output=True, text=True, env=uk.env(), cwd=uk.REPO, timeout=90)
    finally:
        stub.kill()
        stub.wait(5)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "keeping the queue in memory" in r.stderr
    assert {d.name for d in (tmp_path / "store").iterdir() if (d / "done").exists()} == set(frames)
    assert uk.spool_item_count(spool) == 0
