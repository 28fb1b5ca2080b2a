"""Local directory store (the embedded default).

Layout:
    ROOT/items/<id[:2]>/<id>/meta.json      metadata (SpoolMeta + received_at, received_by, stored_bytes)
    ROOT/items/<id[:2]>/<id>/<name>         the item's files (rgb.png, depth.png, ...)
    ROOT/index.db                           SQLite index of ingested frames (WAL, synchronous=FULL)
    ROOT/tmp/                               items being written (same filesystem, so rename is atomic)
    ROOT/pending/<id>                       items renamed into place but maybe not yet indexed
    ROOT/devices.db                         device tokens (edgedepth.fleet.auth), by default

An item is written into ROOT/tmp/<id>.<host>-<pid>-<random>/ (each file fsynced, meta.json last, directory
fsynced) and then renamed to its final place in one step: a reader sees the whole item or nothing.
rename(2) of a directory onto an existing non-empty one fails, which makes the write create-only even
with several server processes on one directory.

Crash recovery at start-up (`LocalStore(...)`): a marker ROOT/pending/<id> is made durable before the
rename and removed after the index insert, so every item committed but not indexed when the process
died is indexed when the store is next opened; temp folders of processes on this host that are no
longer running (and any older than an hour) are removed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

from edgedepth.errors import DataError
from edgedepth.faults import write_pausable
from edgedepth.fleet.index import FrameIndex
from edgedepth.fleet.store.base import (
    META_NAME,
    Store,
    StoreUnavailable,
    check_file_name,
    check_item_id,
    check_since,
    prepare_meta,
)
from edgedepth.fsutil import fsync_dir as _fsync_dir

log = logging.getLogger(__name__)
_TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENFILE}
STALE_TMP_S = 3600.0


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        write_pausable(f, data, "store-write", str(path))  # tests: a kill -9 with it half written
        f.flush()
        os.fsync(f.fileno())


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _tmp_name(item_id: str) -> str:
    """`<id>.<host tag>-<pid>-<random>`: which host and process is writing this temp folder."""
    return f"{item_id}.{_HOST_TAG}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _tmp_owner(name: str) -> Optional[Tuple[str, int]]:
    """(host tag, pid) from a temp folder name made by `_tmp_name` (None for other names)."""
    _, _, rest = name.partition(".")
    parts = rest.split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _owner_gone(name: str) -> bool:
    """Whether no running process can still be writing this temp folder (a writer on another host
    sharing the directory is judged by age only)."""
    owner = _tmp_owner(name)
    if owner is None:
        return True
    host, pid = owner
    return host == _HOST_TAG and (pid == os.getpid() or not _pid_alive(pid))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStore(Store):
    """Items as directories under ROOT, plus the SQLite frame index."""

    def __init__(self, root: Union[str, Path], min_free_bytes: int = 256 << 20) -> None:
        self.root = Path(root).expanduser().resolve()
        self.min_free_bytes = int(min_free_bytes)
        try:
            for sub in ("items", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create the store directory {self.root}: {exc}") from exc
        try:
            (self.root / "pending").mkdir(exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create {self.root / 'pending'}: {exc}") from exc
        index_path = self.root / "index.db"
        fresh_index = not index_path.exists()
        self.index = FrameIndex(index_path)
        self._clean_stale_tmp()
        if fresh_index and any((self.root / "items").iterdir()):
            log.warning("store %s has items but no index: rebuilding it", self.root)
            self.reindex()
        self.reconcile_pending()

    def describe(self) -> str:
        return f"local directory {self.root}"

    def item_dir(self, item_id: str) -> Path:
        check_item_id(item_id)
        return self.root / "items" / item_id[:2] / item_id

    # -- writing -------------------------------------------------------------------------------
    def put_item(self, item_id: str, files: Dict[str, bytes], meta: dict) -> bool:
        record = prepare_meta(item_id, files, meta)
        row = FrameIndex.row(record)  # an item the index would refuse is never written
        # row() already dumped `record` with allow_nan=False, so this dump cannot fail
        raw_meta = json.dumps(record, sort_keys=True, indent=1, allow_nan=False).encode()
        final = self.item_dir(item_id)
        if (final / META_NAME).exists():
            self._heal_index(item_id)
            return False
        self._check_free_space(record["stored_bytes"])
        tmp = self.root / "tmp" / _tmp_name(item_id)
        marker = self.root / "pending" / item_id
        try:
            tmp.mkdir()
            for name, data in files.items():
                _write_file(tmp / name, bytes(data))
            _write_file(tmp / META_NAME, raw_meta)
            _fsync_dir(tmp)
            if not final.parent.is_dir():
                final.parent.mkdir(exist_ok=True)
                _fsync_dir(final.parent.parent)  # make the new shard directory itself durable
            marker.touch()
            _fsync_dir(marker.parent)  # durable before the rename: a crash after it is reconciled
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and (final / META_NAME).exists():
                    self._heal_index(item_id)
                    return False  # another writer won the race
                raise
            _fsync_dir(final.parent)
        except OSError as exc:
            if exc.errno in _TRANSIENT_ERRNOS:
                raise StoreUnavailable(f"local store {self.root}: {os.strerror(exc.errno)}; "
                                       f"retry later") from exc
            raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.index.add_row(row)
        _unlink_quietly(marker)
        return True

    def _check_free_space(self, item_bytes: int) -> None:
        free = shutil.disk_usage(self.root).free
        if free - item_bytes < self.min_free_bytes:
            raise StoreUnavailable(f"local store {self.root}: only {free >> 20} MiB free (keeping "
                                   f"{self.min_free_bytes >> 20} MiB in reserve); retry later")

    def _heal_index(self, item_id: str) -> None:
        """An item on disk but not indexed (crash between rename and index insert): index it now."""
        if not self.index.contains(item_id):
            try:
                self.index.add(self.get_meta(item_id))
            except (DataError, ValueError) as exc:
                log.error("store %s: item %s cannot be indexed: %s", self.root, item_id[:12], exc)

    def _clean_stale_tmp(self) -> int:
        """Remove temp folders no running writer owns: its process is gone, or it is over an hour old."""
        now = time.time()
        removed = 0
        for entry in (self.root / "tmp").iterdir():
            try:
                if _owner_gone(entry.name) or now - entry.stat().st_mtime > STALE_TMP_S:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
            except OSError:
                continue
        if removed:
            log.warning("store %s: removed %d unfinished temp folder(s) left by a stopped server",
                        self.root, removed)
        return removed

    def reconcile_pending(self) -> int:
        """Index every item committed before the last crash but not indexed; returns how many."""
        healed = 0
        for marker in sorted((self.root / "pending").iterdir()):
            item_id = marker.name
            try:
                if (self.item_dir(item_id) / META_NAME).is_file():
                    healed += self.index.add(self.get_meta(item_id))
            except (DataError, ValueError, OSError) as exc:
                log.error("store %s: cannot index pending item %s: %s", self.root, item_id[:12], exc)
                continue
            _unlink_quietly(marker)
        if healed:
            log.warning("store %s: indexed %d item(s) stored but not indexed before a crash", self.root,
                        healed)
        return healed

    def reindex(self) -> int:
        """Add every committed item on disk to the index; returns how many rows were added."""
        added = 0
        for shard in sorted((self.root / "items").iterdir()):
            if not shard.is_dir():
                continue
            for item in sorted(shard.iterdir()):
                meta_path = item / META_NAME
                if not meta_path.is_file():
                    continue
                try:
                    meta = json.loads(meta_path.read_bytes())
                except ValueError:
                    log.warning("skipping %s: unreadable metadata", meta_path)
                    continue
                try:
                    added += self.index.add(meta)
                except DataError as exc:
                    log.warning("skipping %s: %s", meta_path, exc)
        return added

    # -- reading -------------------------------------------------------------------------------
    def has(self, item_id: str) -> bool:
        """Whether the item is committed. A committed item missing from the index (the server was killed
        between the rename and the index insert) is indexed now, so a device that learns from HEAD that
        the item is stored and never re-sends it cannot leave it out of the next training round."""
        if not (self.item_dir(item_id) / META_NAME).is_file():
            return False
        self._heal_index(item_id)
        return True

    def get_meta(self, item_id: str) -> dict:
        path = self.item_dir(item_id) / META_NAME
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise DataError(f"item {item_id} is not in the store {self.root}") from exc

    def read_file(self, item_id: str, name: str) -> bytes:
        path = self.item_dir(item_id) / check_file_name(name)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise DataError(f"item {item_id} has no file {name!r} in the store {self.root}") from exc

    def iter_items(self, since: Optional[str] = None) -> Iterator[dict]:
        return self.index.iter_meta(check_since(since))

    def close(self) -> None:
        self.index.close()
