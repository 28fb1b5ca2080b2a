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

import base64
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator, List, Optional, Set

from edgedepth.errors import ConfigError, DataError, require
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

log = logging.getLogger(__name__)
ORPHAN_AGE_S = 3600.0


def _manifest_stamp(iso: str) -> str:
    """'2026-11-24T18:00:00.123456Z' -> '20261124T180000.123456Z' (sorts like the time)."""
    return iso.replace("-", "").replace(":", "")


class S3Store(Store):
    """Items as objects under s3://bucket/prefix, indexed by manifests (see the module docstring)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: Optional[str] = None,
                 server_name: Optional[str] = None, manifest_every_s: float = 60.0,
                 manifest_max_items: int = 1000, region: Optional[str] = None, client=None,
                 adopt_orphans: bool = False) -> None:
        if not bucket:
            raise ConfigError("an S3 store needs a bucket: s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        name = server_name or f"{socket.gethostname()}-{os.getpid()}"
        self.server_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64]
        self.manifest_every_s = float(manifest_every_s)
        self.manifest_max_items = int(manifest_max_items)
        self._client = client if client is not None else self._make_client(endpoint_url, region)
        self._lock = threading.Lock()
        self._unmanifested: List[dict] = []
        # Create-only commit via If-None-Match: * (S3 since 2024, MinIO, moto). Turned off when the
        # store answers NotImplemented; then a HEAD-then-PUT is used, which has a race window between
        # two servers writing the same item at the same instant: both commit the same content, and
        # the id may appear in two manifests (iter_items de-duplicates).
        self._conditional_writes = True
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-put")
        self._check_bucket()
        if adopt_orphans:
            self.adopt_orphans()
        self._flusher: Optional[threading.Thread] = None
        if self.manifest_every_s > 0:
            self._flusher = threading.Thread(target=self._flush_loop, name="s3-manifests", daemon=True)
            self._flusher.start()

    # -- plumbing ------------------------------------------------------------------------------
    @staticmethod
    def _make_client(endpoint_url: Optional[str], region: Optional[str]):
        boto3 = require("boto3", "server")
        from botocore.config import Config

        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30,
                        max_pool_connections=64, s3={"addressing_style": "path"} if endpoint_url else None)
        return boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1", config=config)

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where} (server {self.server_name})"

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _call(self, what: str, fn: Callable, **kwargs):
        """Run one S3 call; transport failures and server errors become StoreUnavailable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError:
            raise  # callers look at the error code (404, 412, NotImplemented) and decide
        except BotoCoreError as exc:
            raise StoreUnavailable(f"{self.describe()}: {what} failed: {exc}; retry later") from exc

    @staticmethod
    def _code(exc) -> str:
        err = getattr(exc, "response", {}).get("Error", {})
        return str(err.get("Code", ""))

    @staticmethod
    def _status(exc) -> int:
        return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)

    def _unavailable(self, what: str, exc) -> StoreUnavailable:
        return StoreUnavailable(f"{self.describe()}: {what} failed: {self._code(exc) or exc}; retry later")

    def _check_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("head bucket", self._client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            if self._status(exc) in (403, 404):
                raise ConfigError(f"S3 bucket {self.bucket!r} is not reachable ({self._code(exc)}): "
                                  f"create it or check the credentials and --endpoint-url") from exc
            raise self._unavailable("head bucket", exc) from exc

    def _get(self, key: str) -> Optional[bytes]:
        from botocore.exceptions import ClientError

        try:
            obj = self._call(f"get {key}", self._client.get_object, Bucket=self.bucket, Key=key)
            return obj["Body"].read()
        except ClientError as exc:
            if self._code(exc) in ("NoSuchKey", "404") or self._status(exc) == 404:
                return None
            raise self._unavailable(f"get {key}", exc) from exc

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call(f"head {key}", self._client.head_object, Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if self._status(exc) == 404 or self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._unavailable(f"head {key}", exc) from exc

    def _put(self, key: str, data: bytes, create_only: bool) -> bool:
        """PUT with a SHA-256 checksum the store verifies; False if create_only and the key exists."""
        from botocore.exceptions import ClientError

        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        kwargs = dict(Bucket=self.bucket, Key=key, Body=data, ChecksumSHA256=digest)
        if create_only and self._conditional_writes:
            kwargs["IfNoneMatch"] = "*"
        elif create_only and self._exists(key):
            return False
        try:
            self._call(f"put {key}", self._client.put_object, **kwargs)
            return True
        except ClientError as exc:
            code, status = self._code(exc), self._status(exc)
            if status == 412 or code == "PreconditionFailed":
                return False
            if status == 409 and code == "ConditionalRequestConflict":
                return False  # a concurrent conditional write of the same key is in flight
            if create_only and self._conditional_writes and code == "NotImplemented":
                log.warning("%s does not support If-None-Match writes: falling back to HEAD-then-PUT",
                            self.describe())
                self._conditional_writes = False
                return self._put(key, data, create_only)
            raise self._unavailable(f"put {key}", exc) from exc

    def _list(self, prefix: str) -> Iterator[dict]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                yield from page.get("Contents", [])
        except ClientError as exc:
            raise self._unavailable(f"list {prefix}", exc) from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"{self.describe()}: list {prefix} failed: {exc}; retry later") from exc

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

    def _delete_keys(self, keys: List[str]) -> None:
        from botocore.exceptions import ClientError

        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start:start + 1000]]
            try:
                self._call("delete markers", self._client.delete_objects, Bucket=self.bucket,
                           Delete={"Objects": chunk, "Quiet": True})
            except (ClientError, StoreUnavailable) as exc:
                # Harmless: a leftover marker only costs iter_items one extra GET.
                log.warning("could not delete %d pending markers: %s", len(chunk), exc)

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

