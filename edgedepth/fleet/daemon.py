"""The upload daemon: spool -> durable job table -> ingest server, one top-to-bottom loop.

    recover 'uploading' rows -> full scan ->
    loop: stop requested? --once done or out of time? -> housekeeping (scan, cap, stats; each step's
          errors are logged and never stop the loop) -> next ready job (highest score) -> upload it ->
          confirmed (200/201 naming this id as stored or duplicate): mark done, then delete the local
          files (a helper thread, off the upload path) |
          400/413/415/422: move to failed/ with the reason |
          anything else, an unconfirmed 2xx included: back off (exponential, full jitter, capped) and
          keep the data
          -> nothing ready: sleep until the next poll or retry time (no busy loop)

A crash at any instant leaves each item either confirmed by the server (then deleted) or still in the
spool with its row queued/uploading; ids are content hashes, so re-sending is idempotent (the server
answers a re-sent item as a duplicate, which confirms it).

A full spool disk does not stop sending: sending needs no space, and every confirmed upload frees some.
Job-table writes that fail for lack of space first release a reserve file kept for the table
(fleet/diskfull.py); if the disk is still full the change is kept in memory, the item waits, and the
write is tried again at the next housekeeping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Set, Tuple

from edgedepth.errors import ConfigError, DataError
from edgedepth.fleet import client as wire_client
from edgedepth.fleet.client import Outcome, UploadClient
from edgedepth.fleet.diskfull import Reserve, is_disk_full, write_or_release
from edgedepth.fleet.finalizer import Finalizer
from edgedepth.fleet.queue import DONE, FAILED, GONE, QUEUED, UPLOADING, Job, JobQueue
from edgedepth.fleet.ratelimit import TokenBucket
from edgedepth.fleet.upload_metrics import Stats, serve_upload_metrics
from edgedepth.fleet.wire import LocalCorruption, prepare
from edgedepth.spool import Spool, captured_at

log = logging.getLogger("edgedepth.fleet.daemon")

EXIT_OK, EXIT_ERROR, EXIT_REMAINING = 0, 1, 3


def default_db_path(spool_dir: Path) -> Path:
    return Path(spool_dir) / ".queue" / "jobs.sqlite"


_TOKEN_DEVICE_RE = re.compile(r"token's device '([^']*)'")


def open_job_table(path: Path, write_lock: threading.Lock, reserve: Reserve) -> JobQueue:
    """Open (or create) the job table. On a full disk: release the reserve and try again; if the disk is
    still too full, keep the table in memory until the next start, so that uploading (which frees the
    disk) goes on; the spool is the durable record of what is left to send."""
    for attempt in (1, 2):
        try:
            return JobQueue(path, write_lock=write_lock)
        except DataError as exc:
            if not is_disk_full(exc.__cause__ or exc, path.parent):
                raise
            if attempt == 1 and reserve.release():
                continue
            log.error("the spool disk is full and the upload queue %s cannot be opened (%s): keeping the "
                      "queue in memory until the next start; uploads go on and free the disk", path,
                      exc.__cause__ or exc)
    return JobQueue(path, write_lock=write_lock, in_memory=True)


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


class Daemon:
    def __init__(self, cfg: DaemonConfig):
        self.cfg = cfg
        self.spool = Spool(cfg.spool, max_bytes=cfg.spool_max_bytes)
        write_lock = threading.Lock()
        db_path = Path(cfg.db or default_db_path(self.spool.root))
        with contextlib.suppress(OSError):  # a full disk: open_job_table says what to do
            db_path.parent.mkdir(parents=True, exist_ok=True)
        self.reserve = Reserve(db_path.parent / "reserve")
        self.queue = open_job_table(db_path, write_lock, self.reserve)
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
        self._metrics_server = None
        self._finalizer = Finalizer(self.queue.path, self.spool.root, write_lock, reserve=self.reserve,
                                    queue=self.queue if self.queue.in_memory else None)
        self.metrics_port: Optional[int] = None
        # job-table changes not written yet (full disk): item id -> (JobQueue method, args); such an
        # item waits until its change is written, so the table and the spool never disagree for long
        self._deferred: Dict[str, Tuple[str, tuple, dict]] = {}
        self._said: Dict[str, float] = {}  # condition -> when it was last logged clearly (_say_once)
        self._table_full = False
        self._refused_devices: Dict[str, str] = {}  # item device_id -> the server's device_mismatch reason

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signal_handlers()
        self._start_metrics()
        recovered = 0
        try:
            recovered = self.queue.recover()
        except Exception as exc:  # noqa: BLE001 - a full disk: the rows wait; tried again each housekeeping
            if not is_disk_full(exc, self.queue.path.parent):
                raise
            self._deferred["*"] = ("recover", (), {})
        self._step("job-table reserve", self.reserve.ensure)
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
                    busy = self._deferred.keys() | self._finalizer.pending_ids()  # rows not up to date
                    job = self.queue.next_ready(exclude=busy) if now >= self._server_ready_at else None
                    if job is None and self._finalizer.busy:
                        self._finalizer.wait_idle(self.cfg.poll_interval)
                        continue
                    if job is None:
                        if self.cfg.once and self._pending_count() == 0 and not self._deferred:
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
                self._record(job.id, "retry_later", 0.0, f"internal error: {exc}")
            except Exception:  # noqa: BLE001 - the original error matters more
                log.debug("could not re-queue %s after an internal error", job.id[:12])
            raise

    def _process(self, job: Job) -> None:
        with self.spool.lock(job.id):  # from here on the writer's cap eviction leaves this item alone
            try:
                item = self.spool.load(job.id)
            except FileNotFoundError:
                self._record(job.id, "mark_gone", "left the spool before upload (evicted or deleted)")
                self._known.discard(job.id)
                self.stats.gone += 1
                log.info("item %s left the spool before upload; dropped from the queue", job.id[:12])
                return
            except DataError as exc:
                self._reject(job.id, None, f"invalid spool item: {exc}")
                return
            refused = self._refused_devices.get(item.meta.device_id)
            if refused is not None:  # the server refused this device id for our token: do not re-send
                self._record(job.id, "retry_later", self.cfg.backoff_max, refused, reached_server=False)
                return
            # not deferred when the disk is full: a late 'uploading' could land after 'done'; a row left
            # 'queued' only means a crash here re-sends the item, which the server answers as a duplicate
            self._record(job.id, "mark_uploading", defer=False)
            try:
                body = prepare(item)
            except LocalCorruption as exc:
                self._reject(job.id, None, f"local file corrupt: {exc}")
                return
            except FileNotFoundError as exc:  # deleted between load and read: the next attempt sees it gone
                self._record(job.id, "retry_later", 0.0, f"file vanished: {exc}", reached_server=False)
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
                self._transient(job, out, item.meta.device_id)

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
        self._said.pop("unconfirmed", None)
        log.debug("delivered %s (score %.4g): %s%s", job.id[:12], job.score, how,
                  " [duplicate]" if duplicate else "")

    def _reject(self, item_id: str, status: Optional[int], reason: str) -> None:
        # the row first: a crash before the move leaves the item in the spool, and the next scan queues it
        # again (it is rejected again); the other order could leave a moved item with a 'queued' row
        self._record(item_id, "mark_failed", reason)
        where = self.spool.move_to_failed(item_id, {"status": status, "reason": reason,
                                                    "failed_at": captured_at(), "server": self.cfg.server})
        self._known.discard(item_id)
        self.stats.failures += 1
        self._consecutive_failures = 0
        log.error("item %s rejected permanently (%s): %s; files kept in %s", item_id[:12],
                  status if status is not None else "local", reason, where)

    def _transient(self, job: Job, out: Outcome, device_id: str = "") -> None:
        reached = out.status is not None or out.sent_bytes > 0
        self.stats.retries += 1
        if out.kind == wire_client.DEVICE_MISMATCH:
            self._device_mismatch(job, out, device_id)
            return
        self._consecutive_failures += 1
        delay = backoff_delay(self._consecutive_failures, self.cfg.backoff_base, self.cfg.backoff_max)
        if out.retry_after is not None:
            delay = max(delay, min(out.retry_after, self.cfg.backoff_max * 4))
        self._server_ready_at = time.monotonic() + delay
        # Server-wide conditions (no answer, 429, 503, auth, an answer that is not the ingest server's)
        # pause everything via the global back-off; other answers may be about this item, so it also
        # waits on its own.
        server_wide = out.status in (None, 401, 403, 429, 503) or out.kind == wire_client.UNCONFIRMED
        item_delay = 0.0 if server_wide else backoff_delay(job.attempts + 1, self.cfg.backoff_base,
                                                           self.cfg.backoff_max)
        self._record(job.id, "retry_later", item_delay, out.reason or f"HTTP {out.status}",
                     reached_server=reached)
        if out.kind == wire_client.UNCONFIRMED:
            self.stats.unconfirmed += 1
            self._say_once("unconfirmed", logging.ERROR,
                           "the answer to the upload of %s does not confirm it (%s): keeping all data and "
                           "retrying in %.1f s; further unconfirmed answers are logged at debug level until "
                           "an upload is confirmed", job.id[:12], out.reason, delay)
        elif out.kind == wire_client.AUTH:
            self.stats.auth_errors += 1
            log.error("the server refused the upload token (%s): check --token-file / the device "
                      "registration; keeping all data and retrying in %.1f s", out.reason, delay)
        else:
            log.warning("upload of %s failed (%s); retry #%d in %.1f s", job.id[:12],
                        out.reason or f"HTTP {out.status}", self._consecutive_failures, delay)

    def _device_mismatch(self, job: Job, out: Outcome, device_id: str) -> None:
        """The item's device_id is not the token's device: say both and how to fix it; hold such items."""
        self.stats.auth_errors += 1
        m = _TOKEN_DEVICE_RE.search(out.reason)
        token_device = m.group(1) if m else None
        theirs = f"'{token_device}'" if token_device else "another device (see the server's answer)"
        reason = (f"spool items carry device_id '{device_id}' but the upload token belongs to {theirs}: "
                  f"{out.reason}")
        self._refused_devices[device_id] = reason
        self._record(job.id, "retry_later", self.cfg.backoff_max, reason, reached_server=True)
        fix = (f"start `edgedepth run` with --device-id {token_device}" if token_device else
               "start `edgedepth run` with --device-id set to the token's device")
        self._say_once(f"device:{device_id}", logging.ERROR,
                       "%s. Fix: %s (the id the token was issued for by `edgedepth ingest add-device`), "
                       "or give this daemon the token of device '%s' (--token-file). Items of '%s' stay in "
                       "the spool, untouched, and are not sent again until the daemon restarts with a "
                       "matching token; other items go on uploading.", reason, fix, device_id, device_id)

    def _say_once(self, key: str, level: int, msg: str, *args, every: Optional[float] = None) -> None:
        """Log a lasting condition once clearly, then at debug level until `_said` forgets the key (or,
        with `every`, clearly again at most every `every` seconds)."""
        last = self._said.get(key)
        now = time.monotonic()
        if last is None or (every is not None and now - last >= every):
            log.log(level, msg, *args)
            self._said[key] = now
        else:
            log.debug(msg, *args)

    # -- job-table writes that survive a full disk ---------------------------------------------------
    def _write(self, method: str, *args, **kwargs) -> bool:
        """The JobQueue write `method(*args)`; on a full disk the reserve is released and it is tried once
        more. False (and one clear log line) when the disk is still full."""
        fn: Callable = getattr(self.queue, method)
        if write_or_release(self.reserve, self.queue.path.parent, fn, *args, **kwargs):
            return True
        self._table_full = True
        self._say_once("table-full", logging.ERROR,
                       "the spool disk is full: the upload queue %s cannot be written; uploads go on (each "
                       "one frees space) and the queue is updated once there is room", self.queue.path,
                       every=300.0)
        return False

    def _record(self, item_id: str, method: str, *args, defer: bool = True, **kwargs) -> bool:
        """The change `method(item_id, *args)` of one item's row; when the disk is full (and `defer`) it is
        kept to write later, and the item waits until then. True when written now."""
        if self._write(method, item_id, *args, **kwargs):
            self._deferred.pop(item_id, None)
            return True
        if defer:
            self._deferred[item_id] = (method, (item_id, *args), kwargs)
        return False

    def _replay_deferred(self) -> None:
        for key in list(self._deferred):
            method, args, kwargs = self._deferred[key]
            if not write_or_release(self.reserve, self.queue.path.parent, getattr(self.queue, method),
                                    *args, **kwargs):
                return
            del self._deferred[key]
        if self._table_full:
            self._table_full = False
            log.debug("the upload queue %s is written again", self.queue.path)

    def _step(self, what: str, fn: Callable, *args) -> None:
        """One housekeeping step: an error is logged (once while it lasts) and never stops sending."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - housekeeping must not block uploads
            key = f"step:{what}"
            if key not in self._said:
                log.error("%s failed (%s: %s); uploads go on and it is tried again later", what,
                          type(exc).__name__, exc, exc_info=not is_disk_full(exc, self.spool.root))
            else:
                log.debug("%s failed again: %s", what, exc)
            self._said[key] = time.monotonic()
            return
        if f"step:{what}" in self._said:
            del self._said[f"step:{what}"]
            log.info("%s works again", what)

    def _count_sent(self, n: int) -> None:
        self.stats.bytes_sent += n

    # -- housekeeping --------------------------------------------------------------------------------
    def _housekeeping(self, now: float) -> None:
        """Scan, cap, prune, reserve, gauges, stats. Each timer advances before its step runs and each
        step's errors are logged and swallowed: housekeeping never stands between the loop and sending."""
        if self._deferred:
            self._step("writing delayed job-table changes", self._replay_deferred)
        if now >= self._next_full_scan:
            self._next_full_scan = now + self.cfg.rescan_interval
            self._step("full spool scan", self._scan, True)
            self._step("finishing interrupted removals", self._finish_interrupted_removals)
            self._step("orphan cleanup", self.spool.cleanup_orphans, self.cfg.orphan_age)
            self._step("job-table reserve", self.reserve.ensure)
        elif now >= self._next_quick_scan:
            self._step("spool scan", self._scan, False)
        if self.cfg.spool_max_bytes and self._cap_check_due:
            # measure for real: the writer's puts happen in another process, unseen by this Spool's cache
            self._cap_check_due = False
            self._step("spool cap", self._enforce_cap)
        if now >= self._next_prune:
            self._next_prune = now + 3600
            self._step("pruning the job table", self._write, "delete_finished", self.cfg.keep_done_s)
        if now >= self._next_gauges and (self._metrics_server is not None or now >= self._next_stats):
            self._next_gauges = now + 1.0
            self._step("metrics gauges", self._refresh_gauges)
        if now >= self._next_stats:
            if self._next_stats:
                self._step("statistics", self._log_stats, "stats")
            self._next_stats = now + self.cfg.stats_interval

    def _enforce_cap(self) -> None:
        if self.spool.enforce_cap(measure=True):
            self._scan(full=True)

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
        if full or new_rows:
            self._cap_check_due = True
        if new_rows and self._write("add_many", new_rows):
            # known only once in the table: on a full disk the next scan tries to queue them again
            self._known.update(row[0] for row in new_rows)
            log.info("queued %d new spool items", len(new_rows))
        busy = self._finalizer.pending_ids()
        for item_id in vanished - busy - set(self._deferred):
            job = self.queue.get(item_id)
            self._known.discard(item_id)
            if job is not None and job.state in (QUEUED, UPLOADING):
                self._record(item_id, "mark_gone", "left the spool before upload (evicted or deleted)")
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

    def _current_stats(self) -> Stats:
        self.stats.evicted = self.spool.evicted + self.spool.evicted_failed
        return self.stats

    def _start_metrics(self) -> None:
        if self.cfg.metrics_port is not None:
            self._metrics_server = serve_upload_metrics(self.cfg.metrics_port, self._current_stats)
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
