"""The upload daemon's durable job table: one SQLite row per spool item.

States: queued -> uploading -> done | failed, plus `gone` (the item left the spool before it was sent:
evicted by the cap or deleted by hand). SQLite in WAL mode with synchronous=FULL, so every committed
transition survives a crash or a power loss. At start `recover()` turns 'uploading' rows back into
'queued' (at-least-once: the item id is its content hash, so a second send is a harmless duplicate,
and the server's duplicate answer is what confirms it).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Dict, Iterator, List, Optional, Set, Union

from edgedepth.errors import DataError

QUEUED, UPLOADING, DONE, FAILED, GONE = "queued", "uploading", "done", "failed", "gone"
STATES = (QUEUED, UPLOADING, DONE, FAILED, GONE)
WAL_CHECKPOINT_PAGES = 100  # checkpoint when the WAL holds this many pages (SQLite's default: 1000)
WAL_SIZE_LIMIT = 1 << 20  # bytes the WAL file is cut back to after a checkpoint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    score REAL NOT NULL DEFAULT 0,
    nbytes INTEGER NOT NULL DEFAULT 0,
    captured_at TEXT NOT NULL DEFAULT '',
    enqueued_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    check_server INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, score DESC, captured_at);
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs (state, updated_at);
"""


@dataclass
class Job:
    id: str
    state: str
    score: float
    nbytes: int
    captured_at: str
    enqueued_at: float
    attempts: int
    next_attempt_at: float
    check_server: bool  # an earlier attempt may have reached the server (a re-send is then a duplicate)
    last_error: str


class JobQueue:
    """Durable job table. One process writes it (the daemon); `status` may read it at the same time."""

    def __init__(self, path: Union[str, Path], readonly: bool = False,
                 write_lock: Optional[threading.Lock] = None, in_memory: bool = False):
        """`write_lock`: shared by JobQueues of one process on the same file (one per thread), so their
        write transactions queue on it and wake at once, instead of in SQLite's sleeping busy handler.
        `in_memory`: a table that lives only in this connection (the daemon's last resort when the disk
        is too full to open `path`; the spool itself is the durable record of what is to be sent)."""
        self.path = Path(path)
        self.in_memory = in_memory
        self._write_lock = write_lock or threading.Lock()
        try:
            if in_memory:
                self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                self._db.executescript(_SCHEMA)
            elif readonly:
                if not self.path.exists():
                    raise DataError(f"no upload queue at {self.path}: has the daemon run on this spool?")
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30,
                                           isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                # A small WAL, reused from its start after each checkpoint: the table's footprint stays
                # bounded (~0.5 MiB beyond the rows), which matters on a spool disk that fills up.
                self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
                self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise DataError(f"cannot open the upload queue {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- transitions ---------------------------------------------------------------------------------
    def recover(self) -> int:
        """After a crash: 'uploading' rows go back to 'queued' and are checked with the server first."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state=?, check_server=1, updated_at=? WHERE state=?",
                (QUEUED, time.time(), UPLOADING),
            )
            return cur.rowcount

    def add(self, item_id: str, score: float, nbytes: int, captured_at: str) -> bool:
        """Queue an item seen in the spool; True when it is (again) queued by this call.

        An item already queued/uploading is left alone. One that is done/failed/gone but is in the spool
        again (the same content was spooled again) is queued again, flagged to ask the server first.
        """
        return self.add_many([(item_id, score, nbytes, captured_at)]) == 1

    def add_many(self, rows: List[tuple]) -> int:
        """`add()` for many (item_id, score, nbytes, captured_at) rows in one transaction; returns #queued."""
        now = time.time()
        queued = 0
        with self._tx() as db:
            for item_id, score, nbytes, cap in rows:
                row = db.execute("SELECT state FROM jobs WHERE id=?", (item_id,)).fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO jobs (id, state, score, nbytes, captured_at, enqueued_at, updated_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (item_id, QUEUED, float(score), int(nbytes), cap, now, now),
                    )
                elif row["state"] in (QUEUED, UPLOADING):
                    continue
                else:
                    db.execute(
                        "UPDATE jobs SET state=?, score=?, nbytes=?, captured_at=?, enqueued_at=?,"
                        " updated_at=?, attempts=0, next_attempt_at=0, check_server=1, last_error=''"
                        " WHERE id=?",
                        (QUEUED, float(score), int(nbytes), cap, now, now, item_id),
                    )
                queued += 1
        return queued

    def _set(self, item_id: str, state: str, **fields) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        sql = f"UPDATE jobs SET state=?, updated_at=?{', ' + cols if cols else ''} WHERE id=?"
        with self._tx() as db:
            db.execute(sql, (state, time.time(), *fields.values(), item_id))

    def mark_uploading(self, item_id: str) -> None:
        # The one transition committed without its own fsync (synchronous=NORMAL; the next FULL commit
        # makes it durable): if a power loss drops it, the row is simply 'queued' again and the item is
        # re-sent, which the server answers as a duplicate. Saves one fsync per upload.
        with self._write_lock:  # the pragma is per connection: keep it NORMAL only for this commit
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute("UPDATE jobs SET state=?, updated_at=? WHERE id=?",
                                     (UPLOADING, time.time(), item_id))
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    def mark_done(self, item_id: str) -> None:
        self._set(item_id, DONE, last_error="")

    def mark_failed(self, item_id: str, reason: str) -> None:
        self._set(item_id, FAILED, last_error=reason[:2000])

    def mark_gone(self, item_id: str, reason: str) -> None:
        self._set(item_id, GONE, last_error=reason[:2000])

    def retry_later(self, item_id: str, delay_s: float, error: str, reached_server: bool = True) -> None:
        """A transient failure: back to 'queued', one more attempt counted, not before now + delay."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, attempts=attempts+1, next_attempt_at=?, last_error=?, updated_at=?,"
                " check_server=MAX(check_server, ?) WHERE id=?",
                (QUEUED, time.time() + max(0.0, delay_s), error[:2000], time.time(), int(reached_server),
                 item_id),
            )

    def delete_finished(self, older_than_s: float) -> int:
        """Forget done/gone rows older than `older_than_s` (failed rows stay for inspection)."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM jobs WHERE state IN (?, ?) AND updated_at < ?",
                             (DONE, GONE, time.time() - older_than_s))
            return cur.rowcount

    # -- queries -------------------------------------------------------------------------------------
    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(id=row["id"], state=row["state"], score=row["score"], nbytes=row["nbytes"],
                   captured_at=row["captured_at"], enqueued_at=row["enqueued_at"], attempts=row["attempts"],
                   next_attempt_at=row["next_attempt_at"], check_server=bool(row["check_server"]),
                   last_error=row["last_error"])

    def get(self, item_id: str) -> Optional[Job]:
        row = self._db.execute("SELECT * FROM jobs WHERE id=?", (item_id,)).fetchone()
        return self._job(row) if row else None

    def next_ready(self, now: Optional[float] = None, exclude: Collection[str] = ()) -> Optional[Job]:
        """The highest-score queued job whose back-off has passed (oldest first among equal scores),
        other than those in `exclude` (a few items whose row change is still to be written)."""
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state=? AND next_attempt_at<=? ORDER BY score DESC, captured_at, id"
            " LIMIT ?",
            (QUEUED, time.time() if now is None else now, len(exclude) + 1),
        )
        for row in rows:
            if row["id"] not in exclude:
                return self._job(row)
        return None

    def next_attempt_time(self) -> Optional[float]:
        """Earliest time a queued job becomes ready, or None when nothing is queued."""
        row = self._db.execute("SELECT MIN(next_attempt_at) FROM jobs WHERE state=?", (QUEUED,)).fetchone()
        return row[0]

    def ids(self, states: tuple = (QUEUED, UPLOADING)) -> Set[str]:
        marks = ",".join("?" * len(states))
        return {r[0] for r in self._db.execute(f"SELECT id FROM jobs WHERE state IN ({marks})", states)}

    def counts(self) -> Dict[str, int]:
        out = {s: 0 for s in STATES}
        for state, n in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            out[state] = n
        return out

    def pending_bytes(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(nbytes), 0) FROM jobs WHERE state IN (?, ?)",
                               (QUEUED, UPLOADING)).fetchone()
        return int(row[0])

    def oldest_pending_age(self, now: Optional[float] = None) -> float:
        """Seconds since the oldest queued/uploading job was first seen (0 when none)."""
        row = self._db.execute("SELECT MIN(enqueued_at) FROM jobs WHERE state IN (?, ?)",
                               (QUEUED, UPLOADING)).fetchone()
        if row[0] is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - row[0])

    def failed(self, limit: int = 20) -> List[Job]:
        rows = self._db.execute("SELECT * FROM jobs WHERE state=? ORDER BY updated_at DESC LIMIT ?",
                                (FAILED, limit))
        return [self._job(r) for r in rows]
