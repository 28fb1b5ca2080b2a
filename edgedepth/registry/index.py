"""REGISTRY/index.json: the list of published versions, and version ordering.

Layout::

    {"format": "edgedepth-registry/1",
     "versions": [{"version": "3", "created_at": "...Z", "promoted": true, "manifest_sha256": "...",
                   "key_id": "...", "files": 7, "size_bytes": 123, "notes": "...",
                   "model": {...}, "metrics": {...}}, ...],
     "latest_promoted": "3",
     "updated_at": "...Z"}

Versions are dotted non-negative integers ("1", "2", "1.4.0"), compared numerically; the index is
sorted by version. `latest_promoted` is derived (the highest promoted version), never set by hand.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from edgedepth.errors import ConfigError, EdgeDepthError

INDEX = "index.json"
INDEX_FORMAT = "edgedepth-registry/1"
VERSIONS_DIR = "versions"
_VERSION = re.compile(r"^\d+(\.\d+)*$")


class RegistryError(EdgeDepthError):
    """The registry's index is unreadable or an operation on it is not allowed."""


def check_version(version: str) -> str:
    v = str(version).strip()
    if not _VERSION.match(v):
        raise ConfigError(f"version {version!r} is not a dotted number like 7 or 1.2.0")
    return v


def version_key(version: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in check_version(version).split("."))


def next_version(existing: List[str]) -> str:
    """One more than the highest version (last component bumped), or "1" for an empty registry."""
    if not existing:
        return "1"
    top = max(existing, key=version_key).split(".")
    top[-1] = str(int(top[-1]) + 1)
    return ".".join(top)


def version_key_prefix(version: str) -> str:
    return f"{VERSIONS_DIR}/{check_version(version)}"


def empty_index() -> Dict[str, Any]:
    return {"format": INDEX_FORMAT, "versions": [], "latest_promoted": None}


def parse_index(data: Optional[bytes], source: str = INDEX) -> Dict[str, Any]:
    """Parse and validate index.json bytes (None = registry not created yet -> empty index)."""
    if data is None:
        return empty_index()
    try:
        index = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegistryError(f"{source} is not JSON ({exc}); restore it from a backup or re-publish") from exc
    if not isinstance(index, dict) or not isinstance(index.get("versions"), list):
        raise RegistryError(f"{source} has no 'versions' list; is this an edgedepth registry?")
    for entry in index["versions"]:
        if not isinstance(entry, dict) or "version" not in entry:
            raise RegistryError(f"{source} has a version entry without 'version': {entry!r}")
        try:
            check_version(entry["version"])
        except ConfigError as exc:
            raise RegistryError(f"{source}: {exc}") from exc
        entry["version"] = str(entry["version"])
        entry["promoted"] = bool(entry.get("promoted", False))
    index["versions"].sort(key=lambda e: version_key(e["version"]))
    index["latest_promoted"] = latest_promoted_version(index)
    return index


def dump_index(index: Dict[str, Any]) -> bytes:
    index = dict(index)
    index["format"] = INDEX_FORMAT
    index["versions"] = sorted(index["versions"], key=lambda e: version_key(e["version"]))
    index["latest_promoted"] = latest_promoted_version(index)
    index["updated_at"] = utc_now()
    return (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8")


def find_entry(index: Dict[str, Any], version: str) -> Optional[Dict[str, Any]]:
    v = check_version(version)
    for entry in index["versions"]:
        if entry["version"] == v:
            return entry
    return None


def latest_promoted_version(index: Dict[str, Any]) -> Optional[str]:
    promoted = [e["version"] for e in index["versions"] if e.get("promoted")]
    return max(promoted, key=version_key) if promoted else None


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
