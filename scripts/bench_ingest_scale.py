"""Ingest on several processes: `edgedepth ingest serve --workers N` (N = 1, 2, 4 by default) on one port,
all sharing one S3 prefix in a moto server started here, then a simulated fleet of many devices.

1. Scaling: for each N, K client threads (one keep-alive connection each) post the same number of new
   items; prints items/s, the ratio to N=1, and CPU seconds per item of the ingest processes, of moto (the
   S3 side: every item is 4 PUTs + 1 HEAD there) and of this process (the clients), to show where the
   time goes.
2. Fleet: D devices (own tokens) upload I items each through the N-worker server, with C connections at
   a time; every device also re-sends some of its items (a retry after a lost answer). Afterwards the
   items are counted from the store itself: every item stored exactly once, none lost.

    python scripts/bench_ingest_scale.py --items 300 --clients 8 --workers 1,2,4 --devices 1000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_ingest import free_port, make_body, run_pass, start_moto  # noqa: E402

from edgedepth.fleet.auth import DeviceRegistry  # noqa: E402

FAKE_AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
TICK = os.sysconf("SC_CLK_TCK")


def _children() -> dict:
    kids: dict = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            kids.setdefault(int(fields[1]), []).append(int(p.name))
    return kids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and every live descendant (from /proc)."""
    kids, total, todo = _children(), 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            pass
        todo.extend(kids.get(p, []))
    return total


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


class Ingest:
    """`edgedepth ingest serve --workers N` on a free port."""

    def __init__(self, store: str, endpoint: str, auth_db: Path, workers: int, env: dict) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgedepth", "ingest", "serve", "--store", store,
             "--endpoint-url", endpoint, "--auth-db", str(auth_db), "--port", str(self.port),
             "--workers", str(workers),
             "--rate", "100000", "--burst", "100000", "--min-free-mb", "0", "--max-concurrent", "64",
             "--manifest-every", "5", "--log-level", "warning"], cwd=ROOT, env=env)
        for _ in range(600):
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        time.sleep(1.0 if workers > 1 else 0.2)  # every worker up, not just the first

    def stop(self) -> None:
        self.proc.terminate()  # graceful: every worker writes its last manifest
        self.proc.wait(timeout=60)


def scaling(args, env, moto_pid, endpoint, s3, tmp) -> None:
    token = DeviceRegistry(tmp / "devices.db").add_device("bench-cam")
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"scaling: {args.items} new items of {width}x{height} per run, {args.clients} client threads, "
          f"moto S3, {os.cpu_count()} CPUs on this machine")
    base = None
    for n in [int(v) for v in args.workers.split(",")]:
        bucket = f"scale-{n}-{uuid.uuid4().hex[:6]}"
        s3.create_bucket(Bucket=bucket)
        bodies = [make_body(10_000 * n + i, width, height, "bench-cam") for i in range(args.items)]
        srv = Ingest(f"s3://{bucket}/ingest", endpoint, tmp / "devices.db", n, env)
        try:
            c_srv, c_moto, c_self = cpu_seconds(srv.proc.pid), cpu_seconds(moto_pid), self_cpu()
            wall, lat, codes = run_pass(srv.url, token, bodies, args.clients)
            c_srv = cpu_seconds(srv.proc.pid) - c_srv
            c_moto = cpu_seconds(moto_pid) - c_moto
            c_self = self_cpu() - c_self
        finally:
            srv.stop()
        rate = len(lat) / wall
        base = base or rate
        lat.sort()
        print(f"  {n} process(es): {rate:6.1f} items/s  (x{rate / base:.2f} vs 1)  p50 "
              f"{lat[len(lat) // 2] * 1e3:.0f} ms  statuses {sorted(set(codes))}  CPU ms/item: ingest "
              f"{c_srv / len(lat) * 1e3:.1f}, moto {c_moto / len(lat) * 1e3:.1f}, clients "
              f"{c_self / len(lat) * 1e3:.1f}  (machine busy {(c_srv + c_moto + c_self) / wall:.2f} CPUs)")


def fleet(args, env, endpoint, s3, tmp) -> None:
    from edgedepth.fleet.store.s3 import S3Store

    bucket = f"fleet-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    db = tmp / "fleet-devices.db"
    reg = DeviceRegistry(db)
    t0 = time.perf_counter()
    tokens = {f"cam-{d:04d}": reg.add_device(f"cam-{d:04d}") for d in range(args.devices)}
    reg.close()
    width, height = (int(v) for v in args.fleet_size.lower().split("x"))
    jobs = []
    for d, (name, tok) in enumerate(tokens.items()):
        mine = [make_body(1_000_000 + d * 100 + i, width, height, name) for i in range(args.per_device)]
        jobs += [(name, tok, item_id, body) for item_id, body in mine]
        jobs += [(name, tok, *mine[i]) for i in range(args.resend)]  # retries of items already sent
    expected = {j[2] for j in jobs}
    print(f"fleet: {args.devices} devices x {args.per_device} items ({width}x{height}) + {args.resend} "
          f"re-sent each = {len(jobs)} uploads of {len(expected)} distinct items, {args.connections} "
          f"connections, {args.fleet_workers} ingest processes (devices registered in "
          f"{time.perf_counter() - t0:.1f} s)")
    import random

    random.Random(0).shuffle(jobs)
    work: "queue.Queue" = queue.Queue()
    for j in jobs:
        work.put(j)
    codes: dict = {}
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=120) as c:
            while True:
                try:
                    name, tok, item_id, body = work.get_nowait()
                except queue.Empty:
                    return
                for attempt in range(20):  # a device retries 429/503 after a pause, as the daemon does
                    try:
                        r = c.post(f"{srv.url}/v1/items/{item_id}", content=body, headers={
                            "Authorization": f"Bearer {tok}", "Content-Type": "application/x-tar",
                            "X-Edgedepth-Body-Sha256": hashlib.sha256(body).hexdigest()})
                        status = r.status_code
                    except httpx.HTTPError:
                        status = -1
                    if status in (200, 201):
                        break
                    time.sleep(0.2 * (attempt + 1))
                with lock:
                    codes[status] = codes.get(status, 0) + 1

    srv = Ingest(f"s3://{bucket}/ingest", endpoint, db, args.fleet_workers, env)
    try:
        t1 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.connections) as pool:
            for f in [pool.submit(client) for _ in range(args.connections)]:
                f.result()
        wall = time.perf_counter() - t1
    finally:
        srv.stop()
    print(f"  {len(jobs)} uploads in {wall:.1f} s ({len(jobs) / wall:.1f}/s); final statuses {codes}")
    # Count from the store: committed items (meta.json objects), and what a round build reads.
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="ingest/items/"):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith("/meta.json")]
    committed = [k.split("/")[-2] for k in keys]
    store = S3Store(bucket, "ingest", endpoint_url=endpoint, manifest_every_s=3600)
    listed = [m["id"] for m in store.iter_items()]
    store.close()
    manifest_lines = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="ingest/manifests/"):
        for o in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            manifest_lines += sum(1 for line in body.splitlines() if line.strip())
    print(f"  store: {len(committed)} committed items ({len(set(committed))} distinct), iter_items "
          f"{len(listed)} ({len(set(listed))} distinct), manifest lines {manifest_lines}; expected "
          f"{len(expected)}: lost {len(expected - set(listed))}, unexpected {len(set(listed) - expected)}, "
          f"listed twice {len(listed) - len(set(listed))}")
    ok = set(listed) == expected == set(committed) and len(listed) == len(expected) == len(committed)
    print(f"  every item stored exactly once: {'yes' if ok else 'NO'}")


def profile(args, endpoint, s3, tmp) -> None:
    """One ingest app in this process (starlette's TestClient, no sockets) with its stages timed: CPU
    time (time.thread_time, in whichever thread a stage runs) and wall time per item."""
    import functools
    from collections import defaultdict

    from starlette.testclient import TestClient

    import edgedepth.fleet.server as server_mod
    from edgedepth.fleet.server import IngestConfig, create_app
    from edgedepth.fleet.store.s3 import S3Store
    from edgedepth.s3 import S3Objects

    totals: dict = defaultdict(lambda: [0.0, 0.0])
    lock = threading.Lock()

    def timed(label, fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            c0, t0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                with lock:
                    totals[label][0] += time.thread_time() - c0
                    totals[label][1] += time.perf_counter() - t0
        return wrapper

    server_mod.parse_upload = timed("tar + metadata parsing", server_mod.parse_upload)
    server_mod.check_contents = timed("image decode checks", server_mod.check_contents)
    S3Store.has = timed("store.has (1 S3 HEAD)", S3Store.has)
    S3Objects._put = timed("S3 PUTs (4 an item, summed)", S3Objects._put)
    bucket = f"profile-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    token = DeviceRegistry(tmp / "profile.db").add_device("bench-cam")
    width, height = (int(v) for v in args.size.lower().split("x"))
    bodies = [make_body(5_000_000 + i, width, height, "bench-cam") for i in range(args.profile)]
    app = create_app(IngestConfig(store=f"s3://{bucket}/ingest", endpoint_url=endpoint,
                                  auth_db=str(tmp / "profile.db"), rate_per_s=1e5, burst=1e5,
                                  min_free_bytes=0, manifest_every_s=3600))
    with TestClient(app) as client:
        t0, c0, m0 = time.perf_counter(), self_cpu(), cpu_seconds(args.moto_pid)
        for item_id, body in bodies:
            r = client.post(f"/v1/items/{item_id}", content=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/x-tar",
                "X-Edgedepth-Body-Sha256": hashlib.sha256(body).hexdigest()})
            assert r.status_code == 201, r.text
        wall, cpu, moto = time.perf_counter() - t0, self_cpu() - c0, cpu_seconds(args.moto_pid) - m0
    n = len(bodies)
    print(f"profile: {n} items of {width}x{height}, one in-process app, one request at a time: "
          f"{wall / n * 1e3:.1f} ms wall per item, {cpu / n * 1e3:.1f} ms CPU (this process, test client "
          f"included), moto {moto / n * 1e3:.1f} ms CPU")
    for label, (c, w) in totals.items():
        print(f"  {label:32s} CPU {c / n * 1e3:6.2f} ms/item  wall {w / n * 1e3:6.2f} ms/item")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=300, help="new items per scaling run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--size", default="320x240", help="WxH of each frame in the scaling runs")
    ap.add_argument("--workers", default="1,2,4", help="ingest processes per scaling run")
    ap.add_argument("--devices", type=int, default=1000, help="fleet run: devices (0 = skip)")
    ap.add_argument("--per-device", type=int, default=3, help="fleet run: items per device")
    ap.add_argument("--resend", type=int, default=1, help="fleet run: items each device sends twice")
    ap.add_argument("--fleet-size", default="160x120", help="WxH of each frame in the fleet run")
    ap.add_argument("--connections", type=int, default=32, help="fleet run: uploads in flight")
    ap.add_argument("--fleet-workers", type=int, default=4, help="fleet run: ingest processes")
    ap.add_argument("--profile", type=int, default=0, help="also profile N items in one in-process app")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONUNBUFFERED="1", **FAKE_AWS)
    os.environ.update(FAKE_AWS)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-scale-"))
    moto, endpoint, s3 = start_moto(env)
    args.moto_pid = moto.pid
    try:
        if args.items > 0:
            scaling(args, env, moto.pid, endpoint, s3, tmp)
        if args.devices > 0:
            fleet(args, env, endpoint, s3, tmp)
        if args.profile > 0:
            profile(args, endpoint, s3, tmp)
    finally:
        moto.terminate()
        try:
            moto.wait(timeout=30)
        except subprocess.TimeoutExpired:
            moto.kill()


if __name__ == "__main__":
    main()
