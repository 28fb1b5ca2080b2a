"""Round building at scale: time and peak memory of `build_round` on a local store of N items.

For each N (10,000 and 100,000 by default) a LocalStore is filled through `put_item` with small frames
(WxH RGB + uint16 depth PNGs: a random low-frequency light field plus texture, 1 in 10 a near-copy of its
predecessor), then
`build_round` runs in a fresh process (so its resident-set peak is its own, read from VmHWM by
edgedepth.bench.memory.peak_rss_mb) and prints its time and peak RSS; a last line gives the peak RSS
growth per item between the sizes (a flat build: what its per-item arrays need, a few hundred bytes).
Filling skips fsync (durability is not what this measures) and is timed separately.

    python scripts/bench_round_build.py --items 10000,100000 --size 32x24
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fill_store(root: Path, n: int, width: int, height: int) -> float:
    import cv2
    import numpy as np

    from edgedepth.fleet.store.local import LocalStore
    from edgedepth.spool import compute_item_id

    os.fsync = lambda fd: None  # setup only: this process fills the store, it is not measured
    store = LocalStore(root, min_free_bytes=0)
    store.index._db.execute("PRAGMA synchronous=OFF")
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    prev = None
    for i in range(n):
        if prev is not None and i % 10 == 0:
            rgb = np.clip(prev.astype(np.int16) + rng.integers(-2, 3, prev.shape), 0, 255).astype(np.uint8)
        else:
            # camera-like: a low-frequency light field (what the thumbnails see) plus a little texture
            light = cv2.resize(rng.uniform(0, 255, (3, 4, 3)).astype(np.float32), (width, height),
                               interpolation=cv2.INTER_CUBIC)
            f = rng.uniform(0.3, 1.2, 2)
            texture = 12 * np.sin(xx * f[0] + yy * f[1] + i)[..., None]
            rgb = (light + texture).clip(0, 255).astype(np.uint8)
        prev = rgb
        depth = (1000 + 30 * yy + (i % 97) * 10).astype(np.uint16)
        files = {"rgb.png": cv2.imencode(".png", rgb)[1].tobytes(),
                 "depth.png": cv2.imencode(".png", depth)[1].tobytes()}
        kinds = {"rgb.png": ("rgb", None), "depth.png": ("depth_gt", "mm_uint16")}
        entries = {k: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b), "kind": kinds[k][0],
                       "offset": 0, "units": kinds[k][1]} for k, b in files.items()}
        item_id = compute_item_id(entries)
        minute, second = divmod(i, 60)
        meta = {"schema": "edgedepth.spool/1", "id": item_id, "files": entries,
                "device_id": f"cam-{i % 50:02d}", "domain": "indoor", "score": float(rng.random()),
                "captured_at": f"2026-11-{1 + minute // 1440:02d}T{(minute // 60) % 24:02d}:"
                               f"{minute % 60:02d}:{second:02d}.000Z",
                "width": width, "height": height, "labels": ["depth_gt"]}
        store.put_item(item_id, files, meta)
    store.close()
    return time.perf_counter() - t0


def run_build(store: str, out: str) -> None:
    """The measured process: one round build, then one JSON line with its time and peak RSS."""
    from edgedepth.bench.memory import peak_rss_mb
    from edgedepth.rounds.build import RoundConfig, build_round

    before = peak_rss_mb()
    t0 = time.perf_counter()
    rep = build_round(RoundConfig(store=store, out=out, val_fraction=0.2, time_block_s=600.0))
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
                                  "rss_before_mb": before, "ingested": rep.ingested, "train": rep.train,
                                  "val": rep.val, "duplicates": rep.duplicates}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", default="10000,100000")
    ap.add_argument("--size", default="32x24", help="WxH of each frame")
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temp dir, removed)")
    ap.add_argument("--run", nargs=2, metavar=("STORE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        run_build(*args.run)
        return
    width, height = (int(v) for v in args.size.lower().split("x"))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-round-build-"))
    peaks = []
    try:
        for n in [int(v) for v in args.items.split(",")]:
            store = work / f"store-{n}"
            fill_s = fill_store(store, n, width, height)
            out = work / f"round-{n}"
            res = subprocess.run([sys.executable, __file__, "--run", str(store), str(out)],
                                 capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
            line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
            if res.returncode or not line:
                raise SystemExit(f"round build failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
            r = json.loads(line[0][7:])
            print(f"{n} items ({width}x{height}): round build {r['seconds']:.1f} s "
                  f"({n / r['seconds']:.0f} items/s), peak RSS {r['peak_rss_mb']:.0f} MiB "
                  f"({r['rss_before_mb']:.0f} MiB after imports); train {r['train']}, val {r['val']}, "
                  f"near-duplicates {r['duplicates']}  [store filled in {fill_s:.0f} s]", flush=True)
            peaks.append((n, r["peak_rss_mb"]))
            shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        for (n0, p0), (n1, p1) in zip(peaks, peaks[1:]):
            print(f"peak RSS growth {n0} -> {n1} items: {p1 - p0:+.1f} MiB, "
                  f"{(p1 - p0) * 2 ** 20 / (n1 - n0):.0f} bytes per item")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
