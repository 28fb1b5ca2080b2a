"""The spool: the one on-disk hand-over between the live loop (writer) and the upload daemon (reader).

Contract (also in docs/architecture.md, "Contract: the spool"):
- One flat directory. An item is a set of files `<id>.<name>` (e.g. `<id>.rgb.png`, `<id>.depth.png`,
  `<id>.prev.png`) plus `<id>.json` (the metadata), written LAST, each atomically (temp file, fsync,
  rename, fsync the directory). A reader ignores items without their `.json`.
- `<id>` is the SHA-256 (64 lowercase hex) of the canonical JSON of the item's `files` map, which
  names every file of the item with its own SHA-256 and size. So the id is content-addressed and
  a retry of the same item is idempotent everywhere downstream.
- The metadata JSON follows `SpoolMeta` (schema "edgedepth.spool/1").
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgedepth.errors import ConfigError, DataError
from edgedepth.faults import write_pausable
from edgedepth.fsutil import fsync_dir as _fsync_dir

SCHEMA = "edgedepth.spool/1"
ITEM_ID_RE = re.compile(r"^[0-9a-f]{64}$")
# Logical file names inside an item: lowercase letters, digits, '_', '-', '.'; no path separators.
FILE_NAME_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
FILE_KINDS = ("rgb", "rgb_neighbor", "depth_gt", "depth_sensor", "depth_pred", "uncertainty")


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    kind: str
    offset: int = 0  # frame offset of a neighbour frame (t-k -> -k), 0 for the frame itself
    units: Optional[str] = None  # depth files: "mm_uint16" (PNG) or "m_float32" (.npy)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in FILE_KINDS:
            raise ValueError(f"unknown file kind {v!r}; one of {FILE_KINDS}")
        return v


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = "edgedepth"
    version: str = "0"
    sha256: str = ""


class SpoolMeta(BaseModel):
    """Metadata of one spool item (`<id>.json`)."""

    model_config = ConfigDict(extra="allow")
    schema_: str = Field(SCHEMA, alias="schema")
    id: str = Field(pattern=r"^[0-9a-f]{64}$")
    files: Dict[str, FileEntry]
    device_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    model: ModelRef = Field(default_factory=ModelRef)
    captured_at: str  # ISO 8601 UTC, e.g. 2026-11-24T18:00:00.123Z
    score: float = 0.0  # the selection score that ranks uploads and eviction (higher = more useful)
    scores: Dict[str, float] = Field(default_factory=dict)
    selection: str = "hard"  # hard | random | duplicate | manual
    source: str = ""
    domain: Optional[str] = None
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    intrinsics: Optional[List[List[float]]] = None  # 3x3 K at width x height
    pose: Optional[List[List[float]]] = None  # 4x4 camera-to-world, metres
    labels: List[str] = Field(default_factory=list)  # e.g. ["depth_gt"], ["depth_sensor"]

    @field_validator("files")
    @classmethod
    def _names(cls, v: Dict[str, FileEntry]) -> Dict[str, FileEntry]:
        if not v:
            raise ValueError("an item needs at least one file")
        for name in v:
            if not FILE_NAME_RE.match(name) or name == "json":
                raise ValueError(f"bad file name {name!r} in item")
        if sum(1 for e in v.values() if e.kind == "rgb" and e.offset == 0) != 1:
            raise ValueError("an item needs exactly one 'rgb' file at offset 0")
        return v


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compute_item_id(files: Dict[str, dict]) -> str:
    """Item id = SHA-256 of the canonical JSON of {name: {"sha256", "bytes"}} (other keys ignored)."""
    canon = {name: {"bytes": int(e["bytes"]), "sha256": e["sha256"]} for name, e in files.items()}
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def item_file_name(item_id: str, name: str) -> str:
    """On-disk (and in-upload) name of an item's file; `name == "json"` gives the metadata file."""
    return f"{item_id}.{name}"


def parse_meta(raw: bytes, source: str = "item") -> SpoolMeta:
    """Parse and validate an item's metadata JSON; DataError says what is wrong."""
    try:
        meta = SpoolMeta.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise DataError(f"{source}: metadata does not match {SCHEMA}: {where}: {first.get('msg')}") from exc
    files = {n: e.model_dump() for n, e in meta.files.items()}
    if compute_item_id(files) != meta.id:
        raise DataError(f"{source}: item id {meta.id[:12]}... does not match the hash of its file list")
    return meta


# ----------------------------------------------------------------------------------------------------
# The Spool class: writer (live loop) and reader (upload daemon) of one spool directory.
# ----------------------------------------------------------------------------------------------------

log = logging.getLogger("edgedepth.spool")

TEMP_PREFIX = ".tmp-"  # temp files start with a dot: every reader skips dot files
FAILED_DIR = "failed"  # permanently rejected items are moved here, with <id>.failed.json
LOCKS_DIR = ".locks"  # <id>.lock held (flock) by the daemon while it uploads an item
META_SUFFIX = ".json"
FAILED_REASON_SUFFIX = ".failed.json"
MIB = 1 << 20


def cap_bytes(max_mib: Optional[float], option: str = "--spool-max-mb") -> Optional[int]:
    """The spool cap in bytes from a size in MiB, the unit of every `--spool-max-mb`; None: no cap."""
    if max_mib is None:
        return None
    if not max_mib > 0:
        raise ConfigError(f"{option} must be positive (MiB), got {max_mib}")
    return int(max_mib * MIB)


def captured_at(t: Optional[float] = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-24T18:00:00.123Z (now when `t` is None)."""
    t = time.time() if t is None else float(t)
    dt = _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass
class SpoolItem:
    """One complete, valid item on disk."""

    id: str
    meta: SpoolMeta
    paths: Dict[str, Path]  # logical name -> file path
    json_path: Path
    score: float
    nbytes: int  # all files + the json


def _write_atomic(directory: Path, final_name: str, data: bytes) -> None:
    """Write `data` to directory/final_name via a dot temp file in the same directory, fsync, rename."""
    tmp = directory / f"{TEMP_PREFIX}{final_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            write_pausable(f, data, "spool-write", str(tmp))  # tests: a kill -9 with it half written
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / final_name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _item_id_of(file_name: str) -> Optional[str]:
    """The item id of an on-disk name `<id>.<rest>`, or None for anything else (temp/dot/foreign)."""
    if len(file_name) < 66 or file_name[64] != "." or file_name.startswith("."):
        return None
    head = file_name[:64]
    return head if ITEM_ID_RE.match(head) else None


FileSpec = Union[Tuple[bytes, str], Tuple[bytes, str, int], Tuple[bytes, str, int, Optional[str]]]


class Spool:
    """The one writer/reader of a spool directory (see the module docstring for the format).

    Safe for one writer process and one reader (the daemon) at the same time: files appear by rename,
    the metadata last, so a reader never sees a partial item; removal deletes the metadata first.
    `max_bytes` caps the directory, failed/ included: after each put the items in failed/ (rejected by
    the server for good) go first, oldest first, then the lowest-score items (never one that the daemon
    holds locked while uploading it). A full disk evicts in the same order.
    """

    def __init__(self, root: Union[str, Path], max_bytes: Optional[int] = None):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create spool directory {self.root}: {exc}") from exc
        if max_bytes is not None and max_bytes <= 0:
            raise DataError(f"spool max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.evicted = 0
        self.evicted_failed = 0  # rejected items deleted from failed/ to stay under the cap
        self._index: Dict[str, Tuple[float, str, int]] = {}  # id -> (score, captured_at, nbytes)
        self._approx_bytes: Optional[int] = None  # cached total, re-measured when it crosses the cap
        self._puts = 0

    # -- writing -------------------------------------------------------------------------------------
    def put(self, files: Dict[str, FileSpec], meta: dict) -> str:
        """Write one item atomically (files, then `<id>.json` last); returns its id.

        An identical item already present is a no-op. A full disk evicts low-score items and retries once,
        then raises DataError; a failed put never leaves a partial item behind.
        """
        entries, blobs = self._entries(files)
        item_id = compute_item_id(entries)
        doc = {k: v for k, v in dict(meta).items() if k not in ("schema", "id", "files")}
        doc.update({"schema": SCHEMA, "id": item_id, "files": entries})
        try:
            model = SpoolMeta.model_validate(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise DataError(f"spool item metadata is invalid: {where}: {first.get('msg')}") from exc
        raw = model.model_dump_json(by_alias=True).encode()
        if (self.root / item_file_name(item_id, "json")).exists() and self.get(item_id) is not None:
            return item_id
        nbytes = len(raw) + sum(len(b) for b in blobs.values())
        try:
            self._write_item(item_id, blobs, raw)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                self._discard_partial(item_id)
                raise DataError(f"cannot write spool item to {self.root}: {exc}") from exc
            self._discard_partial(item_id)
            freed = self._evict(need_bytes=nbytes, protect={item_id}, at_least_one=True)
            log.warning("spool disk full; evicted %d bytes of low-score items and retrying", freed)
            try:
                self._write_item(item_id, blobs, raw)
            except OSError as exc2:
                self._discard_partial(item_id)
                raise DataError(
                    f"spool disk full at {self.root} even after eviction ({exc2}); free space or lower "
                    "the spool cap"
                ) from exc2
        if self.max_bytes is not None:  # the eviction ranking; pruned of items others removed
            self._index[item_id] = (model.score, model.captured_at, nbytes)
            self._puts += 1
            if self._puts % 1024 == 0:
                live = self.item_ids()
                for stale in set(self._index) - live:
                    del self._index[stale]
        if self._approx_bytes is not None:
            self._approx_bytes += nbytes
        if self.max_bytes is not None:
            self.enforce_cap()
        return item_id

    @staticmethod
    def _entries(files: Dict[str, FileSpec]) -> Tuple[Dict[str, dict], Dict[str, bytes]]:
        if not files:
            raise DataError("a spool item needs at least one file")
        entries: Dict[str, dict] = {}
        blobs: Dict[str, bytes] = {}
        for name, spec in files.items():
            if not isinstance(spec, tuple) or not 2 <= len(spec) <= 4:
                raise DataError(f"spool file {name!r}: expected (data, kind[, offset[, units]]), "
                                f"got {type(spec).__name__}")
            data, kind = bytes(spec[0]), spec[1]
            offset = int(spec[2]) if len(spec) > 2 else 0
            units = spec[3] if len(spec) > 3 else None
            entries[name] = {"sha256": sha256_bytes(data), "bytes": len(data), "kind": kind, "offset": offset,
                             "units": units}
            blobs[name] = data
        return entries, blobs

    def _write_item(self, item_id: str, blobs: Dict[str, bytes], raw_meta: bytes) -> None:
        for name, data in blobs.items():
            _write_atomic(self.root, item_file_name(item_id, name), data)
        _fsync_dir(self.root)  # the data files are durable before the metadata can appear
        _write_atomic(self.root, item_file_name(item_id, "json"), raw_meta)
        _fsync_dir(self.root)

    def _discard_partial(self, item_id: str) -> None:
        """Remove what a failed put of `item_id` left (only while it has no metadata, i.e. is incomplete)."""
        if (self.root / item_file_name(item_id, "json")).exists():
            return
        for entry in os.scandir(self.root):
            if _item_id_of(entry.name) == item_id or (
                entry.name.startswith(TEMP_PREFIX) and entry.name[len(TEMP_PREFIX):].startswith(item_id)
                and f".{os.getpid()}." in entry.name
            ):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    # -- reading -------------------------------------------------------------------------------------
    def item_ids(self) -> Set[str]:
        """Ids whose metadata file exists (a cheap directory listing; contents not checked)."""
        out = set()
        with os.scandir(self.root) as it:
            for entry in it:
                name = entry.name
                if len(name) == 69 and name.endswith(META_SUFFIX):
                    item_id = _item_id_of(name)
                    if item_id:
                        out.add(item_id)
        return out

    def orphan_ids(self) -> Set[str]:
        """Ids that have files but no metadata: a put in progress or one that died, or a removal cut
        short (the metadata goes first)."""
        with_meta, seen = set(), set()
        with os.scandir(self.root) as it:
            for entry in it:
                item_id = _item_id_of(entry.name)
                if item_id is None:
                    continue
                if len(entry.name) == 69 and entry.name.endswith(META_SUFFIX):
                    with_meta.add(item_id)
                else:
                    seen.add(item_id)
        return seen - with_meta

    def get(self, item_id: str) -> Optional[SpoolItem]:
        """The complete, valid item `item_id`, or None (absent, metadata invalid, or a file missing)."""
        try:
            return self.load(item_id)
        except (DataError, FileNotFoundError):
            return None

    def load(self, item_id: str) -> SpoolItem:
        """Like get() but says why: FileNotFoundError when absent, DataError when invalid or incomplete."""
        if not ITEM_ID_RE.match(item_id or ""):
            raise DataError(f"not a spool item id: {item_id!r}")
        json_path = self.root / item_file_name(item_id, "json")
        raw = json_path.read_bytes()
        meta = parse_meta(raw, source=str(json_path))
        if meta.id != item_id:
            raise DataError(f"{json_path}: metadata id {meta.id[:12]}... does not match its file name")
        paths: Dict[str, Path] = {}
        nbytes = len(raw)
        for name, entry in meta.files.items():
            p = self.root / item_file_name(item_id, name)
            try:
                size = p.stat().st_size
            except FileNotFoundError as exc:
                raise DataError(f"{json_path}: file {p.name} is missing") from exc
            if size != entry.bytes:
                raise DataError(f"{p}: size {size} differs from the {entry.bytes} bytes in its metadata")
            paths[name] = p
            nbytes += size
        return SpoolItem(id=item_id, meta=meta, paths=paths, json_path=json_path, score=meta.score,
                         nbytes=nbytes)

    def items(self) -> List[SpoolItem]:
        """Every complete, valid item, highest score first (invalid or incomplete ones are skipped)."""
        out = [it for it in (self.get(i) for i in self.item_ids()) if it is not None]
        out.sort(key=lambda it: (-it.score, it.meta.captured_at, it.id))
        return out

    def __iter__(self) -> Iterator[SpoolItem]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self.item_ids())

    def total_bytes(self) -> int:
        """Bytes of every regular file directly in the spool (items, orphans, temp files) and in failed/."""
        total = 0
        for directory in (self.root, self.root / FAILED_DIR):
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        with contextlib.suppress(OSError):
                            if entry.is_file(follow_symlinks=False):
                                total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
        self._approx_bytes = total
        return total

    def failed_items(self) -> List[Tuple[float, str, int, List[Path]]]:
        """(time of the rejection, id, bytes, files) of every item in failed/, oldest first."""
        groups: Dict[str, List] = {}  # id -> [reason file mtime or None, newest file mtime, bytes, paths]
        try:
            with os.scandir(self.root / FAILED_DIR) as it:
                entries = list(it)
        except FileNotFoundError:
            return []
        for entry in entries:
            item_id = _item_id_of(entry.name)
            if item_id is None:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            g = groups.setdefault(item_id, [None, 0.0, 0, []])
            if entry.name == item_id + FAILED_REASON_SUFFIX:
                g[0] = st.st_mtime
            g[1] = max(g[1], st.st_mtime)
            g[2] += st.st_size
            g[3].append(Path(entry.path))
        out = [(g[0] if g[0] is not None else g[1], item_id, g[2], g[3]) for item_id, g in groups.items()]
        out.sort()
        return out

    # -- removal -------------------------------------------------------------------------------------
    def remove(self, item_id: str) -> None:
        """Delete an item: its metadata first (so it stops being an item at once), then its files."""
        if not ITEM_ID_RE.match(item_id or ""):
            raise DataError(f"not a spool item id: {item_id!r}")
        json_path = self.root / item_file_name(item_id, "json")
        freed = 0
        names: Optional[List[str]] = None
        try:
            freed += json_path.stat().st_size
            files = json.loads(json_path.read_bytes()).get("files")
            if isinstance(files, dict) and all(isinstance(n, str) and FILE_NAME_RE.match(n) for n in files):
                names = list(files)
        except (OSError, ValueError, AttributeError):
            names = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(json_path)
        # the names in the metadata (no directory listing, which costs O(spool size)); else a listing
        paths = ([self.root / item_file_name(item_id, n) for n in names] if names is not None
                 else self._item_files(item_id))
        for path in paths:
            with contextlib.suppress(OSError):
                freed += path.stat().st_size
                os.unlink(path)
        self._index.pop(item_id, None)
        if self._approx_bytes is not None:
            self._approx_bytes = max(0, self._approx_bytes - freed)

    def _item_files(self, item_id: str) -> List[Path]:
        prefix = item_id + "."
        out = []
        with os.scandir(self.root) as it:
            for entry in it:
                if entry.name.startswith(prefix):
                    out.append(Path(entry.path))
        return out

    def move_to_failed(self, item_id: str, reason: dict) -> Path:
        """Move an item's files to `<spool>/failed/` with `<id>.failed.json` (the reason); returns the dir.

        The files move by rename (no space needed); on a full disk the reason file may not fit, which is
        logged (the reason is in the daemon's log and job table too) and does not stop the move.
        """
        failed = self.root / FAILED_DIR
        failed.mkdir(exist_ok=True)
        json_path = self.root / item_file_name(item_id, "json")
        files = [p for p in self._item_files(item_id) if p != json_path]
        # metadata first so the item disappears from the spool in one step
        for path in ([json_path] if json_path.exists() else []) + files:
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, failed / path.name)
        try:
            _write_atomic(failed, f"{item_id}{FAILED_REASON_SUFFIX}",
                          json.dumps(dict(reason, id=item_id), indent=1, sort_keys=True).encode())
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.warning("spool disk full: moved rejected item %s to %s without its reason file (%s)",
                        item_id[:12], failed, reason.get("reason"))
        _fsync_dir(failed)
        self._index.pop(item_id, None)
        return failed

    def cleanup_orphans(self, min_age_s: float = 60) -> int:
        """Delete temp files and item files without metadata older than `min_age_s`; returns the count."""
        now = time.time()
        with_meta = self.item_ids()
        removed = 0
        with os.scandir(self.root) as it:
            entries = list(it)
        for entry in entries:
            name = entry.name
            if name.startswith(TEMP_PREFIX):
                orphan = True
            else:
                item_id = _item_id_of(name)
                orphan = item_id is not None and item_id not in with_meta
            if not orphan:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if not entry.is_file(follow_symlinks=False) or now - st.st_mtime < min_age_s:
                    continue
                if not name.startswith(TEMP_PREFIX) and (self.root / (name[:64] + META_SUFFIX)).exists():
                    continue  # its metadata appeared meanwhile
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("spool %s: removed %d orphan/temp files older than %.0f s", self.root, removed,
                     min_age_s)
            self._approx_bytes = None
        return removed

    # -- the cap -------------------------------------------------------------------------------------
    def enforce_cap(self, protect: Optional[Set[str]] = None, measure: bool = False) -> int:
        """Evict lowest-score items until the spool fits `max_bytes`; returns the number of bytes freed.

        Uses this process's running total unless `measure` (or the total crossed the cap): a reader
        that does not write (the daemon) passes measure=True, as the writer's puts are not in its total.
        """
        if self.max_bytes is None:
            return 0
        if not measure and self._approx_bytes is not None and self._approx_bytes <= self.max_bytes:
            return 0
        total = self.total_bytes()  # the cached figure crossed the cap: measure for real
        if total <= self.max_bytes:
            return 0
        return self._evict(need_bytes=total - self.max_bytes, protect=protect or set())

    def _evict(self, need_bytes: int, protect: Set[str], at_least_one: bool = False) -> int:
        freed = 0

        def enough() -> bool:
            return freed >= need_bytes and not (at_least_one and freed == 0)

        for _, item_id, nbytes, paths in self.failed_items():  # rejected for good: first, oldest first
            if enough():
                return freed
            meta_name = item_file_name(item_id, "json")
            for path in sorted(paths, key=lambda p: p.name != meta_name):  # its metadata first
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            freed += nbytes
            self.evicted_failed += 1
            if self._approx_bytes is not None:
                self._approx_bytes = max(0, self._approx_bytes - nbytes)
            log.info("spool %s: deleted rejected item %s from %s/ (%d bytes) to stay under the cap",
                     self.root, item_id[:12], FAILED_DIR, nbytes)
        ids = self.item_ids()
        for stale in set(self._index) - ids:
            del self._index[stale]
        ranked = []
        for item_id in ids:
            if item_id in protect:
                continue
            info = self._index.get(item_id)
            if info is None:
                item = self.get(item_id)
                if item is None:
                    continue  # invalid/incomplete: the daemon quarantines it; orphan cleanup the rest
                info = self._index[item_id] = (item.score, item.meta.captured_at, item.nbytes)
            ranked.append((info[0], info[1], item_id, info[2]))
        ranked.sort()  # lowest score first, then oldest
        for score, _, item_id, nbytes in ranked:
            if enough():
                break
            if self.is_locked(item_id):
                continue  # being uploaded right now
            self.remove(item_id)
            freed += nbytes
            self.evicted += 1
            log.info("spool %s: evicted item %s (score %.4g, %d bytes) to stay under the cap",
                     self.root, item_id[:12], score, nbytes)
        return freed

    # -- upload locks (daemon <-> writer) -------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, item_id: str) -> Iterator[None]:
        """Hold an advisory lock on an item (the daemon does while uploading it): eviction skips it."""
        import fcntl

        locks = self.root / LOCKS_DIR
        path = locks / f"{item_id}.lock"
        fd: Optional[int] = None
        try:
            locks.mkdir(exist_ok=True)
            fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # a full disk must not stop the upload: unlocked, the writer may evict the item meanwhile,
            # which the upload sees as a vanished file (kept for a later try) or the server confirms anyway
            log.debug("spool disk full: uploading %s without its lock file", item_id[:12])
        if fd is None:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)

    def is_locked(self, item_id: str) -> bool:
        """True when another holder (the daemon) has the item's upload lock right now."""
        import fcntl

        path = self.root / LOCKS_DIR / f"{item_id}.lock"
        try:
            fd = os.open(str(path), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing drops our probe lock, if we got it
        return False
