"""Data browser speed on a synthetic store index of N items (default 100,000): catalog build, then the
time of the frames page (full HTML through the app, thumbnails excluded) for the first page, a filtered +
sorted page, a deep page (a cursor 90% of the way down the list) and a few more; prints the first (cold:
templates compiled then), median and worst of --repeat requests each.

    .venv/bin/python scripts/bench_browser.py [--items 100000] [--repeat 7] [--json out/bench_browser.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fleet"))

from browserkit import synthetic_meta  # noqa: E402

from edgedepth.fleet.browser.app import BrowserConfig, create_browser_app  # noqa: E402
from edgedepth.fleet.browser.catalog import FrameQuery, encode_cursor  # noqa: E402
from edgedepth.fleet.index import FrameIndex  # noqa: E402
from edgedepth.fleet.store.local import LocalStore  # noqa: E402

TOKEN = "eda_bench_" + "x" * 24


def build_index(root: Path, n: int) -> float:
    t0 = time.perf_counter()
    index = FrameIndex(root / "index.db")
    index._db.execute("PRAGMA synchronous=OFF")  # a synthetic index: no need for durability here
    index._db.execute("BEGIN")
    for i in range(n):
        meta = synthetic_meta(i)
        meta["stored_bytes"] = 50000
        index.add(meta)
    index._db.execute("COMMIT")
    index.close()
    return time.perf_counter() - t0


def timed(client, url: str, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        times.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"GET {url}: {r.status_code} {r.text[:300]}")
    return {"first_ms": round(times[0], 1), "median_ms": round(statistics.median(times), 1),
            "max_ms": round(max(times), 1), "rows": r.text.count('class="frame"'),
            "all_ms": [round(t, 1) for t in times]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from starlette.testclient import TestClient

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        root.mkdir()
        (root / "items").mkdir()
        build_s = build_index(root, args.items)
        (Path(tmp) / "token").write_text(TOKEN)
        (Path(tmp) / "token").chmod(0o600)
        store = LocalStore(root, min_free_bytes=0)
        app = create_browser_app(BrowserConfig(store=str(root), admin_token_file=str(Path(tmp) / "token")),
                                 store=store)
        catalog = app.state.catalog
        t0 = time.perf_counter()
        added = catalog.refresh(force=True)
        sync_s = time.perf_counter() - t0
        # a cursor 90% down the default order (score, highest first)
        deep_row = catalog._db.execute("SELECT * FROM frames ORDER BY score DESC, id DESC LIMIT 1 OFFSET ?",
                                       (int(args.items * 0.9),)).fetchone()
        deep = encode_cursor(dict(deep_row), "score")
        catalog.page(FrameQuery())  # warm the SQLite page cache once, as a running server has it
        client = TestClient(app)
        results = {
            "items": args.items, "index_build_s": round(build_s, 1), "catalog_sync_s": round(sync_s, 2),
            "catalog_rows_added": added,
            "first_page": timed(client, "/", args.repeat),
            "filtered_sorted_page": timed(client, "/?device=dev-07&domain=fog&sort=novelty&order=asc&per=48",
                                          args.repeat),
            "deep_page": timed(client, f"/?after={deep}", args.repeat),
            "score_range_sorted_by_capture": timed(client, "/?score_min=40&score_max=41&sort=captured",
                                                   args.repeat),
            "sorted_by_device": timed(client, "/?sort=device&per=96", args.repeat),
            "filter_matching_nothing": timed(client, "/?source=none-such&sort=temporal", args.repeat),
            "devices_page": timed(client, "/devices", args.repeat),
        }
        store.close()
    for key, value in results.items():
        print(f"{key:32s} {value}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
