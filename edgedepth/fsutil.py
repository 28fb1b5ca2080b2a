"""Durable file writes shared by every writer in edgedepth (datasets, spool, stores, bundles, registry).

A crash at any instant leaves either the old file or the new one, never a partial one: write to a
temp file in the same directory, fsync it, rename it over the target, fsync the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


_deferred = threading.local()


def _deferring() -> bool:
    return bool(getattr(_deferred, "depth", 0))


class DeferredFsync(contextlib.ContextDecorator):
    """Bulk writers of derived folders (a round: thousands of frames, rebuilt from the store if lost):
    inside the block, write_bytes_atomic in this thread stays atomic (temp file + rename) but skips its
    two fsyncs per file; leaving the block syncs the filesystems once. On a disk where an fsync takes
    10-20 ms this is most of a round build's time. Use as `with DeferredFsync():` or `@DeferredFsync()`."""

    def __enter__(self) -> "DeferredFsync":
        _deferred.depth = getattr(_deferred, "depth", 0) + 1
        return self

    def __exit__(self, *exc) -> None:
        _deferred.depth -= 1
        if not _deferred.depth:
            os.sync()


def fsync_dir(path: PathLike) -> None:
    """Make a rename or create inside `path` durable."""
    if _deferring():
        return
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file to write `path` through, atomically and durably like write_bytes_atomic: for files
    written in pieces that are too big to hold in memory at once (a round's meta.json and lineage.json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if not _deferring():
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: PathLike, data: bytes, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically and durably (temp in the same dir, fsync, rename, fsync dir)."""
    with atomic_writer(path, mode) as f:
        f.write(data)
    return Path(path)


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def try_lock(path: PathLike) -> Iterator[bool]:
    """An exclusive, non-blocking lock on the file `path` (created if missing) for the block: yields True
    when this process holds it, False when another process does. Released when the block ends (or the
    process dies), so work split over processes is never done twice at once."""
    import fcntl

    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
