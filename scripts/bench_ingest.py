"""Ingest server throughput on loopback: a real `edgedepth ingest serve` subprocess, K concurrent
clients each on one keep-alive connection, N items of WxH (RGB PNG + uint16 depth PNG).

Prints items/s, MB/s and request latency for new items and for re-uploads of the same items
(duplicates), for a local store or, with --s3, a moto S3 server started here.

    python scripts/bench_ingest.py --items 200 --clients 4 --size 640x480
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgedepth.fleet.auth import DeviceRegistry  # noqa: E402
from edgedepth.fleet.wire import encode_files  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(env: dict):
    """A moto S3 server on a free port (fake credentials "bench"): (process, endpoint URL, boto3 client)."""
    import boto3

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                          aws_secret_access_key="bench")
    for _ in range(200):
        try:
            client.list_buckets()
            return proc, url, client
        except Exception:  # noqa: BLE001 - waiting for moto to listen
            time.sleep(0.1)
    raise SystemExit("moto did not start")


def make_body(seed: int, width: int, height: int, device: str):
    rng = np.random.default_rng(seed)
    # Smooth content compresses like camera frames do (noise would make every PNG incompressible).
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 17.0 + seed) * 60 + np.cos(yy / 23.0) * 60 + 128).astype(np.float32)
    rgb = np.clip(np.stack([base, base * 0.8, 255 - base], -1) + rng.normal(0, 4, (height, width, 3)), 0, 255)
    depth = (1500 + 800 * np.sin(xx / 50.0) + 10 * yy).astype(np.uint16)
    files = {"rgb.png": cv2.imencode(".png", rgb.astype(np.uint8))[1].tobytes(),
             "depth.png": cv2.imencode(".png", depth)[1].tobytes()}
    return encode_files(files, {"rgb.png": "rgb", "depth.png": "depth_sensor"}, device_id=device,
                        captured_at="2026-11-24T18:00:00Z", width=width, height=height)


def run_pass(url: str, token: str, bodies, clients: int):
    shards = [bodies[i::clients] for i in range(clients)]

    def worker(shard):
        lat, codes = [], []
        with httpx.Client(timeout=60) as client:
            for item_id, body in shard:
                t0 = time.perf_counter()
                r = client.post(f"{url}/v1/items/{item_id}", content=body, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/x-tar",
                    "X-Edgedepth-Body-Sha256": hashlib.sha256(body).hexdigest()})
                lat.append(time.perf_counter() - t0)
                codes.append(r.status_code)
        return lat, codes

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(worker, shards))
    wall = time.perf_counter() - t0
    lat = sorted(x for r in results for x in r[0])
    codes = [c for r in results for c in r[1]]
    return wall, lat, codes


def report(label: str, wall: float, lat, codes, nbytes: int) -> list:
    n = len(lat)
    print(f"{label:10s} {n} items in {wall:.2f} s: {n / wall:.1f} items/s, {nbytes / wall / 1e6:.1f} MB/s; "
          f"latency p50 {statistics.median(lat) * 1e3:.1f} ms, p95 {lat[int(0.95 * (n - 1))] * 1e3:.1f} ms; "
          f"statuses {sorted(set(codes))}")
    from edgedepth.bench.record import figure

    return [figure(f"{label}: items/s", round(n / wall, 1)),
            figure(f"{label}: MB/s", round(nbytes / wall / 1e6, 1)),
            figure(f"{label}: latency p50 / p95", f"{statistics.median(lat) * 1e3:.1f} / "
                   f"{lat[int(0.95 * (n - 1))] * 1e3:.1f}", "ms")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--size", default="640x480", help="WxH of each frame")
    ap.add_argument("--s3", action="store_true", help="store in a moto S3 server started here")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    token = DeviceRegistry(tmp / "devices.db").add_device("bench-cam")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    moto = None
    store = str(tmp / "store")
    extra = []
    if args.s3:
        env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        moto, endpoint, s3 = start_moto(env)
        s3.create_bucket(Bucket="bench")
        store, extra = "s3://bench/ingest", ["--endpoint-url", endpoint]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "edgedepth", "ingest", "serve", "--store", store,
                               "--auth-db", str(tmp / "devices.db"), "--port", str(port), "--rate", "100000",
                               "--burst", "100000", "--min-free-mb", "0", "--log-level", "warning", *extra],
                              cwd=ROOT, env=env)
    try:
        bodies = [make_body(n, width, height, "bench-cam") for n in range(args.items)]
        nbytes = sum(len(b) for _, b in bodies)
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"{args.items} items of {width}x{height}, {nbytes / args.items / 1e3:.0f} kB each, "
              f"{args.clients} clients, store {'moto S3' if args.s3 else 'local directory'}, "
              f"{os.cpu_count()} CPUs")
        figs = report("new", *run_pass(url, token, bodies, args.clients), nbytes)
        figs += report("duplicate", *run_pass(url, token, bodies, args.clients), nbytes)
        from edgedepth.bench.record import record_results

        record_results("bench_ingest" + ("_s3" if args.s3 else ""), "Ingest server throughput ("
                       + ("moto S3" if args.s3 else "local directory") + " store)", figs,
                       notes=[f"{args.items} items of {width}x{height}, {args.clients} clients."])
    finally:
        server.terminate()
        server.wait(timeout=30)
        if moto:
            moto.terminate()
            moto.wait(timeout=10)


if __name__ == "__main__":
    main()
