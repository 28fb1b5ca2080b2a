"""The store interface: where the ingest server keeps uploaded items, and the index a round reads.

An item is what one spool item was on the device: a metadata dict (SpoolMeta plus the server's
`received_at` / `received_by`) and named files (`rgb.png`, `depth.png`, ...). Writes are create-only
and all-or-nothing: a reader sees either the whole item or nothing, and a second `put_item` of the
same id changes nothing and returns False.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Dict, Iterator, Optional

from edgedepth.errors import DataError, EdgeDepthError
from edgedepth.spool import FILE_NAME_RE, ITEM_ID_RE

META_NAME = "meta.json"  # reserved inside a stored item: the item's metadata, written last
_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


class StoreUnavailable(EdgeDepthError):
    """A transient store failure (object store down, disk full): retry later; nothing was written."""


def utc_now_iso() -> str:
    """Current UTC time as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (fixed width, so strings sort by time)."""
    return format_time(_dt.datetime.now(_dt.timezone.utc))


def check_item_id(item_id: str) -> str:
    if not isinstance(item_id, str) or not ITEM_ID_RE.match(item_id):
        raise DataError(f"bad item id {item_id!r}: expected 64 lowercase hex characters")
    return item_id


def check_file_name(name: str) -> str:
    if not isinstance(name, str) or not FILE_NAME_RE.match(name) or name in (META_NAME, "json"):
        raise DataError(f"bad item file name {name!r}: lowercase letters, digits, '_', '-', '.' only; "
                        f"'{META_NAME}' is reserved")
    return name


def parse_time(text: str) -> _dt.datetime:
    """Parse ISO 8601 UTC `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (or +00:00) into an aware datetime."""
    t = text.strip()
    if t.endswith("+00:00"):
        t = t[:-6] + "Z"
    if not _TIME_RE.match(t):
        raise DataError(f"bad time {text!r}: use ISO 8601 UTC like 2026-11-24T18:00:00Z")
    base, _, frac = t[:-1].partition(".")
    stamp = _dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=_dt.timezone.utc)
    return stamp + _dt.timedelta(microseconds=int((frac + "000000")[:6])) if frac else stamp


def format_time(stamp: _dt.datetime) -> str:
    return stamp.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_since(since: Optional[str]) -> Optional[str]:
    """Normalize `since` to the fixed-width form stored in `received_at` (so strings compare as times)."""
    return None if since is None else format_time(parse_time(since))


class Store:
    """Create-only storage of uploaded items plus an index of what was ingested."""

    def put_item(self, item_id: str, files: Dict[str, bytes], meta: dict) -> bool:
        """Store a whole item. True if written now, False if it was already there (nothing written).

        Raises StoreUnavailable on a transient failure; nothing of the item is visible then.
        """
        raise NotImplementedError

    def has(self, item_id: str) -> bool:
        """Whether the item is fully stored (committed)."""
        raise NotImplementedError

    def get_meta(self, item_id: str) -> dict:
        """The stored metadata dict; DataError if the item is not stored."""
        raise NotImplementedError

    def read_file(self, item_id: str, name: str) -> bytes:
        """One file of a stored item (`name` as in meta['files']); DataError if missing."""
        raise NotImplementedError

    def iter_items(self, since: Optional[str] = None) -> Iterator[dict]:
        """Metadata of every stored item (each id once), received strictly after `since` if given."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where this store lives, for logs."""
        return type(self).__name__

    def close(self) -> None:
        """Flush anything pending (e.g. S3 manifests) and release resources."""

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prepare_meta(item_id: str, files: Dict[str, bytes], meta: dict) -> dict:
    """Check an item before writing and return the metadata dict to store (with `received_at`)."""
    check_item_id(item_id)
    if not files:
        raise DataError(f"item {item_id[:12]}: no files")
    for name, data in files.items():
        check_file_name(name)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DataError(f"item {item_id[:12]}: file {name!r} is not bytes")
    if meta.get("id", item_id) != item_id:
        raise DataError(f"item {item_id[:12]}: metadata id {str(meta.get('id'))[:12]} differs")
    out = dict(meta)
    out["id"] = item_id
    out.setdefault("received_at", utc_now_iso())
    out["stored_bytes"] = int(sum(len(d) for d in files.values()))
    return out
