#!/usr/bin/env python
"""Upload daemon figures on loopback: throughput vs a bare client, bandwidth cap, idle CPU, memory.

    python scripts/bench_upload.py                       # all four
    python scripts/bench_upload.py --only throughput --frames 200
    python scripts/bench_upload.py --only memory --memory-frames 10000

throughput  the same server (`edgedepth ingest serve`) receives N frames from a bare httpx client
            (bodies encoded in memory beforehand, one keep-alive connection, sequential POSTs) and N
            other frames of the same sizes from the daemon (`edgedepth upload --once`), in 4
            alternating rounds (bare, daemon, bare, ...); rate of each over the whole run.
            The daemon's time runs from its "queued" log line to its "final" line (no interpreter start).
bandwidth   the daemon with --max-bandwidth; rate = bytes_sent_total slope from its /metrics endpoint
            over the steady part of the upload, compared with the cap.
idle        an idle daemon (empty spool, server up): CPU seconds (utime+stime from /proc) over --idle-s.
memory      RSS of the daemon (/proc/PID/status VmRSS) while it uploads --memory-frames small frames,
            sampled as the spool drains; the figure is the growth from the first to the last quarter.
            Uses the scripted stdlib server (tests/fleet/stub_server.py), which answers in ~1 ms, so
            10,000 frames take a minute instead of the real server's fsync-bound ~7 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "fleet"))
import httpx  # noqa: E402
import uploadkit as uk  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def start_server(store: Path, port: int, log: Path) -> subprocess.Popen:
    argv = [uk.PY, "-m", "edgedepth", "ingest", "serve", "--store", str(store), "--host", "127.0.0.1",
            "--port", str(port), "--rate", "100000", "--burst", "100000", "--log-level", "warning"]
    p = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=uk.env(), cwd=uk.REPO)
    uk.wait_http(f"http://127.0.0.1:{port}/healthz", proc=p, timeout=60)
    return p


def token_file(work: Path, store: Path) -> Path:
    tok = work / "token"
    tok.write_text(uk.add_device(store, "dev-1") + "\n")
    tok.chmod(0o600)
    return tok


def log_time(line: str) -> float:
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    m = re.search(rf"^edgedepth_upload_{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def bench_throughput(work: Path, frames: int, h: int, w: int, rounds: int = 4) -> dict:
    from edgedepth.fleet.wire import encode_item
    from edgedepth.spool import Spool

    store = work / "store"
    tok = token_file(work, store)
    port = uk.free_port()
    server = start_server(store, port, work / "server.log")
    rounds = max(1, min(rounds, frames // 10))
    per = frames // rounds
    frames = per * rounds
    bare_s = daemon_s = 0.0
    bare_bytes = daemon_bytes = left = 0
    try:
        client = httpx.Client(headers={"Authorization": f"Bearer {tok.read_text().strip()}"}, timeout=60)
        # alternate rounds (bare, daemon, bare, daemon, ...) so that the load of a shared machine, which
        # drifts during a run, weighs on both sides alike
        for k in range(rounds):
            bare_spool, daemon_spool = work / f"bare{k}", work / f"spool{k}"
            uk.make_frames(bare_spool, per, seed=1000 + k, h=h, w=w)
            uk.make_frames(daemon_spool, per, seed=2000 + k, h=h, w=w)
            bodies = [(it.id, *encode_item(it)) for it in Spool(bare_spool).items()]
            bare_bytes += sum(len(b) for _, b, _ in bodies)
            daemon_bytes += sum(len(encode_item(it)[0]) for it in Spool(daemon_spool).items())
            t0 = time.perf_counter()
            for item_id, body, sha in bodies:
                r = client.post(f"http://127.0.0.1:{port}/v1/items/{item_id}", content=body,
                                headers={"X-Edgedepth-Body-Sha256": sha, "Content-Type": "application/x-tar"})
                if r.status_code != 201:
                    raise RuntimeError(f"bare client: HTTP {r.status_code} {r.text}")
            bare_s += time.perf_counter() - t0
            r = subprocess.run(uk.daemon_cmd(daemon_spool, port, tok, "--once", "--once-timeout", "600"),
                               capture_output=True, text=True, env=uk.env(), cwd=uk.REPO)
            if r.returncode != 0:
                raise RuntimeError(f"daemon exited {r.returncode}: {r.stderr[-2000:]}")
            lines = r.stderr.splitlines()
            t_start = log_time(next(ln for ln in lines if "new spool items" in ln))
            t_end = log_time(next(ln for ln in lines if " final: " in ln))
            daemon_s += t_end - t_start
            left += uk.spool_item_count(daemon_spool)
        client.close()
    finally:
        uk.stop(server)
    res = {"frames": frames, "body_kb": round(bare_bytes / frames / 1024, 1),
           "bare_items_s": frames / bare_s, "daemon_items_s": frames / daemon_s,
           "bare_MB_s": bare_bytes / bare_s / 1e6, "daemon_MB_s": daemon_bytes / daemon_s / 1e6,
           "daemon_left_in_spool": left}
    res["ratio"] = res["daemon_items_s"] / res["bare_items_s"]
    print(f"throughput: {frames} frames of {res['body_kb']} KiB, same server: bare client "
          f"{res['bare_items_s']:.1f} items/s ({res['bare_MB_s']:.2f} MB/s), daemon "
          f"{res['daemon_items_s']:.1f} items/s ({res['daemon_MB_s']:.2f} MB/s) -> ratio {res['ratio']:.2f} "
          f"(target >= 0.7); spool left {left}", flush=True)
    return res


def bench_bandwidth(work: Path, cap: str, seconds: float) -> dict:
    from edgedepth.fleet.ratelimit import parse_bandwidth
    from edgedepth.spool import Spool, captured_at

    rate = parse_bandwidth(cap)
    store = work / "store"
    tok = token_file(work, store)
    port, mport = uk.free_port(), uk.free_port()
    server = start_server(store, port, work / "server.log")
    spool = work / "spool"
    sp = Spool(spool)
    total = int(rate * (seconds + 4))
    per = 400_000
    for i in range(max(1, total // per)):
        sp.put({"rgb.png": (uk.png_bytes(i, 64, 64) + os.urandom(per), "rgb")},
               dict(device_id="dev-1", captured_at=captured_at(), score=0.5, width=64, height=64))
    argv = uk.daemon_cmd(spool, port, tok, "--max-bandwidth", cap, "--metrics-port", str(mport))
    d = subprocess.Popen(argv, stdout=open(work / "daemon.log", "ab"), stderr=subprocess.STDOUT, env=uk.env(),
                         cwd=uk.REPO)
    try:
        uk.wait_http(f"http://127.0.0.1:{mport}/healthz", proc=d)
        while metric(mport, "bytes_sent_total") < rate * 0.5:  # past start-up and the first burst
            time.sleep(0.05)
        b0, t0 = metric(mport, "bytes_sent_total"), time.perf_counter()
        time.sleep(seconds)
        b1, t1 = metric(mport, "bytes_sent_total"), time.perf_counter()
    finally:
        uk.stop(d)
        uk.stop(server)
    measured = (b1 - b0) / (t1 - t0)
    res = {"cap_B_s": rate, "measured_B_s": measured, "ratio": measured / rate}
    print(f"bandwidth cap: --max-bandwidth {cap} ({rate / 1e6:.3f} MB/s): measured {measured / 1e6:.3f} MB/s "
          f"over {t1 - t0:.1f} s -> {100 * (res['ratio'] - 1):+.1f}% (target within +-10%)", flush=True)
    return res


def bench_idle(work: Path, seconds: float) -> dict:
    store = work / "store"
    tok = token_file(work, store)
    port = uk.free_port()
    server = start_server(store, port, work / "server.log")
    spool = work / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    argv = [uk.PY, "-m", "edgedepth", "upload", "--spool", str(spool), "--server", f"http://127.0.0.1:{port}",
            "--token-file", str(tok)]  # the defaults a device runs with (1 s poll, 60 s rescan)
    d = subprocess.Popen(argv, stdout=open(work / "daemon.log", "ab"), stderr=subprocess.STDOUT, env=uk.env(),
                         cwd=uk.REPO)
    try:
        time.sleep(3.0)  # start-up done
        c0, t0 = cpu_seconds(d.pid), time.perf_counter()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(d.pid), time.perf_counter()
    finally:
        uk.stop(d)
        uk.stop(server)
    res = {"idle_s": t1 - t0, "cpu_s": c1 - c0, "cpu_pct": 100 * (c1 - c0) / (t1 - t0)}
    print(f"idle: daemon used {res['cpu_s']:.2f} CPU s in {res['idle_s']:.0f} s idle = "
          f"{res['cpu_pct']:.3f}% of one core (default settings: 1 s poll, 60 s rescan)", flush=True)
    return res


def bench_memory(work: Path, frames: int) -> dict:
    port = uk.free_port()
    stub = uk.start_stub(work / "stub-store", port)
    tok = work / "token"
    tok.write_text("secret\n")
    tok.chmod(0o600)
    spool = work / "spool"
    t0 = time.perf_counter()
    from edgedepth.spool import Spool, captured_at

    sp = Spool(spool)
    rgb = uk.png_bytes(0, 8, 8)
    for i in range(frames):
        sp.put({"rgb.png": (rgb + i.to_bytes(4, "big"), "rgb")},
               dict(device_id="dev-1", captured_at=captured_at(), score=(i % 97) / 97, width=8, height=8))
    print(f"memory: spooled {frames} small frames in {time.perf_counter() - t0:.0f} s", flush=True)
    d = subprocess.Popen(uk.daemon_cmd(spool, port, tok, "--stats-interval", "30"),
                         stdout=open(work / "daemon.log", "ab"), stderr=subprocess.STDOUT, env=uk.env(),
                         cwd=uk.REPO)
    samples: List[tuple] = []
    t0 = time.perf_counter()
    try:
        while True:
            left = uk.spool_item_count(spool)
            samples.append((frames - left, rss_mb(d.pid)))
            if left == 0 or d.poll() is not None or time.perf_counter() - t0 > 1800:
                break
            time.sleep(1.0)
        time.sleep(1.0)
        samples.append((frames - uk.spool_item_count(spool), rss_mb(d.pid)))
    finally:
        uk.stop(d)
        uk.stop(stub)
    dt = time.perf_counter() - t0
    done = [s for s in samples if s[0] > 0]
    q = max(1, len(done) // 4)
    first, last = sum(r for _, r in done[:q]) / q, sum(r for _, r in done[-q:]) / q
    res = {"frames": frames, "delivered": samples[-1][0], "seconds": dt, "rss_first_quarter_mb": first,
           "rss_last_quarter_mb": last, "rss_max_mb": max(r for _, r in samples), "growth_mb": last - first}
    marks = [samples[min(len(samples) - 1, int(k * (len(samples) - 1) / 4))] for k in range(5)]
    print("memory: RSS by frames delivered: " + ", ".join(f"{n}: {r:.1f} MB" for n, r in marks), flush=True)
    print(f"memory: {res['delivered']}/{frames} delivered in {dt:.0f} s; RSS first quarter {first:.1f} MB, "
          f"last quarter {last:.1f} MB, growth {res['growth_mb']:+.1f} MB, max {res['rss_max_mb']:.1f} MB",
          flush=True)
    return res


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["throughput", "bandwidth", "idle", "memory"], action="append")
    ap.add_argument("--frames", type=int, default=200, help="throughput: frames per client")
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--cap", default="2MB/s", help="bandwidth: the --max-bandwidth to check")
    ap.add_argument("--cap-seconds", type=float, default=10.0)
    ap.add_argument("--idle-s", type=float, default=60.0)
    ap.add_argument("--memory-frames", type=int, default=10000)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="edgedepth-bench-"))
    todo = args.only or ["throughput", "bandwidth", "idle", "memory"]
    results = {}
    for name in todo:
        work = base / name
        work.mkdir(parents=True, exist_ok=True)
        if name == "throughput":
            results[name] = bench_throughput(work, args.frames, args.height, args.width)
        elif name == "bandwidth":
            results[name] = bench_bandwidth(work, args.cap, args.cap_seconds)
        elif name == "idle":
            results[name] = bench_idle(work, args.idle_s)
        else:
            results[name] = bench_memory(work, args.memory_frames)
    print(f"workdir {base}")
    from edgedepth.bench.record import figures_from_dict, record_results

    record_results("bench_upload", "Upload daemon overhead",
                   figures_from_dict(json.loads(json.dumps(results, default=float))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
