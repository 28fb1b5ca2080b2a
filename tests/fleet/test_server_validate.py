"""Upload checks in-process: image headers read before decoding, bombs refused cheaply, good items pass."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zlib

import cv2
import numpy as np
import pytest

from edgedepth.fleet.validate import (
    Limits,
    UploadRejected,
    check_file_content,
    check_file_header,
    check_meta_document,
    jpeg_size,
    parse_upload,
    png_size,
)
from edgedepth.spool import SCHEMA, compute_item_id


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _item(files, kinds, width, height):
    entries = {
        n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d), "kind": kinds[n]}
        for n, d in files.items()
    }
    iid = compute_item_id(entries)
    meta = {
        "schema": SCHEMA,
        "id": iid,
        "files": entries,
        "device_id": "cam-1",
        "captured_at": "2026-11-24T18:00:00Z",
        "width": width,
        "height": height,
        "extra_field": {"kept": True},
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [("json", json.dumps(meta).encode())] + list(files.items()):
            info = tarfile.TarInfo(f"{iid}.{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return iid, buf.getvalue()


def test_good_item_with_every_file_type_passes():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    npy = io.BytesIO()
    np.save(npy, np.ones((32, 48), np.float32))
    files = {
        "rgb.jpg": cv2.imencode(".jpg", rgb)[1].tobytes(),
        "prev.png": cv2.imencode(".png", rgb)[1].tobytes(),
        "depth.png": cv2.imencode(".png", np.full((32, 48), 1234, np.uint16))[1].tobytes(),
        "pred.npy": npy.getvalue(),
    }
    kinds = {"rgb.jpg": "rgb", "prev.png": "rgb_neighbor", "depth.png": "depth_gt", "pred.npy": "depth_pred"}
    iid, body = _item(files, kinds, 48, 32)
    item = parse_upload(iid, body)
    assert item.files == files
    assert item.meta.width == 48 and item.meta_dict["extra_field"] == {"kept": True}
    assert item.meta_dict["schema"] == SCHEMA


def test_header_sizes():
    img = np.zeros((21, 37, 3), np.uint8)
    assert png_size(cv2.imencode(".png", img)[1].tobytes()) == (37, 21)
    assert jpeg_size(cv2.imencode(".jpg", img)[1].tobytes()) == (37, 21)
    assert png_size(b"GIF89a....") is None and jpeg_size(b"\x89PNG") is None


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("the image was decoded: the header check must refuse it first")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    bomb = _png_header_only(100_000, 100_000)
    with pytest.raises(UploadRejected) as info:
        check_file_content("rgb.png", "rgb", bomb, 100_000, 100_000)
    assert info.value.status == 413 and info.value.reason == "image_too_large"


def test_npy_header_claiming_a_huge_array_is_refused_without_allocating():
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (1_000_000, 1_000_000)}
    )
    data = buf.getvalue() + b"\x00" * 64
    with pytest.raises(UploadRejected) as info:
        check_file_content("u.npy", "uncertainty", data, 1_000_000, 1_000_000)
    assert info.value.status == 415 and "does not match its header" in str(info.value)


@pytest.mark.parametrize(
    "name,kind,arr,status",
    [
        ("rgb.png", "rgb", np.zeros((8, 8), np.uint8), 415),  # gray, not 3-channel
        ("rgb.png", "rgb", np.zeros((8, 8, 3), np.uint16), 415),  # 16-bit colour
        ("depth.png", "depth_gt", np.zeros((8, 8, 3), np.uint16), 415),  # 3-channel depth
        ("depth.jpg", "depth_gt", np.zeros((8, 8), np.uint8), 415),  # lossy depth
        ("rgb.bmp", "rgb", np.zeros((8, 8, 3), np.uint8), 415),  # unsupported type
        ("depth.png", "depth_gt", np.zeros((8, 8), np.uint16), None),  # fine
    ],
)
def test_content_rules(name, kind, arr, status):
    data = cv2.imencode("." + name.rsplit(".", 1)[1], arr)[1].tobytes()
    if status is None:
        check_file_content(name, kind, data, 8, 8)
        return
    with pytest.raises(UploadRejected) as info:
        check_file_content(name, kind, data, 8, 8)
    assert info.value.status == status


def _ihdr_png(width: int, height: int, depth: int, colour: int) -> bytes:
    """A PNG header only (IHDR), no pixel data: refused from the header or it would fail to decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize(
    "kind,depth,colour",
    [("rgb", 16, 6), ("rgb", 16, 2), ("rgb", 8, 0), ("depth_gt", 8, 0), ("depth_sensor", 16, 2),
     ("uncertainty", 8, 2)],
)
def test_png_header_must_match_the_kind(kind, depth, colour):
    with pytest.raises(UploadRejected) as info:
        check_file_header("f.png", kind, _ihdr_png(64, 48, depth, colour), 64, 48)
    assert info.value.status == 415 and "header says" in str(info.value)


def test_frame_limits_are_the_configured_largest_frame():
    limits = Limits(max_width=640, max_height=480, max_item_pixels=2 * 640 * 480)
    assert limits.fits(640, 480) and limits.fits(480, 640) and not limits.fits(641, 480)
    with pytest.raises(UploadRejected) as info:
        check_file_header("rgb.png", "rgb", _ihdr_png(1280, 720, 8, 2), 1280, 720, limits)
    assert info.value.status == 413
    assert check_file_header("rgb.png", "rgb", _ihdr_png(640, 480, 8, 2), 640, 480, limits) is True


@pytest.mark.parametrize(
    "raw,field",
    [
        (b'{"score": NaN}', "score"),
        (b'{"score": -Infinity}', "score"),
        (b'{"scores": {"a": 1e999}}', "scores.a"),
        (b'{"source": "' + b"s" * 2000 + b'"}', "source"),
        (b'{"labels": [' + b",".join([b'"x"'] * 20) + b"]}", "labels"),
        (b'{"intrinsics": [[1, 0], [0, 1]]}', "intrinsics"),
        (b'{"intrinsics": [[0, 0, 1], [0, 1, 1], [0, 0, 1]]}', "intrinsics"),
        (b'{"captured_at": "2026-13-45T99:00:00Z"}', "captured_at"),
        (b'{"x": ' + b"[" * 200 + b"]" * 200 + b"}", "x"),
        (b"[" * 100_000 + b"]" * 100_000, "metadata of"),
    ],
)
def test_metadata_document_bounds_name_the_field(raw, field):
    with pytest.raises(UploadRejected) as info:
        check_meta_document(raw)
    assert info.value.status == 400 and field in str(info.value)


def test_jpeg_header_must_match_the_kind():
    rgb = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    gray = cv2.imencode(".jpg", np.zeros((48, 64), np.uint8))[1].tobytes()
    assert check_file_header("rgb.jpg", "rgb", rgb, 64, 48) is True
    for name, kind, data in (("rgb.jpg", "rgb", gray), ("depth.jpg", "depth_gt", gray),
                             ("u.jpg", "uncertainty", rgb)):
        with pytest.raises(UploadRejected) as info:
            check_file_header(name, kind, data, 64, 48)
        assert info.value.status == 415
