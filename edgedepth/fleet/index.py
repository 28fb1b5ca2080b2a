"""SQLite index of ingested frames (local store): one row per stored item, read by round building.

WAL journal with synchronous=FULL, so a committed row survives power loss. The index is derived
data: every row can be rebuilt from the items' meta.json files (`LocalStore.reindex`).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from pathlib import Path
from typing import Iterator, Optional, Tuple

from edgedepth.errors import DataError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    captured_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    score REAL NOT NULL,
    model_name TEXT,
    model_version TEXT,
    model_sha256 TEXT,
    source TEXT,
    domain TEXT,
    selection TEXT,
    labels TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_received ON items (received_at, id);
CREATE INDEX IF NOT EXISTS items_device ON items (device_id, captured_at);
"""


class FrameIndex:
    """Thread-safe index of ingested items (one connection, serialized by a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @staticmethod
    def row(meta: dict) -> Tuple:
        """The index row of one item's metadata; DataError if a required field is missing or not finite.

        Called before an item is written, so an item the index would refuse is never stored.
        """
        try:
            model = meta.get("model") or {}
            score = float(meta.get("score", 0.0))
            if not math.isfinite(score):
                raise DataError(f"item {str(meta.get('id'))[:12]}: score {score} is not a finite number")
            for key in ("id", "device_id", "captured_at", "received_at"):
                if not isinstance(meta.get(key), str) or not meta[key]:
                    raise DataError(f"item {str(meta.get('id'))[:12]}: metadata field {key} is missing")
            return (
                meta["id"], meta["device_id"], meta["captured_at"], meta["received_at"], score,
                model.get("name"), model.get("version"), model.get("sha256"),
                meta.get("source"), meta.get("domain"), meta.get("selection"),
                json.dumps(list(meta.get("labels") or []), allow_nan=False), int(meta.get("stored_bytes", 0)),
                json.dumps(meta, sort_keys=True, allow_nan=False),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"item {str(meta.get('id'))[:12]}: metadata cannot be indexed: {exc}") from exc

    def add(self, meta: dict) -> bool:
        """Insert one item's row; False if the id was already indexed.

        Only a duplicate id is ignored: any other constraint violation raises (sqlite3.IntegrityError).
        """
        return self.add_row(self.row(meta))

    def add_row(self, row: Tuple) -> bool:
        """`add` for a row already made by `row(meta)`."""
        with self._lock:
            cur = self._db.execute("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                                   "ON CONFLICT(id) DO NOTHING", row)
            return cur.rowcount == 1

    def contains(self, item_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone() is not None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def iter_meta(self, since: Optional[str] = None, batch: int = 500) -> Iterator[dict]:
        """Stored metadata in (received_at, id) order, received strictly after `since` if given.

        Read in pages (keyset pagination), so the lock is never held while the caller works.
        """
        sql = "SELECT received_at, id, meta FROM items WHERE {} ORDER BY received_at, id LIMIT ?"
        where, args = ("received_at > ?", (since,)) if since is not None else ("1", ())
        while True:
            with self._lock:
                rows = self._db.execute(sql.format(where), (*args, batch)).fetchall()
            for _, _, meta in rows:
                yield json.loads(meta)
            if len(rows) < batch:
                return
            where, args = "(received_at, id) > (?, ?)", (rows[-1][0], rows[-1][1])

    def close(self) -> None:
        with self._lock:
            self._db.close()
