"""The ingest server as a real subprocess on 127.0.0.1: uploads, duplicates, every refusal, slow
clients, rate limits, a full store, TLS. After each bad input: the right status, nothing stored, and
the server still healthy."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import io
import json
import socket
import ssl
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import httpx
import numpy as np
import pytest

from edgedepth.fleet.auth import DeviceRegistry
from edgedepth.fleet.store.local import LocalStore
from edgedepth.spool import SCHEMA, compute_item_id

ROOT = Path(__file__).resolve().parents[2]


# -- fixtures made here -------------------------------------------------------------------------
def png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def make_item(
    seed: int = 0,
    device: str = "cam-1",
    width: int = 64,
    height: int = 48,
    files: Optional[Dict[str, bytes]] = None,
    kinds: Optional[Dict[str, str]] = None,
):
    """(item_id, meta dict, {name: bytes}) of a consistent spool item with real PNGs."""
    rng = np.random.default_rng(seed)
    if files is None:
        files = {
            "rgb.png": png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)),
            "depth.png": png((rng.random((height, width)) * 8000).astype(np.uint16)),
        }
    kinds = kinds or {
        "rgb.png": "rgb",
        "depth.png": "depth_sensor",
        "prev.png": "rgb_neighbor",
        "uncertainty.npy": "uncertainty",
    }
    entries = {
        n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d), "kind": kinds[n]}
        for n, d in files.items()
    }
    item_id = compute_item_id(entries)
    meta = {
        "schema": SCHEMA,
        "id": item_id,
        "files": entries,
        "device_id": device,
        "captured_at": "2026-11-24T18:00:00.000Z",
        "score": 0.25 + seed,
        "width": width,
        "height": height,
        "source": "synthetic://indoor",
        "domain": "indoor",
        "labels": ["depth_sensor"],
        "model": {"name": "edgedepth", "version": "7", "sha256": "ab" * 32},
    }
    return item_id, meta, files


def tar_body(members: List[tuple]) -> bytes:
    """members: (name, bytes) for regular files, or a ready tarfile.TarInfo (links, directories)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
                continue
            name, data = m
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def item_body(item_id: str, meta, files: Dict[str, bytes]) -> bytes:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return tar_body([(f"{item_id}.json", raw)] + [(f"{item_id}.{n}", d) for n, d in files.items()])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`edgedepth ingest serve` in a subprocess."""

    def __init__(
        self,
        tmp: Path,
        store: str,
        args: List[str] = (),
        auth_db: Optional[Path] = None,
        scheme: str = "http",
        env: Optional[dict] = None,
    ) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.store = store
        self.log = tmp / f"server-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "edgedepth",
            "ingest",
            "serve",
            "--store",
            store,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            *args,
        ]
        if auth_db:
            cmd += ["--auth-db", str(auth_db)]
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.verify = True

    def wait_ready(self, verify=True, timeout: float = 30.0) -> "Server":
        self.verify = verify
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", verify=verify, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"server not ready: {self.log.read_text()[-3000:]}")

    def post(self, item_id: str, body: bytes, token: Optional[str], **headers) -> httpx.Response:
        hdrs = {
            "Content-Type": "application/x-tar",
            "X-Edgedepth-Body-Sha256": hashlib.sha256(body).hexdigest(),
        }
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
        return httpx.post(
            f"{self.url}/v1/items/{item_id}", content=body, headers=hdrs, verify=self.verify, timeout=10
        )

    def head(self, item_id: str, token: str) -> int:
        return httpx.head(
            f"{self.url}/v1/items/{item_id}",
            headers={"Authorization": f"Bearer {token}"},
            verify=self.verify,
            timeout=10,
        ).status_code

    def healthy(self) -> bool:
        r = httpx.get(self.url + "/healthz", verify=self.verify, timeout=5)
        return r.status_code == 200 and r.json() == {"status": "ok"}

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", verify=self.verify, timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def add_device_cli(name: str, *where: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "edgedepth", "ingest", "add-device", name, *where],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[0]


def stored_ids(store_dir: Path) -> List[str]:
    return sorted(p.name for p in (store_dir / "items").glob("*/*") if (p / "meta.json").is_file())


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ingest")
    store = tmp / "store"
    token = add_device_cli("cam-1", "--store", str(store))
    reg = DeviceRegistry(store / "devices.db")
    tokens = {"cam-1": token, "cam-2": reg.add_device("cam-2"), "cam-9": reg.add_device("cam-9")}
    reg.close()
    server = Server(
        tmp,
        str(store),
        [
            "--read-timeout",
            "1",
            "--min-upload-kbs",
            "100000",
            "--max-item-mb",
            "2",
            "--rate",
            "200",
            "--burst",
            "200",
            "--min-free-mb",
            "0",
            "--max-per-device",
            "8",
        ],
    ).wait_ready()
    server.tokens = tokens
    server.store_dir = store
    yield server
    server.stop()


# -- the happy path -----------------------------------------------------------------------------
def test_upload_then_duplicate_is_stored_once(srv):
    tok = srv.tokens["cam-1"]
    iid, meta, files = make_item(1)
    files["uncertainty.npy"] = _npy(np.full((48, 64), 0.5, np.float32))
    iid, meta, files = make_item(1, files=files)
    body = item_body(iid, meta, files)
    assert srv.head(iid, tok) == 404
    before = srv.metric("edgedepth_ingest_duplicates_total")
    sent_at = dt.datetime.utcnow().replace(microsecond=0)  # the server runs on this machine's clock
    r = srv.post(iid, body, tok)
    answered_at = dt.datetime.utcnow() + dt.timedelta(seconds=1)
    assert r.status_code == 201, r.text
    assert r.json() == {"id": iid, "stored": True, "duplicate": False}
    r2 = srv.post(iid, body, tok)
    assert r2.status_code == 200 and r2.json() == {"id": iid, "stored": True, "duplicate": True}
    assert srv.head(iid, tok) == 200
    assert srv.metric("edgedepth_ingest_duplicates_total") == before + 1
    assert stored_ids(srv.store_dir).count(iid) == 1
    item_dir = srv.store_dir / "items" / iid[:2] / iid
    assert sorted(p.name for p in item_dir.iterdir()) == [
        "depth.png",
        "meta.json",
        "rgb.png",
        "uncertainty.npy",
    ]
    assert (item_dir / "rgb.png").read_bytes() == files["rgb.png"]
    stored = json.loads((item_dir / "meta.json").read_text())
    assert (
        stored["received_by"] == "cam-1" and stored["device_id"] == "cam-1" and stored["domain"] == "indoor"
    )
    received = dt.datetime.strptime(stored["received_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert sent_at <= received <= answered_at  # UTC, stamped while the request was served
    store = LocalStore(srv.store_dir, min_free_bytes=0)  # the index a round reads
    rows = [m for m in store.iter_items() if m["id"] == iid]
    assert len(rows) == 1 and rows[0]["model"]["version"] == "7" and rows[0]["labels"] == ["depth_sensor"]
    store.close()


def test_parallel_uploads_all_land(srv):
    tok = srv.tokens["cam-2"]
    items = [make_item(100 + n, device="cam-2") for n in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda it: srv.post(it[0], item_body(*it), tok).status_code, items))
    assert codes == [201] * 8
    assert set(i[0] for i in items) <= set(stored_ids(srv.store_dir))


# -- refusals -----------------------------------------------------------------------------------
def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _bad_cases():
    """name -> (item_id in the URL, body, expected status, expected reason[, extra headers])."""
    cases = {}
    iid, meta, files = make_item(7)
    good = item_body(iid, meta, files)
    raw_meta = json.dumps(meta).encode()
    cases["not a tar"] = (iid, b"\x00garbage" * 300, 400, "bad_tar")
    cases["truncated tar"] = (iid, good[: len(good) // 2 + 100], 400, "bad_tar")
    cases["malformed json"] = (iid, item_body(iid, b"{not json", files), 400, "bad_meta")
    no_time = dict(meta)
    del no_time["captured_at"]
    cases["schema violation"] = (iid, item_body(iid, no_time, files), 400, "bad_meta")
    cases["member path traversal"] = (
        iid,
        tar_body(
            [
                (f"{iid}.json", raw_meta),
                (f"../{iid}.rgb.png", files["rgb.png"]),
                (f"{iid}.depth.png", files["depth.png"]),
            ]
        ),
        400,
        "bad_name",
    )
    cases["absolute member"] = (iid, tar_body([(f"/tmp/{iid}.json", raw_meta)]), 400, "bad_name")
    cases["symlink member"] = (
        iid,
        tar_body(
            [
                (f"{iid}.json", raw_meta),
                _link(f"{iid}.rgb.png", "/etc/passwd"),
                (f"{iid}.depth.png", files["depth.png"]),
            ]
        ),
        400,
        "bad_member",
    )
    cases["hardlink member"] = (
        iid,
        tar_body(
            [
                (f"{iid}.json", raw_meta),
                _link(f"{iid}.rgb.png", f"{iid}.json", tarfile.LNKTYPE),
                (f"{iid}.depth.png", files["depth.png"]),
            ]
        ),
        400,
        "bad_member",
    )
    d = tarfile.TarInfo(f"{iid}.dir")
    d.type = tarfile.DIRTYPE
    cases["directory member"] = (iid, tar_body([(f"{iid}.json", raw_meta), d]), 400, "bad_member")
    cases["member not in meta"] = (
        iid,
        tar_body(
            [(f"{iid}.json", raw_meta)]
            + [(f"{iid}.{n}", b) for n, b in files.items()]
            + [(f"{iid}.extra.png", files["rgb.png"])]
        ),
        400,
        "unexpected_member",
    )
    cases["missing member"] = (
        iid,
        tar_body([(f"{iid}.json", raw_meta), (f"{iid}.rgb.png", files["rgb.png"])]),
        400,
        "missing_member",
    )
    cases["no metadata member"] = (
        iid,
        tar_body([(f"{iid}.{n}", b) for n, b in files.items()]),
        400,
        "missing_member",
    )
    cases["bad id in url"] = ("..%2F..%2Fetc%2Fpasswd", good, 400, "bad_id")
    cases["uppercase id"] = (iid.upper(), good, 400, "bad_id")
    other = make_item(8)[0]
    cases["url id differs from meta id"] = (other, good, 422, "id_mismatch")
    forged = dict(meta, id=other)
    cases["meta id not the hash of its files"] = (other, item_body(other, forged, files), 422, "id_mismatch")
    tampered = dict(files, **{"rgb.png": files["rgb.png"][:-1] + bytes([files["rgb.png"][-1] ^ 1])})
    cases["file hash mismatch"] = (iid, item_body(iid, meta, tampered), 422, "hash_mismatch")
    cases["body hash mismatch"] = (iid, good, 422, "hash_mismatch", {"X-Edgedepth-Body-Sha256": "0" * 64})
    nid, nmeta, nfiles = make_item(
        9, files={"rgb.png": b"this is not an image at all" * 10, "depth.png": files["depth.png"]}
    )
    cases["rgb not an image"] = (nid, item_body(nid, nmeta, nfiles), 415, "bad_image")
    corrupt = bytearray(files["rgb.png"])
    corrupt[200:400] = bytes(b ^ 0x55 for b in corrupt[200:400])  # valid header, broken pixel data
    cid, cmeta, cfiles = make_item(14, files={"rgb.png": bytes(corrupt), "depth.png": files["depth.png"]})
    cases["corrupt png data"] = (cid, item_body(cid, cmeta, cfiles), 415, "bad_image")
    eid, emeta, efiles = make_item(
        10, files={"rgb.png": files["rgb.png"], "depth.png": png(np.zeros((48, 64), np.uint8))}
    )
    cases["8-bit depth png"] = (eid, item_body(eid, emeta, efiles), 415, "bad_image")
    fid, fmeta, ffiles = make_item(
        11, files={"rgb.png": files["rgb.png"], "uncertainty.npy": _npy(np.zeros((48, 64), np.float64))}
    )
    cases["float64 npy"] = (fid, item_body(fid, fmeta, ffiles), 415, "bad_array")
    gid, gmeta, gfiles = make_item(
        15, files={"rgb.png": files["rgb.png"], "uncertainty.npy": b"\x93NUMPY junk"}
    )
    cases["not an npy"] = (gid, item_body(gid, gmeta, gfiles), 415, "bad_array")
    sid, smeta, sfiles = make_item(
        12, files={"rgb.png": files["rgb.png"], "depth.png": png(np.zeros((24, 32), np.uint16))}
    )
    cases["depth size differs from meta"] = (sid, item_body(sid, smeta, sfiles), 422, "size_mismatch")
    jpg = cv2.imencode(".jpg", np.zeros((40, 64, 3), np.uint8))[1].tobytes()
    jid, jmeta, jfiles = make_item(16, files={"rgb.jpg": jpg}, kinds={"rgb.jpg": "rgb"})
    cases["jpeg size differs from meta"] = (jid, item_body(jid, jmeta, jfiles), 422, "size_mismatch")
    wid, wmeta, wfiles = make_item(13)
    wmeta["width"] = 65
    cases["meta size differs from images"] = (wid, item_body(wid, wmeta, wfiles), 422, "size_mismatch")
    cases["wrong content type"] = (iid, good, 415, "content_type", {"Content-Type": "application/json"})
    cases["other device's metadata"] = (iid, good, 403, "device_mismatch", {"Authorization": "TOKEN:cam-2"})
    return cases


BAD = _bad_cases()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_and_nothing_is_stored(srv, case):
    item_id, body, status, reason, *rest = BAD[case]
    headers = dict(rest[0]) if rest else {}
    token = srv.tokens["cam-1"]
    if headers.get("Authorization", "").startswith("TOKEN:"):
        token = srv.tokens[headers.pop("Authorization")[6:]]
    before = set(stored_ids(srv.store_dir))
    r = srv.post(item_id, body, token, **headers)
    assert r.status_code == status, (case, r.text)
    assert r.json()["error"] == reason and r.json()["detail"], r.text
    assert set(stored_ids(srv.store_dir)) == before
    assert list((srv.store_dir / "tmp").iterdir()) == []
    assert srv.healthy()


def test_tokens_wrong_missing_and_revoked(srv):
    iid, meta, files = make_item(20, device="cam-9")
    body = item_body(iid, meta, files)
    for token in (None, "edt_wrong", srv.tokens["cam-1"] + "x"):
        r = srv.post(iid, body, token)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.head(f"{srv.url}/v1/items/{iid}", timeout=5).status_code == 401
    # A refused body of 1.5 MiB is drained, so the client reads the 401 rather than a reset.
    big = np.random.default_rng(0).integers(0, 256, 3 << 19, dtype=np.uint8).tobytes()
    assert srv.post(iid, big, "edt_wrong").status_code == 401
    # With Expect: 100-continue the refusal comes before the body is sent.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(_raw_request(srv.url, iid, "edt_wrong", len(body), "Expect: 100-continue\r\n"))
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 401"), reply
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgedepth",
            "ingest",
            "revoke-device",
            "cam-9",
            "--store",
            str(srv.store_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    r = srv.post(iid, body, srv.tokens["cam-9"])  # the running server sees the revocation at once
    assert r.status_code == 401
    assert iid not in stored_ids(srv.store_dir) and srv.healthy()


def _raw_request(url: str, item_id: str, token: str, length: int, extra: str = "") -> bytes:
    host = url.split("//")[1]
    return (
        f"POST /v1/items/{item_id} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/x-tar\r\nX-Edgedepth-Body-Sha256: {'0' * 64}\r\n{extra}"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_oversize_missing_length_and_chunked(srv):
    iid, meta, files = make_item(30)
    tok = srv.tokens["cam-1"]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(_raw_request(srv.url, iid, tok, 3 << 20))  # over --max-item-mb 2: refused before reading
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    body = item_body(iid, meta, files)
    r = httpx.post(
        f"{srv.url}/v1/items/{iid}",
        content=iter([body]),
        timeout=10,  # chunked: no length
        headers={
            "Authorization": f"Bearer {tok}",
            "Content-Type": "application/x-tar",
            "X-Edgedepth-Body-Sha256": hashlib.sha256(body).hexdigest(),
        },
    )
    assert r.status_code == 411
    big = make_item(31, width=1024, height=768)  # a real item over 2 MiB of noise PNGs
    big_body = item_body(*big)
    assert len(big_body) > 2 << 20
    try:
        assert srv.post(big[0], big_body, tok).status_code == 413
    except httpx.TransportError:
        pass  # the server may close while a large body is still being sent; either way nothing is stored
    assert iid not in stored_ids(srv.store_dir) and big[0] not in stored_ids(srv.store_dir)
    assert srv.healthy()


def test_slow_client_gets_408_without_blocking_others(srv):
    iid, meta, files = make_item(40)
    body = item_body(iid, meta, files)
    tok = srv.tokens["cam-1"]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as slow:
        slow.sendall(_raw_request(srv.url, iid, tok, len(body)) + body[:100])
        other = make_item(41)
        assert srv.post(other[0], item_body(*other), tok).status_code == 201  # served meanwhile
        assert srv.healthy()
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):  # ... while the slow request was still open, unanswered
            slow.recv(4096)
        slow.setblocking(True)
        slow.sendall(body[100:110])  # trickle
        reply = slow.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408"), reply
    assert iid not in stored_ids(srv.store_dir)

    # A client that disconnects mid-body: nothing stored, server fine.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as gone:
        gone.sendall(_raw_request(srv.url, iid, tok, len(body)) + body[: len(body) // 2])
    time.sleep(0.2)
    assert iid not in stored_ids(srv.store_dir) and srv.healthy()
    text = httpx.get(srv.url + "/metrics", timeout=5).text
    assert 'edgedepth_ingest_rejects_total{reason="timeout"}' in text


def test_metrics_count_statuses_and_rejects(srv):
    text = httpx.get(srv.url + "/metrics", timeout=5).text
    assert "# TYPE edgedepth_ingest_requests_total counter" in text
    assert 'edgedepth_ingest_requests_total{method="POST",route="/v1/items",status="201"}' in text
    assert srv.metric("edgedepth_ingest_items_stored_total") >= 1
    assert srv.metric("edgedepth_ingest_bytes_stored_total") > 1000


# -- servers with other settings ------------------------------------------------------------------
def test_rate_limit_and_full_store(tmp_path):
    store = tmp_path / "store"
    token = DeviceRegistry(store / "devices.db").add_device("cam-1")
    limited = Server(
        tmp_path, str(store), ["--rate", "0.2", "--burst", "2", "--min-free-mb", "0"]
    ).wait_ready()
    full_store = tmp_path / "full"
    full_token = DeviceRegistry(full_store / "devices.db").add_device("cam-1")
    full = Server(tmp_path, str(full_store), ["--min-free-mb", "100000000"]).wait_ready()
    try:
        items = [make_item(50 + n) for n in range(3)]
        codes = [limited.post(i[0], item_body(*i), token) for i in items]
        assert [r.status_code for r in codes] == [201, 201, 429]
        assert int(codes[2].headers["retry-after"]) >= 1
        assert items[2][0] not in stored_ids(store) and limited.healthy()
        assert limited.post(items[0][0], item_body(*items[0]), token).status_code == 429  # still limited

        r = full.post(items[0][0], item_body(*items[0]), full_token)
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        assert stored_ids(full_store) == [] and full.healthy()
    finally:
        limited.stop()
        full.stop()


def _self_signed(tmp: Path):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_tls(tmp_path):
    cert, key = _self_signed(tmp_path)
    store = tmp_path / "store"
    token = DeviceRegistry(store / "devices.db").add_device("cam-1")
    server = Server(
        tmp_path, str(store), ["--cert", str(cert), "--key", str(key), "--min-free-mb", "0"], scheme="https"
    )
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        server.wait_ready(verify=ctx)
        iid, meta, files = make_item(60)
        r = server.post(iid, item_body(iid, meta, files), token)
        assert r.status_code == 201, r.text
        assert server.head(iid, token) == 200
        with pytest.raises(httpx.ConnectError):  # not trusted without the cert
            httpx.get(server.url + "/healthz", timeout=5)
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port does not work
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        assert stored_ids(store) == [iid]
    finally:
        server.stop()
