"""The spool: the one on-disk hand-over between the live loop (writer) and the upload daemon (reader).

Contract (also in README "Spool format"):
- One flat directory. An item is a set of files `<id>.<name>` (e.g. `<id>.rgb.png`, `<id>.depth.png`,
  `<id>.prev.png`) plus `<id>.json` (the metadata), written LAST, each atomically (temp file, fsync,
  rename, fsync the directory). A reader ignores items without their `.json`.
- `<id>` is the SHA-256 (64 lowercase hex) of the canonical JSON of the item's `files` map, which
  names every file of the item with its own SHA-256 and size. So the id is content-addressed and
  a retry of the same item is idempotent everywhere downstream.
- The metadata JSON follows `SpoolMeta` (schema "edgedepth.spool/1").
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgedepth.errors import DataError

SCHEMA = "edgedepth.spool/1"
ITEM_ID_RE = re.compile(r"^[0-9a-f]{64}$")
# Logical file names inside an item: lowercase letters, digits, '_', '-', '.'; no path separators.
FILE_NAME_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
FILE_KINDS = ("rgb", "rgb_neighbor", "depth_gt", "depth_sensor", "depth_pred", "uncertainty")


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    kind: str
    offset: int = 0  # frame offset of a neighbour frame (t-k -> -k), 0 for the frame itself
    units: Optional[str] = None  # depth files: "mm_uint16" (PNG) or "m_float32" (.npy)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in FILE_KINDS:
            raise ValueError(f"unknown file kind {v!r}; one of {FILE_KINDS}")
        return v


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = "edgedepth"
    version: str = "0"
    sha256: str = ""


class SpoolMeta(BaseModel):
    """Metadata of one spool item (`<id>.json`)."""

    model_config = ConfigDict(extra="allow")
    schema_: str = Field(SCHEMA, alias="schema")
    id: str = Field(pattern=r"^[0-9a-f]{64}$")
    files: Dict[str, FileEntry]
    device_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    model: ModelRef = Field(default_factory=ModelRef)
    captured_at: str  # ISO 8601 UTC, e.g. 2026-11-24T18:00:00.123Z
    score: float = 0.0  # the selection score that ranks uploads and eviction (higher = more useful)
    scores: Dict[str, float] = Field(default_factory=dict)
    selection: str = "hard"  # hard | random | duplicate | manual
    source: str = ""
    domain: Optional[str] = None
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    intrinsics: Optional[List[List[float]]] = None  # 3x3 K at width x height
    pose: Optional[List[List[float]]] = None  # 4x4 camera-to-world, metres
    labels: List[str] = Field(default_factory=list)  # e.g. ["depth_gt"], ["depth_sensor"]

    @field_validator("files")
    @classmethod
    def _names(cls, v: Dict[str, FileEntry]) -> Dict[str, FileEntry]:
        if not v:
            raise ValueError("an item needs at least one file")
        for name in v:
            if not FILE_NAME_RE.match(name) or name == "json":
                raise ValueError(f"bad file name {name!r} in item")
        if sum(1 for e in v.values() if e.kind == "rgb" and e.offset == 0) != 1:
            raise ValueError("an item needs exactly one 'rgb' file at offset 0")
        return v


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compute_item_id(files: Dict[str, dict]) -> str:
    """Item id = SHA-256 of the canonical JSON of {name: {"sha256", "bytes"}} (other keys ignored)."""
    canon = {name: {"bytes": int(e["bytes"]), "sha256": e["sha256"]} for name, e in files.items()}
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def item_file_name(item_id: str, name: str) -> str:
    """On-disk (and in-upload) name of an item's file; `name == "json"` gives the metadata file."""
    return f"{item_id}.{name}"


def parse_meta(raw: bytes, source: str = "item") -> SpoolMeta:
    """Parse and validate an item's metadata JSON; DataError says what is wrong."""
    try:
        meta = SpoolMeta.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise DataError(f"{source}: metadata does not match {SCHEMA}: {where}: {first.get('msg')}") from exc
    files = {n: e.model_dump() for n, e in meta.files.items()}
    if compute_item_id(files) != meta.id:
        raise DataError(f"{source}: item id {meta.id[:12]}... does not match the hash of its file list")
    return meta
