#!/usr/bin/env python
"""Fault injection for the upload path: SIGKILL the daemon and the ingest server at random moments.

A writer spools N frames over the run (like the live loop), the upload daemon (`edgedepth upload`) and
the ingest server (`edgedepth ingest serve`) run as real processes on 127.0.0.1, and a chaos schedule
SIGKILLs each process at random moments and restarts it, plus one window where the server is down.
Then both stay up until the spool drains, and the store is checked:
exactly N items, every file byte-identical (SHA-256), no extra or duplicate items, the spool empty.

    python scripts/fault_inject.py --frames 500 --daemon-kills 20 --server-kills 20 --outage 8

With --fill-spool-mib M (root only) the spool lives on an M MiB tmpfs that fills up: the server stays
down until the writer finds the disk full, a ballast file then takes every byte left, and from there on
the writer waits for room (instead of evicting) while the daemon, killed and restarted like the rest,
must upload through a full disk, its job table included, so that every frame gets through:

    python scripts/fault_inject.py --frames 500 --daemon-kills 20 --server-kills 20 --fill-spool-mib 8

Prints one summary line per figure and exits 1 if anything is lost, corrupt or duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "fleet"))
import uploadkit as uk  # noqa: E402

from edgedepth.errors import DataError  # noqa: E402
from edgedepth.spool import Spool, captured_at  # noqa: E402


class Proc:
    """A restartable subprocess with its log file."""

    def __init__(self, name: str, argv, log_path: Path, health: Optional[str] = None):
        self.name, self.argv, self.log_path, self.health = name, argv, log_path, health
        self.proc: Optional[subprocess.Popen] = None
        self.kills = 0
        self.starts = 0

    def start(self, wait: bool = True) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     env=uk.env(), cwd=uk.REPO)
        self.starts += 1
        if wait and self.health:
            uk.wait_http(self.health, timeout=30, proc=self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> Optional[int]:
        return uk.stop(self.proc, signal.SIGTERM, timeout=30)


def store_contents(store: Path) -> Dict[str, Dict[str, str]]:
    """id -> {file name: sha256} of every committed item in a local store."""
    out = {}
    for meta_path in (store / "items").glob("*/*/meta.json"):
        d = meta_path.parent
        out[d.name] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                       for p in d.iterdir() if p.name != "meta.json"}
    return out


def leftover_files(spool: Path) -> list:
    """Item, orphan and temp files still in the spool (not its .queue/.locks folders or failed/)."""
    return sorted(n for n in os.listdir(spool)
                  if (not n.startswith(".") or n.startswith(".tmp-")) and n != "failed")


class WaitingSpool(Spool):
    """The writer of the full-disk run: on a full disk it evicts nothing, so a put fails and is retried."""

    def _evict(self, need_bytes: int, protect, at_least_one: bool = False) -> int:
        return 0


def put_waiting(spool: WaitingSpool, i: int, seed: int, h: int, w: int, waits: list,
                wait: bool = True) -> Dict[str, Dict[str, str]]:
    """Spool frame i (rgb + depth PNG), waiting while the disk is full (without `wait`: {} at once);
    returns {id: {name: sha256}}."""
    import cv2
    import numpy as np

    rgb = uk.png_bytes(seed * 100003 + i, h, w)
    ok, dbuf = cv2.imencode(".png", np.full((h, w), 1000 + i % 5000, np.uint16))
    files = {"rgb.png": (rgb, "rgb"), "depth.png": (dbuf.tobytes(), "depth_sensor", 0, "mm_uint16")}
    meta = dict(device_id="dev-1", captured_at=captured_at(), score=float(i % 17) / 17, width=w, height=h,
                labels=["depth_sensor"])
    while True:
        try:
            item_id = spool.put(files, meta)
            break
        except DataError as exc:
            if "disk full" not in str(exc):
                raise
            waits[0] += 1
            if not wait:
                return {}
            time.sleep(0.05)
    return {item_id: {name: hashlib.sha256(spec[0]).hexdigest() for name, spec in files.items()}}


def fill_with_ballast(path: Path) -> int:
    """Write zeros to `path` until the filesystem is full; returns the bytes written."""
    written = 0
    block = b"\0" * 4096
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written


@contextlib.contextmanager
def tmpfs(mountpoint: Path, mib: float) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(mib * 1024)}k", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def index_rows(store: Path) -> int:
    db = store / "index.db"
    if not db.exists():
        return -1
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM items").fetchone()[0]
    finally:
        con.close()


def run(frames: int, daemon_kills: int, server_kills: int, outage_s: float, workdir: Path, seed: int = 0,
        min_gap: float = 0.15, max_gap: float = 0.9, drain_timeout: float = 300.0,
        quiet: bool = False, fill_mib: Optional[float] = None) -> dict:
    if fill_mib:
        with tmpfs(workdir / "spoolfs", fill_mib) as fs:
            return _run(frames, daemon_kills, server_kills, outage_s, workdir, seed, min_gap, max_gap,
                        drain_timeout, quiet, fs)
    return _run(frames, daemon_kills, server_kills, outage_s, workdir, seed, min_gap, max_gap, drain_timeout,
                quiet, None)


def _run(frames: int, daemon_kills: int, server_kills: int, outage_s: float, workdir: Path, seed: int,
         min_gap: float, max_gap: float, drain_timeout: float, quiet: bool, fill_fs: Optional[Path]) -> dict:
    rng = random.Random(seed)
    spool = (fill_fs or workdir) / "spool"
    store = workdir / "store"
    token = uk.add_device(store, "dev-1")
    tok = workdir / "token"
    tok.write_text(token + "\n")
    tok.chmod(0o600)
    port = uk.free_port()
    server = Proc("server", [uk.PY, "-m", "edgedepth", "ingest", "serve", "--store", str(store), "--host",
                             "127.0.0.1", "--port", str(port), "--rate", "100000", "--burst", "100000"],
                  workdir / "server.log", health=f"http://127.0.0.1:{port}/healthz")
    daemon = Proc("daemon", uk.daemon_cmd(spool, port, tok, "--rescan-interval", "5"), workdir / "daemon.log")

    def say(msg: str) -> None:
        if not quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # the writer: the first half of the frames at once, the rest spread over the chaos phase
    expected: Dict[str, Dict[str, str]] = {}
    writer_done = threading.Event()
    chaos_estimate = (daemon_kills + server_kills) * (min_gap + max_gap) / 2 + outage_s + server_kills * 1.0
    waits = [0]  # puts refused for a full disk (full-disk run)
    fill: Dict[str, object] = {}
    t0 = time.time()
    if fill_fs is None:
        first = frames // 2
        expected.update(uk.make_frames(spool, first, seed=seed))
    else:
        # the server is down while the writer spools until the disk is full; a ballast takes the rest
        wspool = WaitingSpool(spool)
        logging.getLogger("edgedepth.spool").setLevel(logging.ERROR)  # its "disk full" lines, thousands
        daemon.start(wait=False)
        while "upload daemon started" not in daemon.log_path.read_text(errors="replace"):
            time.sleep(0.05)  # running before the disk fills, as on a device where it starts at boot
        first = 0
        while first < frames:
            got = put_waiting(wspool, first, seed, 96, 128, waits, wait=False)
            if not got:
                break
            expected.update(got)
            first += 1
        fill["frames_when_full"] = first
        fill["ballast_bytes"] = fill_with_ballast(fill_fs / "ballast")
        fill["free_bytes_after_ballast"] = os.statvfs(fill_fs).f_bavail * os.statvfs(fill_fs).f_frsize
        say(f"spool disk full after {first} frames; ballast of {fill['ballast_bytes']} bytes written")

    def writer() -> None:
        rest = frames - first
        for i in range(rest):
            if fill_fs is None:
                got = uk.make_frames(spool, 1, seed=seed * 7919 + 1 + i)
            else:
                got = put_waiting(wspool, first + i, seed, 96, 128, waits)
            expected.update(got)
            time.sleep(max(0.0, chaos_estimate / max(1, rest)) * rng.uniform(0.5, 1.5))
        writer_done.set()

    server.start()
    if not daemon.alive():
        daemon.start(wait=False)
    wt = threading.Thread(target=writer, daemon=True)
    wt.start()
    events = ["daemon"] * daemon_kills + ["server"] * server_kills
    rng.shuffle(events)
    outage_at = len(events) // 2
    for k, who in enumerate(events):
        time.sleep(rng.uniform(min_gap, max_gap))
        if k == outage_at and outage_s > 0:
            server.kill()
            say(f"outage: server down for {outage_s:.1f} s")
            time.sleep(outage_s)
            server.start()
        p = daemon if who == "daemon" else server
        p.kill()
        time.sleep(rng.uniform(0.0, 0.3))
        p.start(wait=who == "server")
        if not daemon.alive():  # e.g. it could not start; the drain phase restarts it the same way
            daemon.start(wait=False)
        say(f"killed and restarted {who} ({p.kills}); spool holds {uk.spool_item_count(spool)} items")
    writer_done.wait(600)
    chaos_s = time.time() - t0
    say(f"chaos over after {chaos_s:.1f} s; waiting for the spool to drain")
    t1 = time.time()
    while time.time() - t1 < drain_timeout:
        if not daemon.alive():
            daemon.start(wait=False)
        if uk.spool_item_count(spool) == 0 and len(store_contents(store)) >= len(expected):
            break
        time.sleep(0.2)
    # a daemon killed in the middle of deleting a delivered item leaves files without metadata; it
    # finishes such deletes at its next full rescan (every 5 s here) once they are 10 s old
    while time.time() - t1 < drain_timeout and leftover_files(spool):
        if not daemon.alive():
            daemon.start(wait=False)
        time.sleep(0.5)
    drain_s = time.time() - t1
    # a SIGTERM that lands while a just-restarted daemon is still importing kills it the default way;
    # wait for its start-up line so the graceful stop is what gets checked
    t2 = time.time()
    while time.time() - t2 < 30 and daemon.alive() and \
            daemon.log_path.read_text(errors="replace").count("upload daemon started") < daemon.starts:
        time.sleep(0.1)
    daemon_rc = daemon.stop()
    server.stop()
    got = store_contents(store)
    corrupt = sorted(i for i in got if i in expected and got[i] != expected[i])
    lost = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    leftover = leftover_files(spool)
    failed_dir = spool / "failed"
    failed = sorted(failed_dir.iterdir()) if failed_dir.is_dir() else []
    log_text = (workdir / "server.log").read_text(errors="replace")
    result = {
        "frames": frames, "spooled": len(expected), "stored": len(got),
        "delivered_intact": len(got) - len(corrupt) - len(extra), "lost": len(lost),
        "corrupt": len(corrupt), "extra": len(extra),
        "index_rows": index_rows(store), "spool_leftover_files": len(leftover), "failed_items": len(failed),
        "daemon_kills": daemon.kills, "server_kills": server.kills - (1 if outage_s > 0 else 0),
        "outage_s": outage_s, "duplicate_answers": log_text.count('" 200 OK'),
        "chaos_s": round(chaos_s, 1), "drain_s": round(drain_s, 1), "daemon_exit": daemon_rc,
    }
    if fill_fs is not None:
        dlog = daemon.log_path.read_text(errors="replace")
        result.update(fill)
        result.update({
            "spool_fs_mib": round(os.statvfs(fill_fs).f_blocks * os.statvfs(fill_fs).f_frsize / 2**20, 1),
            "writer_waits_disk_full": waits[0],
            "daemon_reserve_releases": dlog.count("released the"),
            "daemon_table_full_notices": dlog.count("cannot be written"),
            "daemon_starts": daemon.starts,
            "daemon_start_failures": dlog.count("cannot be opened"),
        })
    # delivery verdict: the store holds every frame once, intact, and the spool is empty. The server's
    # SQLite index is derived data (rebuildable from the items), reported separately.
    result["ok"] = (not lost and not corrupt and not extra and not leftover and not failed
                    and len(got) == frames == len(expected))
    result["index_ok"] = result["index_rows"] == frames
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--daemon-kills", type=int, default=20)
    ap.add_argument("--server-kills", type=int, default=20)
    ap.add_argument("--outage", type=float, default=8.0, help="seconds the server stays down once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="keep the spool, store and logs here")
    ap.add_argument("--fill-spool-mib", type=float, default=None,
                    help="put the spool on a tmpfs of this many MiB that fills up (needs root)")
    args = ap.parse_args()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="edgedepth-fault-"))
    workdir.mkdir(parents=True, exist_ok=True)
    res = run(args.frames, args.daemon_kills, args.server_kills, args.outage, workdir, seed=args.seed,
              fill_mib=args.fill_spool_mib)
    print(json.dumps(res, indent=1))
    print(f"delivered {res['delivered_intact']}/{res['frames']} exactly once, {res['corrupt']} corrupt, "
          f"{res['lost']} lost, {res['extra']} unexpected; {res['daemon_kills']} daemon kills, "
          f"{res['server_kills']} server kills + one {res['outage_s']:.1f} s outage; spool leftover "
          f"{res['spool_leftover_files']} files; workdir {workdir}")
    if args.fill_spool_mib:
        print(f"full spool disk ({res['spool_fs_mib']} MiB tmpfs): full after {res['frames_when_full']} "
              f"frames, "
              f"ballast {res['ballast_bytes']} B, {res['writer_waits_disk_full']} writer puts refused for a "
              f"full disk, {res['daemon_reserve_releases']} job-table reserve releases, "
              f"{res['daemon_start_failures']} daemon start failures in {res['daemon_starts']} starts")
    if not res["index_ok"]:
        print(f"WARNING: the server's index has {res['index_rows']} rows for {res['stored']} stored items "
              "(server side: an item committed just before a kill, then confirmed as a duplicate, is not "
              "indexed)")
    print("PASS" if res["ok"] else "FAIL")
    from edgedepth.bench.record import figures_from_dict, record_results

    record_results("fault_inject", "Fleet upload under crashes and outages",
                   figures_from_dict(json.loads(json.dumps(res, default=str))))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
