"""Running on a full spool disk: recognise "disk full" errors and keep a reserve for the job table.

The upload daemon is the one process that frees the spool's disk (every confirmed upload deletes files),
so a full disk must never stop it. Sending needs no disk space; only the job table (SQLite) does. The
reserve is a small file of real (allocated) blocks next to the job table: when a table write fails for
lack of space the daemon deletes it, which gives SQLite room to commit, and writes it again once the
disk has room to spare.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Optional, Union

log = logging.getLogger("edgedepth.fleet.daemon")

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DEFAULT_RESERVE_BYTES = 4 << 20
MIN_RESERVE_BYTES = 256 << 10


def free_bytes(path: Union[str, Path]) -> Optional[int]:
    """Bytes an unprivileged writer may still use on the filesystem of `path` (None if unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def is_disk_full(exc: BaseException, path: Optional[Union[str, Path]] = None) -> bool:
    """True for ENOSPC/EDQUOT and SQLite's SQLITE_FULL; for other SQLite I/O errors, when `path`'s
    filesystem has (almost) no room left, which is how SQLite reports some failed WAL writes."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code == 13 or "database or disk is full" in str(exc):  # 13 = SQLITE_FULL
            return True
        if path is not None and "disk I/O error" in str(exc):
            room = free_bytes(path)
            return room is not None and room < (1 << 20)
    return False


def reserve_size_for(directory: Union[str, Path]) -> int:
    """4 MiB, or 1/64 of a small filesystem (at least 256 KiB): room for many job-table commits."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return DEFAULT_RESERVE_BYTES
    total = st.f_blocks * st.f_frsize
    return int(max(MIN_RESERVE_BYTES, min(DEFAULT_RESERVE_BYTES, total // 64)))


class Reserve:
    """A pre-allocated file that is given up when the disk is full, and taken back when room returns.

    Thread-safe: the daemon's loop and its finalizer thread both write the job table.
    """

    def __init__(self, path: Union[str, Path], size: Optional[int] = None):
        self.path = Path(path)
        self.size = int(size) if size else reserve_size_for(self.path.parent)
        self._lock = threading.Lock()
        self.releases = 0

    @property
    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def ensure(self) -> bool:
        """Write the reserve if it is missing and the disk has 4x its size free; True when it is held."""
        with self._lock:
            if self.held:
                return True
            room = free_bytes(self.path.parent)
            if room is None or room < 4 * self.size:
                return False
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    try:
                        os.posix_fallocate(fd, 0, self.size)
                    except OSError as exc:  # filesystems without fallocate: write the zeros
                        if exc.errno in _FULL_ERRNOS:
                            raise
                        block = b"\0" * (1 << 16)
                        for _ in range(0, self.size, len(block)):
                            os.write(fd, block)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                log.debug("could not write the job-table reserve %s: %s", self.path, exc)
                return False
            return True

    def release(self) -> bool:
        """Delete the reserve (the disk is full); True when that freed space."""
        with self._lock:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                log.warning("could not release the job-table reserve %s: %s", self.path, exc)
                return False
            self.releases += 1
            log.warning("spool disk full: released the %d KiB job-table reserve %s so the upload queue can "
                        "still be written; it is written again once the disk has room", self.size >> 10,
                        self.path)
            return True


def write_or_release(reserve: Optional[Reserve], directory: Union[str, Path], fn, *args, **kwargs) -> bool:
    """Run the job-table write `fn(*args)`; on a full disk release the reserve and try once more.

    Returns False when the disk is still full (the caller keeps the change in memory and tries again
    later); any other error propagates.
    """
    for last in (False, True):
        try:
            fn(*args, **kwargs)
            return True
        except Exception as exc:  # noqa: BLE001 - only "disk full" is handled here, the rest re-raised
            if not is_disk_full(exc, directory):
                raise
            if last or reserve is None or not reserve.release():
                return False
    return False
