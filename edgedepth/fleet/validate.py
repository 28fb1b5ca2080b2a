"""Checks of one upload body (a flat tar of a spool item) before anything is stored.

`parse_upload(item_id, body)` returns the item's metadata and files or raises `UploadRejected` with
the HTTP status the wire protocol names: 400 malformed (tar, JSON, schema, names, members, a metadata
field out of bounds: the message names the field), 413 image too large, 415 not a decodable image/array
of the right type, 422 a hash or size mismatch.

Decompression bombs: every image's header (PNG IHDR, JPEG SOF) is read before anything is decoded and
checked against `Limits`: the size against the largest frame a device sends, the bit depth and colour
type against the file's kind (a 16-bit RGBA PNG labelled `rgb` is refused unread), the pixels of all
images of one item together; and only a few images are decoded at once in the process
(`set_decode_slots`), so the memory decoding takes is bounded whatever the uploads claim.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
import tarfile
import threading
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
from pydantic import ValidationError

from edgedepth.errors import DataError
from edgedepth.fleet.store.base import META_NAME, parse_time
from edgedepth.spool import FILE_NAME_RE, ITEM_ID_RE, SCHEMA, SpoolMeta, compute_item_id

MAX_MEMBERS = 64
RGB_KINDS = ("rgb", "rgb_neighbor")
DEPTH_KINDS = ("depth_gt", "depth_sensor", "depth_pred")
# The largest capture size among device_configs/ (1920x1080): no device sends a larger frame.
DEFAULT_MAX_FRAME = (1920, 1080)
IMAGES_PER_ITEM = 8  # default total-pixel budget of one item: this many frames of the largest size

# Metadata bounds: the JSON document, every string, list and object in it, and how deep it nests.
MAX_META_BYTES = 64 << 10
MAX_STRING = 1024
MAX_LIST = 64
MAX_KEYS = 64
MAX_DEPTH = 6
MAX_LABELS = 16
MAX_LABEL_LEN = 64
MATRIX_SHAPES = {"intrinsics": 3, "pose": 4}  # square matrices of finite numbers

# PNG IHDR (bit depth, colour type) accepted per file kind; colour types: 0 grey, 2 RGB, 3 palette.
PNG_FORMATS = {
    "rgb": {(8, 2), (8, 3)},
    "rgb_neighbor": {(8, 2), (8, 3)},
    "depth_gt": {(16, 0)},
    "depth_sensor": {(16, 0)},
    "depth_pred": {(16, 0)},
    "uncertainty": {(8, 0), (16, 0)},
}


@dataclass(frozen=True)
class Limits:
    """What one upload may claim before anything is decoded (the server sets these from its options)."""

    max_width: int = DEFAULT_MAX_FRAME[0]
    max_height: int = DEFAULT_MAX_FRAME[1]
    max_item_pixels: int = IMAGES_PER_ITEM * DEFAULT_MAX_FRAME[0] * DEFAULT_MAX_FRAME[1]

    @property
    def max_pixels(self) -> int:
        """Pixels of one image: the largest frame."""
        return self.max_width * self.max_height

    def fits(self, width: int, height: int) -> bool:
        """Whether a width x height frame fits the largest frame (either orientation)."""
        side = max(self.max_width, self.max_height)
        return width <= side and height <= side and width * height <= self.max_pixels


DEFAULT_LIMITS = Limits()
_decode_slots = threading.BoundedSemaphore(2)


def set_decode_slots(n: int) -> None:
    """How many images this process may decode at once (the server calls this once at start-up)."""
    global _decode_slots
    if n < 1:
        raise ValueError("decode slots must be >= 1")
    _decode_slots = threading.BoundedSemaphore(n)


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


class _NonFinite:
    def __init__(self, text: str) -> None:
        self.text = text


def _json_float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _bad_meta(where: str, message: str) -> UploadRejected:
    return UploadRejected(400, "bad_meta", f"metadata field {where}: {message}")


def _check_bounds(value: Any, where: str, depth: int = 0) -> None:
    """Every number finite, every string/list/object within bounds, nesting at most MAX_DEPTH."""
    if isinstance(value, _NonFinite):
        raise _bad_meta(where, f"{value.text} is not a finite number (NaN and Infinity are refused)")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
        raise _bad_meta(where, "integer out of range")
    if depth > MAX_DEPTH:
        raise _bad_meta(where, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise _bad_meta(where, f"string of {len(value)} characters (at most {MAX_STRING})")
    elif isinstance(value, list):
        if len(value) > MAX_LIST:
            raise _bad_meta(where, f"list of {len(value)} entries (at most {MAX_LIST})")
        for i, v in enumerate(value):
            _check_bounds(v, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        if len(value) > MAX_KEYS:
            raise _bad_meta(where, f"object with {len(value)} keys (at most {MAX_KEYS})")
        for k, v in value.items():
            if len(k) > MAX_LABEL_LEN:
                raise _bad_meta(where, f"key of {len(k)} characters (at most {MAX_LABEL_LEN})")
            _check_bounds(v, f"{where}.{k}" if where else k, depth + 1)


def _check_matrix(name: str, value: Any, n: int) -> None:
    if value is None:
        return
    if not (isinstance(value, list) and len(value) == n
            and all(isinstance(r, list) and len(r) == n for r in value)):
        raise _bad_meta(name, f"must be a {n}x{n} matrix of numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in value for v in r):
        raise _bad_meta(name, f"must be a {n}x{n} matrix of numbers")
    if name == "intrinsics" and not (value[0][0] > 0 and value[1][1] > 0):
        raise _bad_meta(name, "focal lengths K[0][0] and K[1][1] must be positive")


def check_meta_document(raw: bytes) -> dict:
    """Parse the metadata JSON and bound it before the schema is applied (400 names the field)."""
    if len(raw) > MAX_META_BYTES:
        raise UploadRejected(400, "bad_meta", f"metadata of {len(raw)} bytes is over {MAX_META_BYTES} bytes")
    try:
        doc = json.loads(raw, parse_float=_json_float, parse_constant=_NonFinite)
    except (ValueError, RecursionError) as exc:
        raise UploadRejected(400, "bad_meta", f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise UploadRejected(400, "bad_meta", "metadata must be a JSON object")
    _check_bounds(doc, "")
    labels = doc.get("labels")
    if isinstance(labels, list):
        if len(labels) > MAX_LABELS:
            raise _bad_meta("labels", f"{len(labels)} labels (at most {MAX_LABELS})")
        for i, label in enumerate(labels):
            if isinstance(label, str) and not 0 < len(label) <= MAX_LABEL_LEN:
                raise _bad_meta(f"labels[{i}]", f"labels are 1-{MAX_LABEL_LEN} characters")
    for name, n in MATRIX_SHAPES.items():
        _check_matrix(name, doc.get(name), n)
    captured = doc.get("captured_at")
    if isinstance(captured, str):
        try:
            parse_time(captured)
        except (DataError, ValueError) as exc:  # ValueError: matches the pattern, not a real date
            raise _bad_meta("captured_at", f"{captured[:64]!r} is not an ISO 8601 UTC time like "
                            f"2026-11-24T18:00:00.000Z ({exc})") from exc
    return doc


def parse_meta_member(item_id: str, raw: bytes) -> Tuple[SpoolMeta, dict]:
    doc = check_meta_document(raw)
    try:
        meta = SpoolMeta.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(document)"
        raise UploadRejected(400, "bad_meta", f"metadata is not valid {SCHEMA}: field {where}: "
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


def parse_upload(item_id: str, body: bytes, check_content: bool = True,
                 limits: Limits = DEFAULT_LIMITS) -> UploadedItem:
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
    if not limits.fits(meta.width, meta.height):
        raise UploadRejected(413, "image_too_large", f"metadata says {meta.width}x{meta.height}: larger than "
                             f"the largest frame accepted, {limits.max_width}x{limits.max_height}")
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
        check_contents(item, limits)
    return item


def check_contents(item: UploadedItem, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check every file's header against its kind and the limits, then decode each and check it.

    All headers are checked (and the item's total pixels bounded) before the first decode.
    """
    width, height = item.meta.width, item.meta.height
    images = 0
    for name, entry in item.meta.files.items():
        if check_file_header(name, entry.kind, item.files[name], width, height, limits):
            images += 1
    if images * width * height > limits.max_item_pixels:
        raise UploadRejected(413, "image_too_large", f"{images} images of {width}x{height} are over the "
                             f"{limits.max_item_pixels} pixels one item may hold")
    for name, entry in item.meta.files.items():
        check_file_content(name, entry.kind, item.files[name], width, height, limits)


# -- content checks ----------------------------------------------------------------------------
def png_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from a PNG's IHDR, or None if `data` is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from a JPEG's first SOFn marker, or None if not found."""
    i = _jpeg_sof(data)
    if i is None:
        return None
    height, width = struct.unpack(">HH", data[i + 5:i + 9])
    return width, height


def _jpeg_sof(data: bytes) -> Optional[int]:
    """Offset of a JPEG's first SOFn marker (0xFF byte), or None."""
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
            return i
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


def _ext(name: str) -> str:
    return name.rsplit(".", 1)[-1] if "." in name else ""


def png_format(data: bytes) -> Optional[Tuple[int, int]]:
    """(bit depth, colour type) from a PNG's IHDR, or None if `data` is not a PNG."""
    if png_size(data) is None or len(data) < 29 or data[8:12] != b"\x00\x00\x00\x0d":
        return None
    return data[24], data[25]


def jpeg_format(data: bytes) -> Optional[Tuple[int, int]]:
    """(sample precision, components) from a JPEG's first SOFn marker, or None if not found."""
    i = _jpeg_sof(data)
    if i is None or i + 10 > len(data):
        return None
    return data[i + 4], data[i + 9]


def check_file_header(name: str, kind: str, data: bytes, width: int, height: int,
                      limits: Limits = DEFAULT_LIMITS) -> bool:
    """Check a file's header (size, bit depth, colour type) against its kind without decoding it.

    Returns True for an image (PNG/JPEG), False for an array.
    """
    ext = _ext(name)
    if ext == "npy":
        if kind in RGB_KINDS:
            raise UploadRejected(415, "bad_image", f"file {name!r}: an '{kind}' file must be a PNG or JPEG")
        return False
    if ext not in ("png", "jpg", "jpeg"):
        raise UploadRejected(415, "bad_type", f"file {name!r}: unsupported type (.png, .jpg, .npy)")
    header = png_size(data) if ext == "png" else jpeg_size(data)
    fmt = png_format(data) if ext == "png" else jpeg_format(data)
    if header is None or fmt is None:
        raise UploadRejected(415, "bad_image", f"file {name!r} is not a {ext.upper()} image")
    if not limits.fits(*header):
        raise UploadRejected(413, "image_too_large", f"file {name!r} is {header[0]}x{header[1]}: larger than "
                             f"the largest frame accepted, {limits.max_width}x{limits.max_height}")
    if header != (width, height):
        raise UploadRejected(422, "size_mismatch", f"file {name!r} is {header[0]}x{header[1]} but the "
                             f"metadata says {width}x{height}")
    if ext == "png":
        allowed = PNG_FORMATS.get(kind, set())
        if fmt not in allowed:
            want = ", ".join(f"{d}-bit colour type {c}" for d, c in sorted(allowed)) or "no PNG"
            raise UploadRejected(415, "bad_image", f"file {name!r}: a '{kind}' PNG must be {want}; its "
                                 f"header says {fmt[0]}-bit colour type {fmt[1]}")
    else:
        if kind in DEPTH_KINDS:
            raise UploadRejected(415, "bad_image", f"file {name!r}: a depth image must be a 16-bit "
                                 "single-channel PNG, not a JPEG")
        want = 3 if kind in RGB_KINDS else 1
        if fmt != (8, want):
            raise UploadRejected(415, "bad_image", f"file {name!r}: a '{kind}' JPEG must be 8-bit with "
                                 f"{want} components; its header says {fmt[0]}-bit, {fmt[1]} components")
    return True


def check_file_content(name: str, kind: str, data: bytes, width: int, height: int,
                       limits: Limits = DEFAULT_LIMITS) -> None:
    """Check the header, then decode one file and check its type and size against the metadata."""
    is_image = check_file_header(name, kind, data, width, height, limits)
    if not is_image:
        arr = _npy_array(name, data)
        got = (arr.shape[1], arr.shape[0])
    else:
        got = _check_image(name, kind, _ext(name), data)
    if got != (width, height):
        raise UploadRejected(422, "size_mismatch", f"file {name!r} is {got[0]}x{got[1]} but the metadata "
                             f"says {width}x{height}")


def _check_image(name: str, kind: str, ext: str, data: bytes) -> Tuple[int, int]:
    import cv2

    with _decode_slots:
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
