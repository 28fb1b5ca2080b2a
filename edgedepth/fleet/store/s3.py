"""S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...), through boto3 (the `server` extra).

Layout under s3://BUCKET/PREFIX/:
    items/<id>/<name>          the item's files, each sent with its SHA-256 checksum (the store verifies)
    items/<id>/meta.json       metadata, written LAST and create-only: the item's commit marker
    pending/<id>               written just before meta.json, deleted once the id is in a manifest
    manifests/<time>-<server>-<rand>.jsonl
                               one metadata JSON per line: the items one server committed since its
                               previous manifest (written every `manifest_every_s` and on close)

No database is needed and several ingest servers can share one prefix: every committed item is in a
manifest or still has its pending marker (the marker goes only after the manifest is written), so
`iter_items` = read manifests, then the pending items not in them. Ids may appear twice (two servers
racing on one item, or an orphaned marker adopted by another server); `iter_items` yields each once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterator, List, Optional, Set

from edgedepth.errors import ConfigError, DataError
from edgedepth.fleet.store.base import (
    META_NAME,
    Store,
    StoreUnavailable,
    check_file_name,
    check_item_id,
    check_since,
    prepare_meta,
    utc_now_iso,
)
from edgedepth.s3 import S3Objects

log = logging.getLogger(__name__)
ORPHAN_AGE_S = 3600.0


def _manifest_stamp(iso: str) -> str:
    """'2026-11-24T18:00:00.123456Z' -> '20261124T180000.123456Z' (sorts like the time)."""
    return iso.replace("-", "").replace(":", "")


class S3Store(Store, S3Objects):
    """Items as objects under s3://bucket/prefix, indexed by manifests (see the module docstring)."""

    unavailable_error = StoreUnavailable

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: Optional[str] = None,
                 server_name: Optional[str] = None, manifest_every_s: float = 60.0,
                 manifest_max_items: int = 1000, region: Optional[str] = None, client=None,
                 adopt_orphans: bool = False) -> None:
        name = server_name or f"{socket.gethostname()}-{os.getpid()}"
        self.server_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64]
        self._init_s3(bucket, prefix, endpoint_url, region, client)
        self.manifest_every_s = float(manifest_every_s)
        self.manifest_max_items = int(manifest_max_items)
        self._lock = threading.Lock()
        self._unmanifested: List[dict] = []
        # Two servers writing the same item at the same instant without If-None-Match support (see
        # S3Objects._put) both commit the same content; the id may then appear in two manifests
        # (iter_items de-duplicates).
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-put")
        self._check_bucket()
        if adopt_orphans:
            self.adopt_orphans()
        self._flusher: Optional[threading.Thread] = None
        if self.manifest_every_s > 0:
            self._flusher = threading.Thread(target=self._flush_loop, name="s3-manifests", daemon=True)
            self._flusher.start()

    def describe(self) -> str:
        return f"{super().describe()} (server {self.server_name})"

    # -- Store ---------------------------------------------------------------------------------
    def put_item(self, item_id: str, files: Dict[str, bytes], meta: dict) -> bool:
        record = prepare_meta(item_id, files, meta)
        if self.has(item_id):
            return False
        # Files and the pending marker in parallel (one round trip of latency instead of several);
        # create-only refusals of files are fine: the key is content-addressed, so a retry finds
        # the very same bytes there. Any failure raises before the commit below.
        writes = [(self._key("items", item_id, name), bytes(data), True) for name, data in files.items()]
        writes.append((self._key("pending", item_id), self.server_name.encode(), False))
        errors = [f.exception() for f in [self._pool.submit(self._put, *w) for w in writes]]
        for exc in errors:
            if exc is not None:
                raise exc
        body = json.dumps(record, sort_keys=True, indent=1).encode()
        if not self._put(self._key("items", item_id, META_NAME), body, create_only=True):
            return False  # another server committed it first
        with self._lock:
            self._unmanifested.append(record)
            due = len(self._unmanifested) >= self.manifest_max_items
        if due:
            self.flush_manifest()
        return True

    def has(self, item_id: str) -> bool:
        return self._exists(self._key("items", check_item_id(item_id), META_NAME))

    def get_meta(self, item_id: str) -> dict:
        raw = self._get(self._key("items", check_item_id(item_id), META_NAME))
        if raw is None:
            raise DataError(f"item {item_id} is not in the store {self.describe()}")
        return json.loads(raw)

    def read_file(self, item_id: str, name: str) -> bytes:
        raw = self._get(self._key("items", check_item_id(item_id), check_file_name(name)))
        if raw is None or not self.has(item_id):
            raise DataError(f"item {item_id} has no file {name!r} in the store {self.describe()}")
        return raw

    def iter_items(self, since: Optional[str] = None) -> Iterator[dict]:
        since = check_since(since)
        floor = _manifest_stamp(since) if since else ""
        seen: Set[str] = set()
        read: Set[str] = set()

        def from_new_manifests() -> Iterator[dict]:
            for obj in sorted(self._list(self._key("manifests") + "/"), key=lambda o: o["Key"]):
                key = obj["Key"]
                stamp = key.rsplit("/", 1)[-1].split("-", 1)[0]
                if key in read or (floor and stamp < floor):
                    continue  # a manifest written before `since` holds only items received before it
                read.add(key)
                for meta in self._parse_manifest(key):
                    if meta["id"] not in seen and (since is None or meta.get("received_at", "") > since):
                        seen.add(meta["id"])
                        yield meta

        yield from from_new_manifests()
        pending = []
        for obj in self._list(self._key("pending") + "/"):
            item_id = obj["Key"].rsplit("/", 1)[-1]
            if item_id in seen or not check_pending_id(item_id):
                continue
            raw = self._get(self._key("items", item_id, META_NAME))
            if raw is None:
                continue  # not committed (yet, or a writer died before the commit)
            meta = json.loads(raw)
            if since is None or meta.get("received_at", "") > since:
                pending.append(meta)
        # A manifest written while we listed may have taken ids whose markers are now gone.
        yield from from_new_manifests()
        for meta in sorted(pending, key=lambda m: (m.get("received_at", ""), m["id"])):
            if meta["id"] not in seen:
                seen.add(meta["id"])
                yield meta

    def _parse_manifest(self, key: str) -> Iterator[dict]:
        raw = self._get(key) or b""
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                meta = json.loads(line)
                check_item_id(meta["id"])
            except (ValueError, KeyError, TypeError, DataError):
                log.warning("manifest %s line %d is unreadable: skipped", key, n)
                continue
            yield meta

    # -- manifests -----------------------------------------------------------------------------
    def flush_manifest(self) -> int:
        """Write the items committed since the last manifest; returns how many it listed."""
        with self._lock:
            batch, self._unmanifested = self._unmanifested, []
        if not batch:
            return 0
        batch.sort(key=lambda m: (m.get("received_at", ""), m["id"]))
        # Named by the time of writing, which is after every received_at in it (same clock).
        name = f"{_manifest_stamp(utc_now_iso())}-{self.server_name}-{uuid.uuid4().hex[:8]}.jsonl"
        body = b"".join(json.dumps(m, sort_keys=True).encode() + b"\n" for m in batch)
        try:
            self._put(self._key("manifests", name), body, create_only=True)
        except StoreUnavailable:
            with self._lock:
                self._unmanifested[:0] = batch  # try again next time; the pending markers remain
            raise
        self._delete_keys([self._key("pending", m["id"]) for m in batch])
        return len(batch)

    def adopt_orphans(self, older_than_s: float = ORPHAN_AGE_S) -> int:
        """Take over pending markers older than `older_than_s` (their server died before its manifest)."""
        cutoff = time.time() - older_than_s
        adopted, stale = 0, []
        for obj in self._list(self._key("pending") + "/"):
            if obj["LastModified"].timestamp() > cutoff:
                continue
            item_id = obj["Key"].rsplit("/", 1)[-1]
            raw = self._get(self._key("items", item_id, META_NAME)) if check_pending_id(item_id) else None
            if raw is None:
                stale.append(obj["Key"])  # never committed: the device will upload it again
                continue
            with self._lock:
                self._unmanifested.append(json.loads(raw))
            adopted += 1
        self._delete_keys(stale)
        if adopted:
            log.info("adopted %d committed items from pending markers of stopped servers", adopted)
        return adopted

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.manifest_every_s):
            try:
                self.flush_manifest()
            except StoreUnavailable as exc:
                log.warning("manifest not written (will retry): %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        try:
            self.flush_manifest()
        except StoreUnavailable as exc:
            log.warning("manifest not written at close; pending markers keep the items findable: %s", exc)
        self._pool.shutdown(wait=True)


def check_pending_id(item_id: str) -> bool:
    try:
        check_item_id(item_id)
        return True
    except DataError:
        return False


def parse_s3_uri(uri: str):
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix')."""
    if not uri.startswith("s3://"):
        raise ConfigError(f"not an S3 URI: {uri!r} (expected s3://BUCKET/PREFIX)")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ConfigError(f"S3 URI {uri!r} has no bucket (expected s3://BUCKET/PREFIX)")
    return bucket, prefix

