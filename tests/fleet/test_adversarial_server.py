"""Adversarial clients against the real ingest server process on 127.0.0.1.

Every case asserts the answer (status and reason), that nothing was stored and nothing already stored
was lost (items on disk and rows in the index), and that the server still serves a good client.
Covered: slow bodies and request heads, per-device upload caps, decompression bombs, non-finite and
unbounded metadata, HEAD on other devices' items, crash recovery at start-up, and the traversal, link,
length, hash and token cases.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional

import httpx
import numpy as np
import pytest

from edgedepth.errors import DataError
from edgedepth.fleet.auth import DeviceRegistry
from edgedepth.fleet.index import FrameIndex

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"_edgedepth_adv_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kit = _sibling("test_server")  # item builders and the Server wrapper
make_item, item_body, tar_body, png, stored_ids = (
    kit.make_item,
    kit.item_body,
    kit.tar_body,
    kit.png,
    kit.stored_ids,
)

N_TRICKLERS = 20


# -- helpers ------------------------------------------------------------------------------------
def index_ids(store: Path) -> List[str]:
    db = sqlite3.connect(f"file:{store / 'index.db'}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in db.execute("SELECT id FROM items"))
    finally:
        db.close()


class Snapshot:
    """What the store holds now: items on disk and rows in the index."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.items = set(stored_ids(store))
        self.rows = set(index_ids(store))

    def unchanged(self) -> None:
        assert set(stored_ids(self.store)) == self.items, "an item was stored or lost"
        assert set(index_ids(self.store)) == self.rows, "an index row was added or lost"
        assert list((self.store / "tmp").iterdir()) == [], "a temp folder was left behind"


_good_seed = [10_000]


def good_client_is_served(srv, device: str = "good") -> str:
    """A fresh, valid item from a well-behaved device is stored (201) and indexed."""
    _good_seed[0] += 1
    iid, meta, files = make_item(_good_seed[0], device=device)
    r = srv.post(iid, item_body(iid, meta, files), srv.tokens[device])
    assert r.status_code == 201, r.text
    assert iid in stored_ids(srv.store_dir) and iid in index_ids(srv.store_dir)
    return iid


def raw_head(port: int, item_id: str, token: str, length: int, sha: str = "0" * 64) -> bytes:
    return (
        f"POST /v1/items/{item_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/x-tar\r\nX-Edgedepth-Body-Sha256: {sha}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def read_reply(sock: socket.socket, timeout: float) -> Optional[bytes]:
    """The server's answer: b'' if it closed without one, None if nothing came within `timeout`."""
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return out
            out += data
            if b"\r\n\r\n" in out and out.startswith(b"HTTP/1.1 4"):
                return out
    except ConnectionResetError:
        return out
    except TimeoutError:
        return out or None


class Trickler(threading.Thread):
    """Sends `head` at once (or one byte a second with slow_head), then the body one byte a second."""

    def __init__(self, port: int, head: bytes, body: bytes, slow_head: bool = False) -> None:
        super().__init__(daemon=True)
        self.port, self.head, self.body, self.slow_head = port, head, body, slow_head
        self.reply: Optional[bytes] = None
        self.sock: Optional[socket.socket] = None
        self.connected = threading.Event()
        self.stop = threading.Event()

    def close(self) -> None:
        self.stop.set()
        if self.sock is not None:
            self.sock.close()

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            self.sock = s
            try:
                if not self.slow_head:
                    s.sendall(self.head)
                self.connected.set()
                for b in (self.head if self.slow_head else b"") + self.body:
                    if self.stop.wait(1.0):
                        return
                    s.sendall(bytes([b]))
            except OSError:
                pass
            finally:
                self.connected.set()
                if not self.stop.is_set():
                    self.reply = read_reply(s, 5)


def _metric(srv, name: str) -> Optional[float]:
    for line in httpx.get(srv.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def _devices(store: Path, names: List[str]) -> Dict[str, str]:
    reg = DeviceRegistry(store / "devices.db")
    try:
        return {n: reg.add_device(n) for n in names}
    finally:
        reg.close()


def _server(tmp: Path, args: List[str], devices: List[str]):
    store = tmp / "store"
    tokens = _devices(store, devices)
    srv = kit.Server(tmp, str(store), ["--min-free-mb", "0", "--rate", "1000", "--burst", "1000", *args])
    srv.wait_ready()
    srv.tokens, srv.store_dir = tokens, store
    return srv


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """Short windows: a body must advance 4 KiB per 1 s window; a request head must arrive within 1 s."""
    server = _server(
        tmp_path_factory.mktemp("adv"),
        ["--read-timeout", "1", "--min-upload-kbs", "4", "--header-timeout", "1", "--keep-alive", "2"],
        ["cam-1", "cam-2", "good"] + [f"bomb-{i}" for i in range(16)],
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    """Long windows, so slow clients stay connected for the whole test: only the caps protect."""
    names = ["cam-1", "good"] + [f"trickle-{i}" for i in range(N_TRICKLERS)]
    server = _server(
        tmp_path_factory.mktemp("patient"),
        ["--read-timeout", "60", "--min-upload-kbs", "0.001", "--header-timeout", "60"],
        names,
    )
    yield server
    server.stop()


def _wait_in_flight(srv, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = _metric(srv, "edgedepth_ingest_uploads_in_flight")
        if value is None:
            time.sleep(2.0)  # a server without the gauge: give the tricklers time to be read
            return
        if value >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} uploads in flight")


# -- slow clients -------------------------------------------------------------------------------
def test_twenty_tricklers_do_not_starve_a_good_client(patient):
    snap = Snapshot(patient.store_dir)
    body_tricklers, head_tricklers = [], []
    for i in range(N_TRICKLERS):
        iid, meta, files = make_item(500 + i, device=f"trickle-{i}")
        body = item_body(iid, meta, files)
        head = raw_head(
            patient.port, iid, patient.tokens[f"trickle-{i}"], len(body), hashlib.sha256(body).hexdigest()
        )
        body_tricklers.append(Trickler(patient.port, head, body))
        head_tricklers.append(Trickler(patient.port, head, body, slow_head=True))
    try:
        for t in body_tricklers + head_tricklers:
            t.start()
            t.connected.wait(10)
        _wait_in_flight(patient, N_TRICKLERS)
        for _ in range(3):  # several good uploads while 20 bodies and 20 request heads trickle
            good_client_is_served(patient)
        assert all(t.is_alive() for t in body_tricklers + head_tricklers), "a trickler was answered early"
    finally:
        for t in body_tricklers + head_tricklers:
            t.close()
    new_items = set(stored_ids(patient.store_dir)) - snap.items
    assert new_items == set(index_ids(patient.store_dir)) - snap.rows
    assert len(new_items) == 3  # the good items only, none of the tricklers' items
    good_client_is_served(patient)


def test_one_device_cannot_hold_more_than_its_upload_slots(patient):
    snap = Snapshot(patient.store_dir)
    slow = []
    for i in range(2):
        iid, meta, files = make_item(700 + i, device="cam-1")
        body = item_body(iid, meta, files)
        slow.append(
            Trickler(patient.port, raw_head(patient.port, iid, patient.tokens["cam-1"], len(body)), body)
        )
    try:
        for t in slow:
            t.start()
            t.connected.wait(10)
        _wait_in_flight(patient, 2)
        iid, meta, files = make_item(702, device="cam-1")
        r = patient.post(iid, item_body(iid, meta, files), patient.tokens["cam-1"])
        assert r.status_code == 429 and r.json()["error"] == "device_busy", r.text
        assert int(r.headers["retry-after"]) >= 1
        good_client_is_served(patient)
    finally:
        for t in slow:
            t.close()
    new_items = set(stored_ids(patient.store_dir)) - snap.items
    assert len(new_items) == 1 and iid not in new_items  # the good item only
    assert new_items == set(index_ids(patient.store_dir)) - snap.rows


def test_body_below_the_minimum_rate_is_cut_by_the_sliding_window(srv):
    """A body that starts fast and then trickles is cut after one window, not after a total deadline."""
    snap = Snapshot(srv.store_dir)
    iid, meta, files = make_item(40, width=320, height=240)
    body = item_body(iid, meta, files)
    assert len(body) > 100_000
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(raw_head(srv.port, iid, srv.tokens["cam-1"], len(body)) + body[:60_000])
        for i in range(60_000, 60_030):  # then one byte a second
            try:
                s.sendall(body[i : i + 1])
            except OSError:
                break
            reply = read_reply(s, 1.0)
            if reply:
                break
        else:
            reply = b""
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"connection: close" in reply.lower()
    snap.unchanged()
    good_client_is_served(srv)


def test_body_at_a_steady_rate_above_the_minimum_takes_several_windows_and_is_stored(srv):
    iid, meta, files = make_item(41, width=320, height=240)
    body = item_body(iid, meta, files)
    sha = hashlib.sha256(body).hexdigest()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(raw_head(srv.port, iid, srv.tokens["cam-1"], len(body), sha))
        step = 16 << 10  # 64 KiB/s against a minimum of 4 KiB/s: several 1 s windows
        for i in range(0, len(body), step):
            s.sendall(body[i : i + step])
            time.sleep(0.25)
        reply = read_reply(s, 10)
    assert reply.startswith(b"HTTP/1.1 201"), reply
    assert iid in stored_ids(srv.store_dir) and iid in index_ids(srv.store_dir)


@pytest.mark.parametrize(
    "head", [b"", b"POST /v1/items/", b"POST /v1/items/" + b"a" * 64 + b" HTTP/1.1\r\nHost"]
)
def test_slow_or_silent_request_head_is_closed(srv, head):
    """A connection that sends no head, or one byte of it a second, is closed after --header-timeout."""
    snap = Snapshot(srv.store_dir)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(head)
        closed = False
        for _ in range(12):  # up to 12 more bytes, one every 0.5 s
            try:
                s.sendall(b"x")
            except OSError:
                closed = True
                break
            if read_reply(s, 0.5) == b"":
                closed = True
                break
    assert closed, "the server kept a slow request head open"
    snap.unchanged()
    good_client_is_served(srv)


def test_silent_connections_filling_the_connection_limit_are_closed(tmp_path):
    """8 connections that never send a byte fill --max-connections 8 (503 for others) until the
    request-head deadline closes them; then a good client is served again."""
    srv = _server(tmp_path, ["--max-connections", "8", "--header-timeout", "3"], ["good"])
    try:
        snap = Snapshot(srv.store_dir)
        silent = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(8)]
        try:
            with httpx.Client(timeout=10) as client:
                busy = client.get(srv.url + "/healthz")
            assert busy.status_code == 503, busy.text
            for s in silent:  # each is closed by the server, without an answer
                assert read_reply(s, 10) == b""
        finally:
            for s in silent:
                s.close()
        snap.unchanged()
        good_client_is_served(srv)
        assert srv.metric('edgedepth_ingest_rejects_total{reason="head_timeout"}') >= 8
    finally:
        srv.stop()


def test_bodies_over_the_memory_budget_are_refused_while_small_ones_pass(tmp_path):
    """--body-memory-mb 1: a stalled client holding 800 KB leaves no room for a 380 KB body (503), but
    a small good item still fits; nothing is stored but the good item."""
    srv = _server(
        tmp_path,
        ["--body-memory-mb", "1", "--read-timeout", "60", "--min-upload-kbs", "0.001"],
        ["cam-1", "cam-2", "good"],
    )
    try:
        snap = Snapshot(srv.store_dir)
        big_id, big_meta, big_files = make_item(600, device="cam-1", width=600, height=450)
        big = item_body(big_id, big_meta, big_files)
        assert len(big) > 1 << 20
        mid_id, mid_meta, mid_files = make_item(601, device="cam-2", width=320, height=240)
        mid = item_body(mid_id, mid_meta, mid_files)
        assert 300_000 < len(mid) < 500_000
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as holder:
            holder.sendall(raw_head(srv.port, big_id, srv.tokens["cam-1"], len(big)) + big[:800_000])
            deadline = time.monotonic() + 20
            while _metric(srv, "edgedepth_ingest_body_bytes_held") < 800_000:
                assert time.monotonic() < deadline, "the server did not read the first 800 KB"
                time.sleep(0.05)
            try:
                r = srv.post(mid_id, mid, srv.tokens["cam-2"])
                assert r.status_code == 503 and r.json()["error"] == "busy", r.text
            except httpx.TransportError:
                pass  # the server may close while the body is still being sent
            good = good_client_is_served(srv)
        snap.items.add(good)
        snap.rows.add(good)
        time.sleep(0.2)
        snap.unchanged()
        assert srv.metric('edgedepth_ingest_rejects_total{reason="busy"}') >= 1
    finally:
        srv.stop()


# -- decompression bombs ------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def png_bomb(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A valid PNG of zeros: a few KB that decode to width x height x channels x depth bytes."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\x00" + bytes(width * channels * bit_depth // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, colour, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _bomb_cases():
    cases = {}
    w, h = 4000, 3000  # 12 Mpx: under the old 50 Mpx cap, over the largest frame (1920x1080)
    cases["frame larger than the largest frame"] = (
        make_item(900, width=w, height=h, files={"rgb.png": png_bomb(w, h)}),
        413,
        "image_too_large",
        "",
    )
    w, h = 1920, 1080
    cases["16-bit RGBA labelled rgb"] = (
        make_item(901, width=w, height=h, files={"rgb.png": png_bomb(w, h, 16, 6)}),
        415,
        "bad_image",
        "header",
    )
    cases["8-bit depth PNG"] = (
        make_item(
            902, width=w, height=h, files={"rgb.png": png_bomb(w, h), "depth.png": png_bomb(w, h, 8, 0)}
        ),
        415,
        "bad_image",
        "header",
    )
    many = {"rgb.png": png_bomb(w, h)}
    kinds = {"rgb.png": "rgb"}
    for k in range(8):  # nine frames of the largest size: over the pixels one item may hold
        name = f"prev{k}.png"
        many[name] = png_bomb(w, h) + bytes([k])  # distinct bytes after IEND, so distinct hashes
        kinds[name] = "rgb_neighbor"
    cases["nine full frames in one item"] = (
        make_item(903, width=w, height=h, files=many, kinds=kinds),
        413,
        "image_too_large",
        "pixels",
    )
    return cases


BOMBS = _bomb_cases()


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_decompression_bomb_is_refused_before_decoding(srv, case):
    (iid, meta, files), status, reason, detail = BOMBS[case]
    snap = Snapshot(srv.store_dir)
    r = srv.post(iid, item_body(iid, meta, files), srv.tokens["cam-1"])
    assert r.status_code == status and r.json()["error"] == reason, r.text
    assert detail in r.json()["detail"]
    snap.unchanged()
    good_client_is_served(srv)


def test_pixel_cap_is_the_configured_largest_frame(tmp_path):
    srv = _server(tmp_path, ["--max-frame", "64x48"], ["cam-1", "good"])
    try:
        snap = Snapshot(srv.store_dir)
        for w, h in ((96, 72), (80, 48)):
            iid, meta, files = make_item(620 + w, width=w, height=h)
            r = srv.post(iid, item_body(iid, meta, files), srv.tokens["cam-1"])
            assert r.status_code == 413 and r.json()["error"] == "image_too_large", r.text
            assert "64x48" in r.json()["detail"]
        snap.unchanged()
        good_client_is_served(srv)  # 64x48 items fit
        rotated = make_item(630, width=48, height=64)  # either orientation
        assert srv.post(rotated[0], item_body(*rotated), srv.tokens["cam-1"]).status_code == 201
    finally:
        srv.stop()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgedepth",
            "ingest",
            "serve",
            "--store",
            str(srv.store_dir),
            "--max-frame",
            "big",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "WIDTHxHEIGHT" in out.stderr


def test_sixteen_bombs_at_once_are_all_refused(srv):
    """16 hostile uploads in parallel (peak memory is measured by scripts/bench_ingest_attack.py)."""
    import concurrent.futures

    snap = Snapshot(srv.store_dir)
    w, h = 1920, 1080
    bombs = [
        make_item(950 + i, device=f"bomb-{i}", width=w, height=h, files={"rgb.png": png_bomb(w, h, 16, 6)})
        for i in range(16)
    ]

    def send(bomb):
        return srv.post(bomb[0], item_body(*bomb), srv.tokens[bomb[1]["device_id"]]).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, bombs))
    assert codes == [415] * 16, codes
    snap.unchanged()
    good_client_is_served(srv)


# -- metadata -----------------------------------------------------------------------------------
def _meta_cases():
    def with_meta(seed: int, **changes):
        iid, meta, files = make_item(seed)
        meta.update(changes)
        return iid, meta, files

    def raw(seed: int, text_of):
        iid, meta, files = make_item(seed)
        return iid, text_of(json.dumps(meta)).encode(), files

    cases = {
        "score NaN": (raw(300, lambda t: t.replace('"score": 300.25', '"score": NaN')), "score"),
        "score Infinity": (raw(301, lambda t: t.replace('"score": 301.25', '"score": Infinity')), "score"),
        "score 1e999": (raw(302, lambda t: t.replace('"score": 302.25', '"score": 1e999')), "score"),
        "scores -Infinity": (with_meta(303, scores={"a": 1.0}), "scores.a"),
        "2 MB source": (with_meta(304, source="s" * (2 << 20)), "metadata of"),
        "long string": (with_meta(305, domain="d" * 5000), "domain"),
        "100k labels": (with_meta(306, labels=["x"] * 100_000), "metadata of"),
        "1000 labels": (with_meta(314, labels=["x"] * 1000), "labels"),
        "70 labels": (with_meta(307, labels=[f"l{i}" for i in range(70)]), "labels"),
        "1x1 intrinsics": (with_meta(308, intrinsics=[[1.0]]), "intrinsics"),
        "3x3 intrinsics of text": (
            with_meta(309, intrinsics=[["a", 0, 0], [0, 1, 0], [0, 0, 1]]),
            "intrinsics",
        ),
        "2x4 pose": (with_meta(310, pose=[[1, 0, 0, 0], [0, 1, 0, 0]]), "pose"),
        "capture time not a time": (with_meta(311, captured_at="yesterday"), "captured_at"),
        "capture time without zone": (with_meta(312, captured_at="2026-11-24 18:00"), "captured_at"),
        "deep nesting": (with_meta(313, extra=json.loads("[" * 50 + "]" * 50)), "extra"),
    }
    iid, meta, files = cases["scores -Infinity"][0]
    cases["scores -Infinity"] = (
        (iid, json.dumps(meta).replace("1.0", "-Infinity").encode(), files),
        "scores.a",
    )
    return cases


META = _meta_cases()


@pytest.mark.parametrize("case", sorted(META))
def test_bad_metadata_is_refused_with_the_field_named(srv, case):
    (iid, meta, files), field = META[case]
    snap = Snapshot(srv.store_dir)
    r = srv.post(iid, item_body(iid, meta, files), srv.tokens["cam-1"])
    assert r.status_code == 400 and r.json()["error"] == "bad_meta", r.text
    assert field in r.json()["detail"], r.text
    snap.unchanged()
    good_client_is_served(srv)


def test_good_intrinsics_pose_and_labels_are_stored(srv):
    iid, meta, files = make_item(320)
    meta.update(
        intrinsics=[[500.0, 0, 32], [0, 500.0, 24], [0, 0, 1]],
        pose=np.eye(4).tolist(),
        labels=["depth_sensor", "night"],
        scores={"uncertainty": 0.5},
    )
    r = srv.post(iid, item_body(iid, meta, files), srv.tokens["cam-1"])
    assert r.status_code == 201, r.text
    assert iid in index_ids(srv.store_dir)


def test_index_ignores_only_a_duplicate_id(tmp_path):
    idx = FrameIndex(tmp_path / "index.db")
    row = {
        "id": "a" * 64,
        "device_id": "cam-1",
        "captured_at": "2026-11-24T18:00:00.000Z",
        "received_at": "2026-11-24T18:00:01.000000Z",
        "score": 0.5,
    }
    assert idx.add(dict(row)) is True
    assert idx.add(dict(row)) is False  # the same id again: ignored
    for bad in (
        dict(row, id="b" * 64, score=float("nan")),
        dict(row, id="c" * 64, score=float("inf")),
        dict(row, id="d" * 64, device_id=None),
    ):
        with pytest.raises(DataError):
            idx.add(bad)
    with pytest.raises(sqlite3.IntegrityError):  # a NOT NULL violation is never swallowed
        idx._db.execute(
            "INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
            ("e" * 64, "cam", "t", "t", None, None, None, None, None, None, None, "[]", 0, "{}"),
        )
    assert idx.count() == 1
    idx.close()


# -- HEAD ---------------------------------------------------------------------------------------
def test_head_answers_only_for_the_callers_own_items(srv):
    iid, meta, files = make_item(330, device="cam-1")
    assert srv.post(iid, item_body(iid, meta, files), srv.tokens["cam-1"]).status_code == 201
    assert srv.head(iid, srv.tokens["cam-1"]) == 200
    assert srv.head(iid, srv.tokens["cam-2"]) == 404  # another device learns nothing
    assert srv.head("f" * 64, srv.tokens["cam-2"]) == 404
    assert httpx.head(f"{srv.url}/v1/items/{iid}", timeout=5).status_code == 401
    good_client_is_served(srv)


# -- the cases of test_server.BAD plus missing/wrong tokens, with the store snapshot and good-client checks
def _kept_cases():
    cases = {}
    for name, (item_id, body, status, reason, *rest) in kit.BAD.items():
        cases[name] = (item_id, body, status, reason, dict(rest[0]) if rest else {})
    iid, meta, files = make_item(340)
    good = item_body(iid, meta, files)
    cases["no token"] = (iid, good, 401, "auth", {"Authorization": None})
    cases["wrong token"] = (iid, good, 401, "auth", {"Authorization": "Bearer edt_wrong"})
    cases["basic auth"] = (iid, good, 401, "auth", {"Authorization": "Basic Y2FtLTE6eA=="})
    return cases


KEPT = _kept_cases()


@pytest.mark.parametrize("case", sorted(KEPT))
def test_known_attacks_are_still_refused(srv, case):
    item_id, body, status, reason, headers = KEPT[case]
    token = srv.tokens["cam-1"]
    headers = dict(headers)
    if (headers.get("Authorization") or "").startswith("TOKEN:"):
        token = srv.tokens[headers.pop("Authorization")[6:]]
    elif "Authorization" in headers:
        token = None
        if headers["Authorization"] is None:
            del headers["Authorization"]
    snap = Snapshot(srv.store_dir)
    r = srv.post(item_id, body, token, **headers)
    assert r.status_code == status and r.json()["error"] == reason, (case, r.text)
    snap.unchanged()
    good_client_is_served(srv)


@pytest.mark.parametrize("lie", ["longer", "shorter"])
def test_content_length_lies(srv, lie):
    snap = Snapshot(srv.store_dir)
    iid, meta, files = make_item(350)
    body = item_body(iid, meta, files)
    sha = hashlib.sha256(body).hexdigest()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        if lie == "longer":  # says more than it sends, then stops: cut by the window, nothing stored
            s.sendall(raw_head(srv.port, iid, srv.tokens["cam-1"], len(body) + 5000, sha) + body)
            reply = read_reply(s, 10)
            assert reply.startswith(b"HTTP/1.1 408"), reply
        else:  # says less than it sends: the body read is cut short and its hash does not match
            s.sendall(raw_head(srv.port, iid, srv.tokens["cam-1"], len(body) - 1024, sha) + body)
            reply = read_reply(s, 10)
            assert reply.startswith(b"HTTP/1.1 422"), reply
    snap.unchanged()
    good_client_is_served(srv)


# -- crash recovery at start-up -----------------------------------------------------------------
CRASHING_SERVER = """
import os, sys
import edgedepth.fleet.index as index
import edgedepth.fleet.store.local as local
where = os.environ["CRASH_AT"]
if where == "index":  # killed after the item is renamed into place, before its index row is written
    index.FrameIndex.add_row = lambda self, row: os._exit(137)
else:  # killed while the item's files are still in the temp folder
    local.os.rename = lambda a, b: os._exit(137)
from edgedepth.cli.main import main
sys.argv = ["edgedepth"] + sys.argv[1:]
main()
"""


@pytest.mark.parametrize("crash_at", ["index", "rename"])
def test_start_up_indexes_committed_items_and_removes_temp_folders(tmp_path, crash_at):
    store = tmp_path / "store"
    tokens = _devices(store, ["cam-1", "good"])
    port = kit.free_port()
    args = ["ingest", "serve", "--store", str(store), "--port", str(port), "--min-free-mb", "0"]
    log = open(tmp_path / "crash.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SERVER, *args],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, CRASH_AT=crash_at),
    )
    crashing = kit.Server.__new__(kit.Server)
    crashing.url, crashing.proc, crashing.verify = f"http://127.0.0.1:{port}", proc, True
    crashing.log = tmp_path / "crash.log"
    kit.Server.wait_ready(crashing)
    iid, meta, files = make_item(360)
    with pytest.raises(httpx.TransportError):
        crashing.post(iid, item_body(iid, meta, files), tokens["cam-1"])
    assert proc.wait(10) == 137
    log.close()
    if crash_at == "index":
        assert stored_ids(store) == [iid] and index_ids(store) == []  # the state a crash leaves
    else:
        assert stored_ids(store) == [] and list((store / "tmp").iterdir()) != []

    srv = _server(tmp_path, [], [])  # same store (devices already there), normal server
    srv.tokens = tokens
    try:
        # Before any client asks: the committed item is indexed, no temp folder is left.
        assert index_ids(store) == ([iid] if crash_at == "index" else [])
        assert list((store / "tmp").iterdir()) == []
        if crash_at == "rename":  # the device re-sends the item it never got an answer for
            assert srv.post(iid, item_body(iid, meta, files), tokens["cam-1"]).status_code == 201
        else:
            assert srv.post(iid, item_body(iid, meta, files), tokens["cam-1"]).status_code == 200
        assert stored_ids(store) == [iid] and index_ids(store) == [iid]
        good_client_is_served(srv)
    finally:
        srv.stop()


def test_tar_bomb_members_are_bounded(srv):
    """A tar of many members or a member claiming more bytes than the body holds is refused."""
    snap = Snapshot(srv.store_dir)
    iid, meta, files = make_item(370)
    many = tar_body(
        [(f"{iid}.json", json.dumps(meta).encode())] + [(f"{iid}.f{i}.png", b"x") for i in range(80)]
    )
    r = srv.post(iid, many, srv.tokens["cam-1"])
    assert r.status_code == 400 and r.json()["error"] == "bad_member", r.text
    info = tarfile.TarInfo(f"{iid}.json")
    info.size = 10 << 20
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    r = srv.post(iid, header + b"{}" * 100, srv.tokens["cam-1"])
    assert r.status_code == 400 and r.json()["error"] == "bad_tar", r.text
    snap.unchanged()
    good_client_is_served(srv)
