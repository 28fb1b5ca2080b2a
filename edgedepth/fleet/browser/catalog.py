"""The browser's catalog: one row per stored frame with the columns the data browser sorts and filters on,
each indexed, plus which rounds each frame went into.

It is derived data in its own SQLite file (default STORE/browse.db), rebuilt from the store when lost. It
follows the store: for a local store it reads the new rows of STORE/index.db in commit order (its rowid;
read-only connection), for other stores the items received since the newest one seen (with an overlap, as
servers may commit out of order). Pages are keyset-paginated over (sort column, id) indexes, so a deep page
costs what the first one does.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from edgedepth.errors import DataError

log = logging.getLogger(__name__)

MISSING = -1.0  # score parts absent from an item (every real part is >= 0)
SORTS: Dict[str, str] = {  # ?sort= value -> column
    "score": "score",
    "uncertainty": "s_unc",
    "temporal": "s_temporal",
    "novelty": "s_novelty",
    "captured": "captured_at",
    "received": "received_at",
    "device": "device_id",
    "bytes": "bytes",
}
TEXT_FILTERS: Dict[str, str] = {  # ?name= exact-match filters -> column
    "device": "device_id",
    "domain": "domain",
    "source": "source",
    "selection": "selection",
    "label": "label",
    "model": "model_version",
}
DEPTH_KINDS = ("depth_gt", "depth_sensor")
SYNC_BATCH = 5000
REMOTE_OVERLAP_S = 600.0  # stores without an index: re-read this much before the newest item seen

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    captured_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    score REAL NOT NULL,
    s_unc REAL NOT NULL,
    s_temporal REAL NOT NULL,
    s_novelty REAL NOT NULL,
    domain TEXT NOT NULL,
    source TEXT NOT NULL,
    selection TEXT NOT NULL,
    label TEXT NOT NULL,
    model_version TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    rgb TEXT,
    depth TEXT,
    pred TEXT,
    unc TEXT
);
CREATE TABLE IF NOT EXISTS frame_rounds (
    round TEXT NOT NULL,
    item_id TEXT NOT NULL,
    split TEXT NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (round, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS frame_rounds_item ON frame_rounds (item_id);
CREATE TABLE IF NOT EXISTS sync (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Every sort column: (column, id), so a page is an index range. Every exact-match filter: (column, score, id),
# so a selective filter is an index search (then sorted) and the default sort needs no sort at all; with
# the statistics ANALYZE keeps, SQLite picks between the two.
_INDEXES = [f"CREATE INDEX IF NOT EXISTS frames_{col} ON frames ({col}, id)" for col in SORTS.values()]
_INDEXES += [f"CREATE INDEX IF NOT EXISTS frames_{col}_score ON frames ({col}, score, id)"
             for col in TEXT_FILTERS.values()]
_INDEXES.append("CREATE INDEX IF NOT EXISTS frames_device_id_captured ON frames (device_id, captured_at, id)")
# covers the uploads-per-device-over-time totals (no table lookups)
_INDEXES.append("CREATE INDEX IF NOT EXISTS frames_device_bytes ON frames (device_id, received_at, bytes)")
BULK_ROWS = 20000  # a first sync at least this large inserts without indexes and builds them after


def _num(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return MISSING
    return x if math.isfinite(x) else MISSING


def _first_file(files: Dict[str, Any], kinds: Sequence[str]) -> Optional[str]:
    for kind in kinds:
        for name, entry in files.items():
            if (isinstance(entry, dict) and entry.get("kind") == kind
                    and int(entry.get("offset", 0) or 0) == 0):
                return name
    return None


def frame_row(meta: dict) -> tuple:
    """The catalog row of one item's stored metadata (SpoolMeta + received_at, stored_bytes)."""
    files = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    scores = meta.get("scores") if isinstance(meta.get("scores"), dict) else {}
    labels = [str(x) for x in (meta.get("labels") or []) if x]
    depth = _first_file(files, DEPTH_KINDS)
    label = labels[0] if labels else (files[depth]["kind"] if depth else "none")
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    novelty = scores.get("novelty", scores.get("novelty_ref"))
    return (
        str(meta["id"]), str(meta.get("device_id") or ""), str(meta.get("captured_at") or ""),
        str(meta.get("received_at") or ""), _num(meta.get("score")), _num(scores.get("uncertainty")),
        _num(scores.get("temporal")), _num(novelty), str(meta.get("domain") or ""),
        str(meta.get("source") or ""), str(meta.get("selection") or ""), label,
        str(model.get("version") or ""), int(meta.get("stored_bytes") or 0), int(meta.get("width") or 0),
        int(meta.get("height") or 0), _first_file(files, ("rgb",)), depth,
        _first_file(files, ("depth_pred",)), _first_file(files, ("uncertainty",)),
    )


_COLUMNS = ("id", "device_id", "captured_at", "received_at", "score", "s_unc", "s_temporal", "s_novelty",
            "domain", "source", "selection", "label", "model_version", "bytes", "width", "height", "rgb",
            "depth", "pred", "unc")
_INSERT = f"INSERT OR IGNORE INTO frames VALUES ({','.join('?' * len(_COLUMNS))})"


def encode_cursor(row: dict, sort: str) -> str:
    raw = json.dumps([row[SORTS[sort]], row["id"]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Tuple[Any, str]:
    """(sort value, id) of a page cursor; DataError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value, item_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise DataError(f"bad page cursor {text[:40]!r}: follow the page links") from exc
    if not isinstance(item_id, str) or not isinstance(value, (str, int, float)):
        raise DataError(f"bad page cursor {text[:40]!r}: follow the page links")
    return value, item_id


@dataclass
class FrameQuery:
    """Filters, sort and page position of a frames list (the list page's query string)."""

    sort: str = "score"
    desc: bool = True
    filters: Dict[str, str] = field(default_factory=dict)  # TEXT_FILTERS name -> exact value
    round: Optional[str] = None
    score_min: Optional[float] = None
    score_max: Optional[float] = None
    captured_from: Optional[str] = None  # ISO 8601 prefix, compared as text (fixed-width UTC stamps)
    captured_to: Optional[str] = None
    has: Optional[str] = None  # "depth" | "pred" | "unc": only frames with that file
    limit: int = 48
    after: Optional[Tuple[Any, str]] = None
    before: Optional[Tuple[Any, str]] = None


@dataclass
class Page:
    rows: List[dict]
    total: int
    next_cursor: Optional[str]
    prev_cursor: Optional[str]


class Catalog:
    """The browse.db of one store (thread-safe: one connection, serialized by a lock)."""

    def __init__(self, path: Path, store=None, refresh_s: float = 2.0) -> None:
        self.path = Path(path)
        self.store = store
        self.refresh_s = float(refresh_s)
        self.generation = 0  # bumped whenever rows or round memberships change (caches key on it)
        self._last_refresh = -1e18
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # derived data: rebuilt from the store if lost
        self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB: index inserts and scans stay in memory
        self._db.execute("PRAGMA analysis_limit=2000")  # ANALYZE samples: milliseconds, not a table scan
        self._db.executescript(_SCHEMA)
        self._create_indexes()

    def _create_indexes(self) -> None:
        for sql in _INDEXES:
            self._db.execute(sql)

    def _drop_indexes(self) -> None:
        for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                        "tbl_name = 'frames' AND name LIKE 'frames_%'").fetchall():
            self._db.execute(f"DROP INDEX {name}")

    # -- following the store -------------------------------------------------------------------
    def _get(self, key: str, default: str = "") -> str:
        row = self._db.execute("SELECT value FROM sync WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO sync VALUES (?, ?)", (key, value))

    def add_metas(self, metas: Iterable[dict]) -> int:
        """Add items' stored metadata (already present ids are skipped); returns rows added."""
        rows = []
        for meta in metas:
            try:
                rows.append(frame_row(meta))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("catalog: skipping an item with unusable metadata (%s)", exc)
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            try:
                self._db.executemany(_INSERT, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            added = self._db.total_changes - before
            if added:
                self.generation += 1
            return added

    def refresh(self, force: bool = False) -> int:
        """Take in items stored since the last refresh (at most every refresh_s); returns rows added."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_refresh < self.refresh_s:
                return 0
            self._last_refresh = now
            if self.store is None:
                return 0
            index = getattr(self.store, "index", None)
            try:
                if index is not None and getattr(index, "path", None) is not None:
                    added = self._sync_index(Path(index.path))
                else:
                    added = self._sync_items()
            except sqlite3.Error as exc:  # e.g. no index.db yet; the next refresh tries again
                log.warning("catalog: cannot read the store's index (%s); showing what was read before", exc)
                return 0
            if added:
                self._db.execute("ANALYZE")  # keeps the planner's choice of index right as the data grows
            return added

    def _sync_index(self, index_path: Path) -> int:
        src = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True, timeout=30.0)
        try:
            last = int(self._get("index_rowid", "0"))
            last_id = self._get("index_last_id")
            if last:
                row = src.execute("SELECT id FROM items WHERE rowid = ?", (last,)).fetchone()
                if row is None or row[0] != last_id:  # the index was rebuilt: start over
                    log.warning("catalog: %s was rebuilt; re-reading it", index_path)
                    self._db.execute("DELETE FROM frames")
                    self.generation += 1
                    last = 0
            added = 0
            bulk = self.count() == 0 and src.execute(
                "SELECT count(*) FROM items WHERE rowid > ?", (last,)).fetchone()[0] >= BULK_ROWS
            if bulk:
                log.info("catalog: reading %s for the first time", index_path)
                self._drop_indexes()
            while True:
                rows = src.execute("SELECT rowid, id, meta FROM items WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                   (last, SYNC_BATCH)).fetchall()
                if not rows:
                    if bulk:
                        self._create_indexes()
                    return added
                metas = []
                for _, item_id, text in rows:
                    try:
                        metas.append(json.loads(text))
                    except ValueError:
                        log.warning("catalog: item %s has unreadable metadata in the index", item_id[:12])
                added += self.add_metas(metas)
                last, last_id = rows[-1][0], rows[-1][1]
                self._set("index_rowid", str(last))
                self._set("index_last_id", last_id)
        finally:
            src.close()

    def _sync_items(self) -> int:
        from edgedepth.fleet.store.base import format_time, parse_time

        newest = self._get("newest_received")
        since = None
        if newest:
            import datetime as _dt

            since = format_time(parse_time(newest) - _dt.timedelta(seconds=REMOTE_OVERLAP_S))
        added, batch = 0, []
        for meta in self.store.iter_items(since=since):
            batch.append(meta)
            received = str(meta.get("received_at") or "")
            if received > newest:
                newest = received
            if len(batch) >= SYNC_BATCH:
                added += self.add_metas(batch)
                batch = []
        added += self.add_metas(batch)
        if newest:
            self._set("newest_received", newest)
        return added

    def set_rounds(self, memberships: List[Tuple[str, str, str, str]], signature: str) -> None:
        """Replace the round memberships, (round, item id, split, label) rows, unless `signature` (of
        the lineage files they came from) is unchanged."""
        with self._lock:
            if self._get("rounds_signature") == signature:
                return
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM frame_rounds")
                self._db.executemany("INSERT OR IGNORE INTO frame_rounds VALUES (?, ?, ?, ?)", memberships)
                self._set("rounds_signature", signature)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.generation += 1

    # -- reading -------------------------------------------------------------------------------
    def _where(self, q: FrameQuery) -> Tuple[List[str], List[Any]]:
        where: List[str] = []
        args: List[Any] = []
        for name, value in q.filters.items():
            if name in TEXT_FILTERS and value:
                where.append(f"{TEXT_FILTERS[name]} = ?")
                args.append(value)
        if q.round:
            where.append("id IN (SELECT item_id FROM frame_rounds WHERE round = ?)")
            args.append(q.round)
        if q.score_min is not None:
            where.append("score >= ?")
            args.append(q.score_min)
        if q.score_max is not None:
            where.append("score <= ?")
            args.append(q.score_max)
        if q.captured_from:
            where.append("captured_at >= ?")
            args.append(q.captured_from)
        if q.captured_to:
            where.append("captured_at < ?")
            args.append(q.captured_to)
        if q.has in ("depth", "pred", "unc"):
            where.append(f"{q.has} IS NOT NULL")
        return where, args

    def _keyset(self, q: FrameQuery, where: List[str], args: List[Any], cursor: Tuple[Any, str],
                forward: bool, limit: int) -> List[sqlite3.Row]:
        col = SORTS[q.sort]
        desc = q.desc if forward else not q.desc
        op = "<" if desc else ">"
        clauses = where + [f"({col}, id) {op} (?, ?)"] if cursor is not None else list(where)
        params = args + [cursor[0], cursor[1]] if cursor is not None else list(args)
        order = "DESC" if desc else "ASC"
        sql = (f"SELECT * FROM frames {'WHERE ' + ' AND '.join(clauses) if clauses else ''} "
               f"ORDER BY {col} {order}, id {order} LIMIT ?")
        return self._db.execute(sql, (*params, limit)).fetchall()

    def page(self, q: FrameQuery) -> Page:
        """One page of frames matching `q`, with cursors for the pages beside it and the match count."""
        if q.sort not in SORTS:
            raise DataError(f"unknown sort {q.sort!r}; one of {', '.join(SORTS)}")
        limit = max(1, min(int(q.limit), 500))
        where, args = self._where(q)
        with self._lock:
            col = SORTS[q.sort]
            if q.before is not None:  # walking back: one more row tells whether a previous page exists
                rows = self._keyset(q, where, args, q.before, False, limit + 1)
                has_prev = len(rows) > limit
                out = [dict(r) for r in reversed(rows[:limit])]
                has_next = bool(out)  # the page the cursor came from
            else:
                rows = self._keyset(q, where, args, q.after, True, limit + 1)
                has_next = len(rows) > limit
                out = [dict(r) for r in rows[:limit]]
                has_prev = bool(out) and q.after is not None and bool(
                    self._keyset(q, where, args, (out[0][col], out[0]["id"]), False, 1))
            total = self._db.execute(
                f"SELECT count(*) FROM frames {'WHERE ' + ' AND '.join(where) if where else ''}", args
            ).fetchone()[0]
            if out:
                self._attach_rounds(out)
        return Page(rows=out, total=int(total),
                    next_cursor=encode_cursor(out[-1], q.sort) if has_next else None,
                    prev_cursor=encode_cursor(out[0], q.sort) if has_prev else None)

    def _attach_rounds(self, rows: List[dict]) -> None:
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids))
        found: Dict[str, List[dict]] = {}
        for r in self._db.execute(f"SELECT item_id, round, split, label FROM frame_rounds "
                                  f"WHERE item_id IN ({marks}) ORDER BY round", ids):
            found.setdefault(r["item_id"], []).append({"round": r["round"], "split": r["split"],
                                                       "label": r["label"]})
        for row in rows:
            row["rounds"] = found.get(row["id"], [])

    def get(self, item_id: str) -> Optional[dict]:
        with self._lock:
            row = self._db.execute("SELECT * FROM frames WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return None
            out = [dict(row)]
            self._attach_rounds(out)
        return out[0]

    def facets(self, limit: int = 200) -> Dict[str, List[str]]:
        """Distinct values of each text filter (at most `limit` each), for the filter form."""
        out: Dict[str, List[str]] = {}
        with self._lock:
            for name, col in TEXT_FILTERS.items():
                out[name] = [r[0] for r in self._db.execute(
                    f"SELECT DISTINCT {col} FROM frames WHERE {col} != '' ORDER BY {col} LIMIT ?", (limit,))]
            out["round"] = [r[0] for r in self._db.execute("SELECT DISTINCT round FROM frame_rounds "
                                                           "ORDER BY round LIMIT ?", (limit,))]
        return out

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM frames").fetchone()[0])

    def activity(self) -> Dict[str, Any]:
        """Uploads per device per time bucket (hours when the received times span <= 3 days, else days)."""
        with self._lock:
            lo, hi = self._db.execute("SELECT min(received_at), max(received_at) FROM frames").fetchone()
            if lo is None:
                return {"bucket": "day", "buckets": [], "devices": []}
            from edgedepth.fleet.store.base import parse_time

            try:
                span = (parse_time(hi) - parse_time(lo)).total_seconds()
            except DataError:
                span = 1e9
            width, bucket = (13, "hour") if span <= 3 * 86400 else (10, "day")
            rows = self._db.execute(
                f"SELECT device_id, substr(received_at, 1, {width}) AS b, count(*), sum(bytes) FROM frames "
                "GROUP BY device_id, b ORDER BY device_id, b").fetchall()
        buckets = sorted({r[1] for r in rows})
        devices: Dict[str, Dict[str, Any]] = {}
        for dev, b, n, nbytes in rows:
            d = devices.setdefault(dev, {"device": dev, "frames": 0, "bytes": 0, "per_bucket": {}})
            d["frames"] += int(n)
            d["bytes"] += int(nbytes or 0)
            d["per_bucket"][b] = (int(n), int(nbytes or 0))
        return {"bucket": bucket, "buckets": buckets, "devices": list(devices.values())}

    def close(self) -> None:
        with self._lock:
            self._db.close()
