"""The upload daemon: spool -> durable job table -> ingest server, one top-to-bottom loop.

    recover 'uploading' rows -> full scan ->
    loop: stop requested? --once done or out of time? -> housekeeping (scan, cap, stats) ->
          next ready job (highest score) -> upload it (HEAD first if an earlier try may have landed) ->
          2xx: mark done, then delete the local files (a helper thread, off the upload path) |
          400/413/415/422: move to failed/ with the reason |
          anything else: back off (exponential, full jitter, capped) and keep the data
          -> nothing ready: sleep until the next poll or retry time (no busy loop)

A crash at any instant leaves each item either confirmed by the server (2xx, then deleted) or still in
the spool with its row queued/uploading; ids are content hashes, so re-sending is idempotent.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Set

from edgedepth.errors import ConfigError, DataError
from edgedepth.fleet import client as wire_client
from edgedepth.fleet.client import Outcome, UploadClient
from edgedepth.fleet.queue import DONE, FAILED, GONE, QUEUED, UPLOADING, Job, JobQueue
from edgedepth.fleet.ratelimit import TokenBucket
from edgedepth.fleet.upload_metrics import MetricsServer, Stats
from edgedepth.fleet.upload_metrics import render as render_metrics
from edgedepth.fleet.wire import LocalCorruption, prepare
from edgedepth.spool import Spool, captured_at

log = logging.getLogger("edgedepth.fleet.daemon")

EXIT_OK, EXIT_ERROR, EXIT_REMAINING = 0, 1, 3


def default_db_path(spool_dir: Path) -> Path:
    return Path(spool_dir) / ".queue" / "jobs.sqlite"


@dataclass
class DaemonConfig:
    spool: Path
    server: str
    token: str
    ca_cert: Optional[str] = None
    db: Optional[Path] = None
    max_bandwidth: Optional[float] = None  # bytes per second; None = no cap
    spool_max_bytes: Optional[int] = None
    metrics_port: Optional[int] = None  # None = off, 0 = any free port
    poll_interval: float = 1.0
    rescan_interval: float = 60.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    timeout: float = 60.0
    once: bool = False
    once_timeout: float = 600.0
    stats_interval: float = 60.0
    orphan_age: float = 600.0
    keep_done_s: float = 86400.0


def backoff_delay(attempt: int, base: float, cap: float, rng: Optional[random.Random] = None) -> float:
    """Exponential back-off with full jitter: uniform(0, min(cap, base * 2**(attempt-1)))."""
    ceiling = min(cap, base * (2.0 ** max(0, min(attempt, 60) - 1)))
    return max(0.01, (rng or random).uniform(0.0, ceiling))


class Finalizer:
    """Marks delivered items done and deletes their files, in a thread beside the upload loop.

    This takes the fsync of the 'done' commit and the unlinks off the path between two uploads. An
    item waits here in state 'uploading'; a crash before its turn leaves it 'uploading', and the next
    start asks the server (HEAD), which confirms it: nothing is lost or sent twice. Its JobQueue shares
    the loop's write lock, so the two connections never meet in SQLite's sleeping busy handler.
    """

    def __init__(self, db_path: Path, spool_root: Path, write_lock: threading.Lock, max_pending: int = 64):
        self._db_path, self._root, self._write_lock = db_path, spool_root, write_lock
        self._tasks: "queue_mod.Queue[Optional[str]]" = queue_mod.Queue(maxsize=max_pending)
        self._idle = threading.Condition()
        self._pending = 0
        self._ids: Set[str] = set()
        self.errors = 0
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
        """Items delivered whose files may still be on disk (a spool scan must not queue them again)."""
        with self._idle:
            return set(self._ids)

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 60.0) -> None:
        self._tasks.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        queue = JobQueue(self._db_path, write_lock=self._write_lock)
        spool = Spool(self._root)
        try:
            while True:
                item_id = self._tasks.get()
                if item_id is None:
                    return
                for attempt in (1, 2, 3):
                    try:
                        queue.mark_done(item_id)  # first: a crash before the delete only costs a HEAD
                        spool.remove(item_id)
                        break
                    except Exception:  # noqa: BLE001 - logged; the row stays 'uploading' (HEAD on restart)
                        self.errors += 1
                        log.exception("finishing delivered item %s failed (attempt %d)", item_id[:12],
                                      attempt)
                        time.sleep(0.5 * attempt)
                with self._idle:
                    self._pending -= 1
                    self._ids.discard(item_id)
                    self._idle.notify_all()
        finally:
            queue.close()


class Daemon:
    def __init__(self, cfg: DaemonConfig):
        self.cfg = cfg
        self.spool = Spool(cfg.spool, max_bytes=cfg.spool_max_bytes)
        write_lock = threading.Lock()
        self.queue = JobQueue(cfg.db or default_db_path(self.spool.root), write_lock=write_lock)
        limiter = TokenBucket(cfg.max_bandwidth) if cfg.max_bandwidth else None
        self.client = UploadClient(cfg.server, cfg.token, ca_cert=cfg.ca_cert, timeout=cfg.timeout,
                                   limiter=limiter)
        self.stats = Stats()
        self._known: Set[str] = set()
        self._dir_mtime = -1
        self._next_full_scan = 0.0
        self._next_quick_scan = 0.0
        self._next_stats = 0.0
        self._next_prune = 0.0
        self._next_gauges = 0.0
        self._cap_check_due = True
        self._consecutive_failures = 0
        self._server_ready_at = 0.0  # monotonic time before which no request is made (global back-off)
        self._stop = False
        self._signals = 0
        self._wake = threading.Event()
        self._metrics_server: Optional[MetricsServer] = None
        self._finalizer = Finalizer(self.queue.path, self.spool.root, write_lock)
        self.metrics_port: Optional[int] = None

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signal_handlers()
        self._start_metrics()
        recovered = self.queue.recover()
        log.info("upload daemon started: spool=%s server=%s bandwidth=%s spool cap=%s once=%s "
                 "(%d interrupted uploads back in the queue)", self.spool.root, self.cfg.server,
                 f"{self.cfg.max_bandwidth:.0f} B/s" if self.cfg.max_bandwidth else "unlimited",
                 f"{self.cfg.spool_max_bytes} B" if self.cfg.spool_max_bytes else "none", self.cfg.once,
                 recovered)
        started = time.monotonic()
        code, reason = EXIT_OK, ""
        errors_in_a_row = 0
        try:
            while True:
                now = time.monotonic()
                if self._stop:
                    reason = "stop requested by signal; no upload in flight"
                    break
                if self.cfg.once and now - started > self.cfg.once_timeout:
                    left = self._pending_count()
                    if left:
                        code = EXIT_REMAINING
                        reason = f"--once timeout ({self.cfg.once_timeout:.0f} s), {left} items still queued"
                        break
                try:
                    self._housekeeping(now)
                    job = self.queue.next_ready() if now >= self._server_ready_at else None
                    if job is None and self._finalizer.busy:
                        self._finalizer.wait_idle(self.cfg.poll_interval)
                        continue
                    if job is None:
                        if self.cfg.once and self._pending_count() == 0:
                            reason = "--once: the spool is drained"
                            break
                        self._sleep(self._idle_time(now))
                        continue
                    self._process_safely(job)
                    errors_in_a_row = 0
                except Exception as exc:  # never let one bad moment end the loop
                    errors_in_a_row += 1
                    delay = backoff_delay(errors_in_a_row, self.cfg.backoff_base, self.cfg.backoff_max)
                    log.exception("unexpected error in the upload loop (%s); retrying in %.1f s", exc, delay)
                    self._sleep(delay)
        finally:
            self._finalizer.close()  # the files of delivered items are deleted before exiting
            self._refresh_gauges()
            self._log_stats("final")
            self._shutdown()
            log.info("upload daemon exiting with code %d: %s", code, reason or "error")
        return code

    def _process_safely(self, job: Job) -> None:
        try:
            self._process(job)
        except Exception as exc:
            # leave the row queued (not stuck in 'uploading') and let the loop log and back off
            try:
                self.queue.retry_later(job.id, 0.0, f"internal error: {exc}")
            except Exception:  # noqa: BLE001 - the original error matters more
                log.debug("could not re-queue %s after an internal error", job.id[:12])
            raise

    def _process(self, job: Job) -> None:
        with self.spool.lock(job.id):  # from here on the writer's cap eviction leaves this item alone
            try:
                item = self.spool.load(job.id)
            except FileNotFoundError:
                self.queue.mark_gone(job.id, "left the spool before upload (evicted or deleted)")
                self._known.discard(job.id)
                self.stats.gone += 1
                log.info("item %s left the spool before upload; dropped from the queue", job.id[:12])
                return
            except DataError as exc:
                self._reject(job.id, None, f"invalid spool item: {exc}")
                return
            self.queue.mark_uploading(job.id)
            if job.check_server:
                ans = self.client.has(job.id)
                if ans.kind == wire_client.PRESENT:
                    self._delivered(job, duplicate=True, how="server already had it (HEAD)")
                    return
                if ans.kind != wire_client.ABSENT:
                    self._transient(job, ans)
                    return
            try:
                body = prepare(item)
            except LocalCorruption as exc:
                self._reject(job.id, None, f"local file corrupt: {exc}")
                return
            except FileNotFoundError as exc:  # deleted between load and read: the next attempt sees it gone
                self.queue.retry_later(job.id, 0.0, f"file vanished: {exc}", reached_server=False)
                return
            t0 = time.monotonic()
            try:
                out = self.client.upload(body, on_sent=self._count_sent)
            except LocalCorruption as exc:
                self._reject(job.id, None, f"local file changed during upload: {exc}")
                return
            except OSError as exc:  # a file vanished while streaming
                out = Outcome(wire_client.TRANSIENT, None, f"reading the item failed: {exc}")
            if out.delivered:
                dt = time.monotonic() - t0
                self._delivered(job, duplicate=out.kind == wire_client.DUPLICATE,
                                how=f"HTTP {out.status}, {body.length} B in {dt:.2f} s")
            elif out.kind == wire_client.REJECTED:
                self._reject(job.id, out.status, out.reason)
            else:
                self._transient(job, out)

    def _delivered(self, job: Job, duplicate: bool, how: str) -> None:
        self._finalizer.submit(job.id)  # marked done, then the local files deleted, in the background
        self._known.discard(job.id)
        if duplicate:
            self.stats.duplicates += 1
        else:
            self.stats.uploaded += 1
        self.stats.last_success = time.time()
        self._consecutive_failures = 0
        self._server_ready_at = 0.0
        log.debug("delivered %s (score %.4g): %s%s", job.id[:12], job.score, how,
                  " [duplicate]" if duplicate else "")

    def _reject(self, item_id: str, status: Optional[int], reason: str) -> None:
        # the row first: a crash before the move leaves the item in the spool, and the next scan queues it
        # again (it is rejected again); the other order could leave a moved item with a 'queued' row
        self.queue.mark_failed(item_id, reason)
        where = self.spool.move_to_failed(item_id, {"status": status, "reason": reason,
                                                    "failed_at": captured_at(), "server": self.cfg.server})
        self._known.discard(item_id)
        self.stats.failures += 1
        self._consecutive_failures = 0
        log.error("item %s rejected permanently (%s): %s; files kept in %s", item_id[:12],
                  status if status is not None else "local", reason, where)

    def _transient(self, job: Job, out: Outcome) -> None:
        self._consecutive_failures += 1
        delay = backoff_delay(self._consecutive_failures, self.cfg.backoff_base, self.cfg.backoff_max)
        if out.retry_after is not None:
            delay = max(delay, min(out.retry_after, self.cfg.backoff_max * 4))
        self._server_ready_at = time.monotonic() + delay
        # Server-wide conditions (no answer, 429, 503, auth) pause everything via the global back-off;
        # other answers may be about this item, so it also waits on its own.
        server_wide = out.status in (None, 401, 403, 429, 503)
        item_delay = 0.0 if server_wide else backoff_delay(job.attempts + 1, self.cfg.backoff_base,
                                                           self.cfg.backoff_max)
        reached = out.status is not None or out.sent_bytes > 0
        self.queue.retry_later(job.id, item_delay, out.reason or f"HTTP {out.status}", reached_server=reached)
        self.stats.retries += 1
        if out.kind == wire_client.AUTH:
            self.stats.auth_errors += 1
            log.error("the server refused the upload token (%s): check --token-file / the device "
                      "registration; keeping all data and retrying in %.1f s", out.reason, delay)
        else:
            log.warning("upload of %s failed (%s); retry #%d in %.1f s", job.id[:12],
                        out.reason or f"HTTP {out.status}", self._consecutive_failures, delay)

    def _count_sent(self, n: int) -> None:
        self.stats.bytes_sent += n

    # -- housekeeping --------------------------------------------------------------------------------
    def _housekeeping(self, now: float) -> None:
        if now >= self._next_full_scan:
            self._scan(full=True)
            self._finish_interrupted_removals()
            self.spool.cleanup_orphans(self.cfg.orphan_age)
            self._next_full_scan = now + self.cfg.rescan_interval
        elif now >= self._next_quick_scan:
            self._scan(full=False)
        if self.cfg.spool_max_bytes and self._cap_check_due:
            # measure for real: the writer's puts happen in another process, unseen by this Spool's cache
            self._cap_check_due = False
            if self.spool.enforce_cap(measure=True):
                self._scan(full=True)
        if now >= self._next_prune:
            self.queue.delete_finished(self.cfg.keep_done_s)
            self._next_prune = now + 3600
        if now >= self._next_gauges and (self._metrics_server is not None or now >= self._next_stats):
            self._refresh_gauges()
            self._next_gauges = now + 1.0
        if now >= self._next_stats:
            if self._next_stats:
                self._log_stats("stats")
            self._next_stats = now + self.cfg.stats_interval

    def _scan(self, full: bool) -> None:
        """Diff the spool listing against what is known; queue new items, drop vanished queued ones."""
        started = time.monotonic()
        self._next_quick_scan = started + self.cfg.poll_interval
        try:
            st = os.stat(self.spool.root)
        except FileNotFoundError:
            log.error("spool directory %s is missing; waiting for it", self.spool.root)
            return
        recent = time.time() - st.st_mtime < 2.0  # same-tick changes could hide behind an equal mtime
        if not full and st.st_mtime_ns == self._dir_mtime and not recent:
            return
        self._dir_mtime = st.st_mtime_ns
        on_disk = self.spool.item_ids()
        # a listing costs O(spool size): keep quick scans under ~2% of the time on a big spool
        self._next_quick_scan = max(self._next_quick_scan, started + 50 * (time.monotonic() - started))
        if full:
            self._known = self.queue.ids((QUEUED, UPLOADING)) & on_disk | (self._known & on_disk)
            vanished = self.queue.ids((QUEUED, UPLOADING)) - on_disk
        else:
            vanished = {i for i in self._known - on_disk}
        new_rows = []
        for item_id in on_disk - self._known - self._finalizer.pending_ids():
            try:
                item = self.spool.load(item_id)
            except FileNotFoundError:
                continue  # removed between the listing and now
            except DataError as exc:
                self._reject(item_id, None, f"invalid spool item: {exc}")
                continue
            new_rows.append((item_id, item.score, item.nbytes, item.meta.captured_at))
            self._known.add(item_id)
        if full or new_rows:
            self._cap_check_due = True
        if new_rows:
            n = self.queue.add_many(new_rows)
            log.info("queued %d new spool items (%d seen)", n, len(new_rows))
        for item_id in vanished:
            job = self.queue.get(item_id)
            self._known.discard(item_id)
            if job is not None and job.state in (QUEUED, UPLOADING):
                self.queue.mark_gone(item_id, "left the spool before upload (evicted or deleted)")
                self.stats.gone += 1
                log.info("item %s left the spool before upload (evicted or deleted)", item_id[:12])

    def _finish_interrupted_removals(self, min_age_s: float = 10.0) -> None:
        """Files without metadata whose job is done: a delete cut short by a crash; finish it now.

        Only files older than `min_age_s`: younger ones may be the same content being spooled again
        (a put writes the files first and the metadata last, within milliseconds).
        """
        busy = self._finalizer.pending_ids()
        now = time.time()
        for item_id in self.spool.orphan_ids() - busy:
            job = self.queue.get(item_id)
            if job is None or job.state != DONE:
                continue
            paths = list(self.spool.root.glob(f"{item_id}.*"))
            try:
                if any(now - p.stat().st_mtime < min_age_s for p in paths):
                    continue
            except FileNotFoundError:
                continue
            self.spool.remove(item_id)
            log.info("removed the leftover files of delivered item %s", item_id[:12])

    def _pending_count(self) -> int:
        counts = self.queue.counts()
        return counts[QUEUED] + counts[UPLOADING]

    def _idle_time(self, now: float) -> float:
        """Sleep until the next poll, the end of the global back-off, or the next item retry time."""
        wait = self.cfg.poll_interval
        if self._server_ready_at > now:
            wait = min(wait, self._server_ready_at - now)
        nxt = self.queue.next_attempt_time()
        if nxt is not None:
            wait = min(wait, nxt - time.time())
        return max(0.01, wait)

    def _sleep(self, seconds: float) -> None:
        if not self._stop:
            self._wake.wait(max(0.0, seconds))
        self._wake.clear()

    # -- signals -------------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            self._stop = True
            self._wake.set()
            log.warning("%s received: finishing the current upload, then exiting (send again to exit now)",
                        name)
        else:
            log.warning("%s received again: exiting at once (an interrupted upload is retried on restart)",
                        name)
            logging.shutdown()
            os._exit(128 + signum)

    # -- metrics -------------------------------------------------------------------------------------
    def _refresh_gauges(self) -> None:
        counts = self.queue.counts()
        g = {f"queue_{state}": float(n) for state, n in counts.items()}
        g["queue_depth"] = float(counts[QUEUED] + counts[UPLOADING])
        g["oldest_pending_age_seconds"] = self.queue.oldest_pending_age()
        g["pending_bytes"] = float(self.queue.pending_bytes())
        self.stats.gauges = g

    def _log_stats(self, what: str) -> None:
        s, g = self.stats, self.stats.gauges
        log.info("%s: queue depth %d (oldest %.0f s, %.1f MB), done %d, failed %d, gone %d | uploaded %d, "
                 "duplicates %d, sent %.1f MB, retries %d, permanent failures %d, evicted %d", what,
                 g.get("queue_depth", 0), g.get("oldest_pending_age_seconds", 0),
                 g.get("pending_bytes", 0) / 1e6, g.get(f"queue_{DONE}", 0), g.get(f"queue_{FAILED}", 0),
                 g.get(f"queue_{GONE}", 0), s.uploaded, s.duplicates, s.bytes_sent / 1e6, s.retries,
                 s.failures, self.spool.evicted)

    def metrics_text(self) -> str:
        self.stats.evicted = self.spool.evicted
        return render_metrics(self.stats)

    def _start_metrics(self) -> None:
        if self.cfg.metrics_port is not None:
            self._metrics_server = MetricsServer(self.cfg.metrics_port, self.metrics_text)
            self.metrics_port = self._metrics_server.port

    def _shutdown(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
        self.client.close()
        self.queue.close()


def read_token(token_file: Optional[str]) -> str:
    """The upload token from a file (first line) or EDGEDEPTH_TOKEN; never from the command line."""
    if token_file:
        p = Path(token_file)
        try:
            token = p.read_text().strip().splitlines()[0].strip() if p.stat().st_size else ""
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {p}: {exc}") from exc
        if p.stat().st_mode & 0o077:
            log.warning("token file %s is readable by other users; chmod 600 it", p)
        if not token:
            raise ConfigError(f"--token-file {p} is empty")
        return token
    token = os.environ.get("EDGEDEPTH_TOKEN", "").strip()
    if not token:
        raise ConfigError("no upload token: pass --token-file FILE or set EDGEDEPTH_TOKEN")
    return token
