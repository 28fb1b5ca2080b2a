"""The upload body: one spool item as an uncompressed POSIX (USTAR) tar, streamed from disk.

Members, in order: `<id>.json` (the metadata) and `<id>.<name>` for each file in the metadata, sorted
by name, with flat names and deterministic headers (mode 0644, mtime 0, uid/gid 0, no user names), so
the same item always encodes to the same bytes and the body SHA-256 is stable across retries. The
archive ends with the two zero blocks POSIX asks for (no record padding), which stdlib tarfile reads.

`prepare()` reads the files once to compute the body length and SHA-256 and to check every file against
the SHA-256 in the metadata (local corruption is caught before anything is sent); `iter_body()` streams
the same bytes again in chunks for the request.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from edgedepth.errors import DataError
from edgedepth.spool import SCHEMA, SpoolItem, compute_item_id, item_file_name

BLOCK = 512
CHUNK = 64 * 1024
CONTENT_TYPE = "application/x-tar"
BODY_SHA_HEADER = "X-Edgedepth-Body-Sha256"


class LocalCorruption(DataError):
    """A spool file no longer matches the SHA-256 or size recorded in its metadata."""


@dataclass
class Member:
    arcname: str
    path: Path
    size: int
    sha256: Optional[str]  # expected content hash (None for the metadata file itself)


@dataclass
class PreparedBody:
    item_id: str
    members: List[Member]
    length: int
    sha256: str


def members_of(item: SpoolItem) -> List[Member]:
    """The tar members of an item: metadata first, then its files sorted by name."""
    out = [Member(item_file_name(item.id, "json"), item.json_path, item.json_path.stat().st_size, None)]
    for name in sorted(item.meta.files):
        entry = item.meta.files[name]
        out.append(Member(item_file_name(item.id, name), item.paths[name], entry.bytes, entry.sha256))
    return out


def tar_header(arcname: str, size: int) -> bytes:
    """A deterministic USTAR header block for a regular file."""
    info = tarfile.TarInfo(arcname)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    try:
        return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
    except ValueError as exc:
        raise DataError(f"cannot encode {arcname!r} as a USTAR member: {exc}") from exc


def _padding(size: int) -> bytes:
    rest = size % BLOCK
    return b"\0" * (BLOCK - rest) if rest else b""


def body_length(members: List[Member]) -> int:
    return sum(BLOCK + m.size + len(_padding(m.size)) for m in members) + 2 * BLOCK


def _file_chunks(member: Member, chunk_size: int) -> Iterator[bytes]:
    sent = 0
    with open(member.path, "rb") as f:
        while True:
            chunk = f.read(min(chunk_size, member.size - sent))
            if not chunk:
                break
            sent += len(chunk)
            yield chunk
            if sent >= member.size:
                break
    if sent != member.size:
        raise LocalCorruption(f"{member.path}: {sent} bytes on disk, {member.size} expected")


def _pieces(members: List[Member], chunk_size: int) -> Iterator[bytes]:
    for m in members:
        yield tar_header(m.arcname, m.size)
        yield from _file_chunks(m, chunk_size)
        pad = _padding(m.size)
        if pad:
            yield pad
    yield b"\0" * (2 * BLOCK)


def iter_body(members: List[Member], chunk_size: int = CHUNK) -> Iterator[bytes]:
    """Yield the tar body in chunks of `chunk_size` bytes (the last one shorter).

    Headers, small files and padding are coalesced, so a small item goes out in one write instead of
    one per piece; memory stays bounded by about two chunks.
    """
    buf = bytearray()
    for piece in _pieces(members, chunk_size):
        buf += piece
        while len(buf) >= chunk_size:
            yield bytes(buf[:chunk_size])
            del buf[:chunk_size]
    if buf:
        yield bytes(buf)


def prepare(item: SpoolItem, on_chunk: Optional[Callable[[int], None]] = None) -> PreparedBody:
    """Read the item once: body length and SHA-256, and every file checked against its metadata."""
    members = members_of(item)
    body = hashlib.sha256()
    for m in members:
        body.update(tar_header(m.arcname, m.size))
        h = hashlib.sha256()
        for chunk in _file_chunks(m, CHUNK):
            body.update(chunk)
            h.update(chunk)
        if m.sha256 is not None and h.hexdigest() != m.sha256:
            raise LocalCorruption(f"{m.path}: content SHA-256 differs from the one in the item's metadata")
        body.update(_padding(m.size))
    body.update(b"\0" * (2 * BLOCK))
    return PreparedBody(item.id, members, body_length(members), body.hexdigest())


def encode_item(item: SpoolItem) -> Tuple[bytes, str]:
    """The whole body in memory and its SHA-256 (tests and benchmarks; the daemon streams instead)."""
    data = b"".join(iter_body(members_of(item)))
    return data, hashlib.sha256(data).hexdigest()


def encode_files(files: Dict[str, bytes], kinds: Dict[str, str], **meta: Any) -> Tuple[str, bytes]:
    """(item id, body) of an item made in memory from `files` (name -> bytes, each with its kind in
    `kinds`) and metadata fields `meta`, in the layout a spool item is sent in (the metadata member is
    json.dumps of the document): for load generators and tests that upload without a spool on disk."""
    entries = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "kind": kinds[name]}
               for name, data in files.items()}
    item_id = compute_item_id(entries)
    doc = json.dumps({"schema": SCHEMA, "id": item_id, "files": entries, **meta}).encode()
    pieces = [(item_file_name(item_id, "json"), doc)]
    pieces += [(item_file_name(item_id, name), files[name]) for name in sorted(files)]
    body = b"".join(tar_header(arcname, len(data)) + data + _padding(len(data)) for arcname, data in pieces)
    return item_id, body + b"\0" * (2 * BLOCK)
