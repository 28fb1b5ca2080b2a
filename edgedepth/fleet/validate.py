"""Checks of one upload body (a flat tar of a spool item) before anything is stored.

`parse_upload(item_id, body)` returns the item's metadata and files or raises `UploadRejected` with
the HTTP status the wire protocol names: 400 malformed (tar, JSON, schema, names, members),
413 image too large, 415 not a decodable image/array of the right type, 422 a hash or size mismatch.
Image headers are read before decoding, so a small file claiming a huge image is refused cheaply.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from pydantic import ValidationError

from edgedepth.errors import DataError
from edgedepth.fleet.store.base import META_NAME
from edgedepth.spool import FILE_NAME_RE, ITEM_ID_RE, SCHEMA, SpoolMeta, compute_item_id

MAX_MEMBERS = 64
MAX_PIXELS = 50_000_000  # per image; larger frames are refused with 413 before decoding
RGB_KINDS = ("rgb", "rgb_neighbor")
DEPTH_KINDS = ("depth_gt", "depth_sensor", "depth_pred")


class UploadRejected(DataError):
    """An upload that breaks the protocol; `status` is the HTTP status, `reason` a metrics label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass
class UploadedItem:
    meta: SpoolMeta
    meta_dict: dict  # the metadata JSON as sent (extra keys kept)
    files: Dict[str, bytes]  # logical name (e.g. "rgb.png") -> bytes


def read_tar_members(item_id: str, body: bytes) -> Dict[str, bytes]:
    """The regular-file members of an uncompressed tar, keyed by the part after `<id>.`."""
    members: Dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
            for n, info in enumerate(tar):
                if n >= MAX_MEMBERS:
                    raise UploadRejected(400, "bad_member", f"more than {MAX_MEMBERS} tar members")
                name = info.name
                if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise UploadRejected(400, "bad_member", f"tar member {name!r} is not a regular file "
                                         "(directories, links and devices are refused)")
                owner, _, rest = name.partition(".")
                if not ITEM_ID_RE.match(owner) or not (rest == "json" or FILE_NAME_RE.match(rest)):
                    raise UploadRejected(400, "bad_name", f"tar member {name[:200]!r} is not named "
                                         f"<item id>.<file name> (flat names only)")
                if owner != item_id:
                    raise UploadRejected(422, "id_mismatch", f"tar member {name!r} belongs to another item "
                                         f"than the URL's {item_id[:12]}...")
                if rest in members:
                    raise UploadRejected(400, "bad_member", f"tar member {name!r} appears twice")
                handle = tar.extractfile(info)
                data = handle.read() if handle is not None else b""
                if len(data) != info.size:
                    raise UploadRejected(400, "bad_tar", f"tar member {name!r} is truncated")
                members[rest] = data
    except UploadRejected:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as exc:
        raise UploadRejected(400, "bad_tar", f"body is not a readable uncompressed tar: {exc}") from exc
    return members


def parse_meta_member(item_id: str, raw: bytes) -> Tuple[SpoolMeta, dict]:
    try:
        meta = SpoolMeta.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(document)"
        raise UploadRejected(400, "bad_meta", f"metadata is not valid {SCHEMA}: {where}: "
                             f"{first.get('msg')}") from exc
    if meta.schema_ != SCHEMA:
        raise UploadRejected(400, "bad_meta", f"metadata schema {meta.schema_!r} is not {SCHEMA!r}")
    if meta.id != item_id:
        raise UploadRejected(422, "id_mismatch", f"metadata id {meta.id[:12]}... differs from the URL id")
    entries = {name: e.model_dump() for name, e in meta.files.items()}
    if compute_item_id(entries) != item_id:
        raise UploadRejected(422, "id_mismatch", "item id does not match the hash of its file list")
    if META_NAME in meta.files:
        raise UploadRejected(400, "bad_name", f"file name {META_NAME!r} is reserved")
    return meta, meta.model_dump(mode="json", by_alias=True)


def parse_upload(item_id: str, body: bytes, check_content: bool = True) -> UploadedItem:
    """Validate an upload body; see the module docstring for the statuses.

    With check_content=False the images are not decoded (call `check_contents` later): the server
    skips decoding for an id it already stores, whose files (same hashes) passed the checks before.
    """
    if not ITEM_ID_RE.match(item_id):
        raise UploadRejected(400, "bad_id", f"bad item id {item_id[:80]!r}: expected 64 lowercase hex")
    members = read_tar_members(item_id, body)
    if "json" not in members:
        raise UploadRejected(400, "missing_member", f"the tar has no {item_id[:12]}....json metadata member")
    meta, meta_dict = parse_meta_member(item_id, members.pop("json"))
    extra = sorted(set(members) - set(meta.files))
    missing = sorted(set(meta.files) - set(members))
    if extra:
        raise UploadRejected(400, "unexpected_member", f"tar members not named in the metadata: {extra}")
    if missing:
        raise UploadRejected(400, "missing_member", f"files named in the metadata, not in the tar: {missing}")
    for name, entry in meta.files.items():
        data = members[name]
        if len(data) != entry.bytes or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise UploadRejected(422, "hash_mismatch", f"file {name!r} does not match its size/SHA-256 "
                                 "in the metadata")
    item = UploadedItem(meta=meta, meta_dict=meta_dict, files=members)
    if check_content:
        check_contents(item)
    return item


def check_contents(item: UploadedItem) -> None:
    """Decode every file and check its type and size against the metadata."""
    for name, entry in item.meta.files.items():
        check_file_content(name, entry.kind, item.files[name], item.meta.width, item.meta.height)


# -- content checks ----------------------------------------------------------------------------
def png_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from a PNG's IHDR, or None if `data` is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from a JPEG's first SOFn marker, or None if not found."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + seg_len
    return None


def _npy_array(name: str, data: bytes) -> np.ndarray:
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, SyntaxError) as exc:
        raise UploadRejected(415, "bad_array", f"file {name!r} is not a .npy array: {exc}") from exc
    if dtype != np.dtype("<f4") or len(shape) != 2:
        raise UploadRejected(415, "bad_array", f"file {name!r} must be a float32 HxW array, got {dtype} "
                             f"{tuple(shape)}")
    if int(np.prod(shape)) * 4 != len(data) - buf.tell():
        raise UploadRejected(415, "bad_array", f"file {name!r}: array data does not match its header")
    arr = np.frombuffer(data, dtype="<f4", offset=buf.tell()).reshape(shape, order="F" if fortran else "C")
    return arr


def check_file_content(name: str, kind: str, data: bytes, width: int, height: int) -> None:
    """Decode one file and check its type and size against the metadata."""
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext == "npy":
        if kind in RGB_KINDS:
            raise UploadRejected(415, "bad_image", f"file {name!r}: an '{kind}' file must be a PNG or JPEG")
        arr = _npy_array(name, data)
        got = (arr.shape[1], arr.shape[0])
    elif ext in ("png", "jpg", "jpeg"):
        got = _check_image(name, kind, ext, data, width, height)
    else:
        raise UploadRejected(415, "bad_type", f"file {name!r}: unsupported type (.png, .jpg, .npy)")
    if got != (width, height):
        raise UploadRejected(422, "size_mismatch", f"file {name!r} is {got[0]}x{got[1]} but the metadata "
                             f"says {width}x{height}")


def _check_image(name: str, kind: str, ext: str, data: bytes, width: int, height: int) -> Tuple[int, int]:
    import cv2

    header = png_size(data) if ext == "png" else jpeg_size(data)
    if header is None:
        raise UploadRejected(415, "bad_image", f"file {name!r} is not a {ext.upper()} image")
    if header[0] * header[1] > MAX_PIXELS:
        raise UploadRejected(413, "image_too_large", f"file {name!r} is {header[0]}x{header[1]}: over "
                             f"{MAX_PIXELS} pixels")
    if header != (width, height):
        raise UploadRejected(422, "size_mismatch", f"file {name!r} is {header[0]}x{header[1]} but the "
                             f"metadata says {width}x{height}")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UploadRejected(415, "bad_image", f"file {name!r} does not decode as a {ext.upper()} image")
    channels = 1 if img.ndim == 2 else img.shape[2]
    if kind in RGB_KINDS and (img.dtype != np.uint8 or channels != 3):
        raise UploadRejected(415, "bad_image", f"file {name!r}: an '{kind}' image must be 8-bit, 3 channels "
                             f"(got {img.dtype}, {channels} channels)")
    if kind in DEPTH_KINDS and (ext != "png" or img.dtype != np.uint16 or channels != 1):
        raise UploadRejected(415, "bad_image", f"file {name!r}: a depth image must be a 16-bit "
                             f"single-channel PNG (got {img.dtype}, {channels} channels)")
    if kind == "uncertainty" and (channels != 1 or img.dtype not in (np.uint8, np.uint16)):
        raise UploadRejected(415, "bad_image", f"file {name!r}: an uncertainty image must be single-channel")
    return img.shape[1], img.shape[0]
