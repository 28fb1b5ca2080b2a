"""Marks delivered items done and deletes their files, in a thread beside the upload loop."""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from pathlib import Path
from typing import List, Optional, Set

from edgedepth.fleet.diskfull import Reserve, write_or_release
from edgedepth.fleet.queue import JobQueue
from edgedepth.spool import Spool

log = logging.getLogger("edgedepth.fleet.daemon")


class Finalizer:
    """Takes the fsync of the 'done' commit and the unlinks off the path between two uploads.

    Only items the server confirmed come here. The row is marked done first, then the files go: a crash
    before the delete leaves the row 'uploading', and the next start sends the item again, which the
    server answers as a duplicate. When the job table cannot be written (a full disk) the files are
    deleted anyway, as the server has the item and deleting is what frees the disk; the 'done' mark is
    kept in memory and written when the table has room again (after a crash meanwhile the row ends
    'gone' instead of 'done'; nothing is lost). Its JobQueue shares the loop's write lock, so the two
    connections never meet in SQLite's sleeping busy handler.
    """

    RETRY_S = 2.0  # how often unrecorded 'done' marks are tried again

    def __init__(self, db_path: Path, spool_root: Path, write_lock: threading.Lock,
                 reserve: Optional[Reserve] = None, max_pending: int = 64, queue: Optional[JobQueue] = None):
        """`queue`: the loop's own JobQueue to share (an in-memory table), else one is opened on `db_path`."""
        self._db_path, self._root, self._write_lock = db_path, spool_root, write_lock
        self._reserve = reserve
        self._tasks: "queue_mod.Queue[Optional[str]]" = queue_mod.Queue(maxsize=max_pending)
        self._idle = threading.Condition()
        self._pending = 0
        self._ids: Set[str] = set()
        self._unrecorded: List[str] = []  # delivered and deleted, 'done' not yet in the table
        self._queue: Optional[JobQueue] = queue
        self._own_queue = queue is None
        self.errors = 0
        self._warned_at = -1e9
        self._thread = threading.Thread(target=self._run, name="finalizer", daemon=True)
        self._thread.start()

    def submit(self, item_id: str) -> None:
        with self._idle:
            self._pending += 1
            self._ids.add(item_id)
        self._tasks.put(item_id)  # blocks when far behind: back-pressure on the upload loop

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def pending_ids(self) -> Set[str]:
        """Items delivered whose files may still be on disk or whose 'done' mark is not written yet
        (a spool scan must neither queue them again nor call them gone)."""
        with self._idle:
            return set(self._ids)

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 60.0) -> None:
        self._tasks.put(None)
        self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------------------
    def _mark_done(self, item_id: str) -> bool:
        try:
            if self._queue is None:
                self._queue = JobQueue(self._db_path, write_lock=self._write_lock)
            ok = write_or_release(self._reserve, self._db_path.parent, self._queue.mark_done, item_id)
        except Exception as exc:  # noqa: BLE001 - the files still go; the mark is tried again later
            self.errors += 1
            ok = False
            log.debug("recording delivered item %s as done failed: %s", item_id[:12], exc)
        if not ok and time.monotonic() - self._warned_at > 300.0:
            self._warned_at = time.monotonic()
            log.warning("the job table cannot be written (spool disk full?): delivered items are deleted "
                        "anyway and recorded as done once it can")
        return ok

    def _finish(self, item_id: str, spool: Spool) -> None:
        recorded = self._mark_done(item_id)  # first: a crash before the delete only costs a re-send
        if not recorded:
            self._unrecorded.append(item_id)
        for attempt in (1, 2, 3):
            try:
                spool.remove(item_id)
                break
            except Exception:  # noqa: BLE001 - logged; a later scan finishes an interrupted removal
                self.errors += 1
                log.exception("deleting delivered item %s failed (attempt %d)", item_id[:12], attempt)
                time.sleep(0.5 * attempt)
        with self._idle:
            self._pending -= 1
            if recorded:
                self._ids.discard(item_id)
            self._idle.notify_all()

    def _record_unrecorded(self) -> None:
        if not self._unrecorded:
            return
        while self._unrecorded:
            item_id = self._unrecorded[0]
            if not self._mark_done(item_id):
                return
            self._unrecorded.pop(0)
            with self._idle:
                self._ids.discard(item_id)
        log.debug("the job table is written again; all confirmed items are recorded as done")

    def _run(self) -> None:
        spool = Spool(self._root)
        try:
            while True:
                try:
                    item_id = self._tasks.get(timeout=self.RETRY_S if self._unrecorded else None)
                except queue_mod.Empty:
                    item_id = ""
                if item_id is None:
                    self._record_unrecorded()
                    return
                if item_id:
                    self._finish(item_id, spool)
                if self._unrecorded:
                    self._record_unrecorded()
        finally:
            if self._queue is not None and self._own_queue:
                self._queue.close()
