"""`edgedepth ingest serve --workers N`: several server processes on one port share one local store
(SQLite index in WAL mode); concurrent uploads and duplicates land exactly once."""

from __future__ import annotations

import concurrent.futures
import importlib.util
from pathlib import Path

from edgedepth.fleet.auth import DeviceRegistry
from edgedepth.fleet.store.local import LocalStore

HERE = Path(__file__).resolve().parent


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"_edgedepth_fleet_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kit = _sibling("test_server")


def test_two_workers_on_one_port_store_every_item_once(tmp_path):
    store = tmp_path / "store"
    reg = DeviceRegistry(tmp_path / "devices.db")
    token = reg.add_device("cam-1")
    reg.close()
    srv = kit.Server(tmp_path, str(store), ["--workers", "2", "--min-free-mb", "0", "--max-per-device", "16"],
                     tmp_path / "devices.db")
    try:
        srv.wait_ready(timeout=60)
        items = [kit.make_item(500 + n, device="cam-1") for n in range(8)]
        sends = items + items[:4]  # four re-sends, possibly to the other worker

        def post(it):
            return srv.post(it[0], kit.item_body(*it), token).status_code

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(post, sends))
        assert sorted(codes) == [200] * 4 + [201] * 8, codes
    finally:
        srv.stop()
    local = LocalStore(store, min_free_bytes=0)
    try:
        ids = [m["id"] for m in local.iter_items()]
    finally:
        local.close()
    assert sorted(ids) == sorted(it[0] for it in items)
