"""Upload daemon against the real ingest server (`edgedepth ingest serve`), both as processes on loopback."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import uploadkit as uk  # noqa: E402

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def fleet(tmp_path):
    store, spool = tmp_path / "store", tmp_path / "spool"
    token = uk.add_device(store, "dev-1")
    tok = tmp_path / "token"
    tok.write_text(token + "\n")
    tok.chmod(0o600)
    procs = []
    yield {"store": store, "spool": spool, "tok": tok, "port": uk.free_port(), "procs": procs,
           "tmp": tmp_path}
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def serve(f, *extra):
    argv = [uk.PY, "-m", "edgedepth", "ingest", "serve", "--store", str(f["store"]), "--host", "127.0.0.1",
            "--port", str(f["port"]), "--rate", "1000", "--burst", "1000", *extra]
    p = subprocess.Popen(argv, stdout=open(f["tmp"] / "server.log", "ab"), stderr=subprocess.STDOUT,
                         env=uk.env(), cwd=uk.REPO)
    f["procs"].append(p)
    scheme = "https" if "--cert" in extra else "http"
    uk.wait_http(f"{scheme}://127.0.0.1:{f['port']}/healthz", proc=p, verify=False)
    return p


def stored(store: Path) -> dict:
    out = {}
    for meta in (store / "items").glob("*/*/meta.json"):
        out[meta.parent.name] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                 for p in meta.parent.iterdir() if p.name != "meta.json"}
    return out


def once(f, *extra, server=None):
    server = server or f"http://127.0.0.1:{f['port']}"
    argv = uk.daemon_cmd(f["spool"], f["port"], f["tok"], "--once", "--once-timeout", "60", *extra)
    argv[argv.index("--server") + 1] = server
    return subprocess.run(argv, capture_output=True, text=True, env=uk.env(), cwd=uk.REPO, timeout=90)


def test_delivers_everything_and_empties_the_spool(fleet):
    frames = uk.make_frames(fleet["spool"], 25)
    serve(fleet)
    r = once(fleet)
    assert r.returncode == 0, r.stderr[-3000:]
    assert stored(fleet["store"]) == frames  # every file byte-identical
    assert uk.spool_item_count(fleet["spool"]) == 0
    meta = json.loads(next((fleet["store"] / "items").glob("*/*/meta.json")).read_text())
    assert meta["device_id"] == "dev-1" and meta["id"] in frames
    # spooling the same content again: one cheap duplicate answer, deleted locally, nothing stored twice
    again = uk.make_frames(fleet["spool"], 3)
    assert set(again) <= set(frames)
    r = once(fleet)
    assert r.returncode == 0 and "duplicates 3" in r.stderr, r.stderr[-2000:]
    assert len(stored(fleet["store"])) == 25 and uk.spool_item_count(fleet["spool"]) == 0


def test_server_rejection_moves_the_item_to_failed(fleet):
    from edgedepth.spool import Spool, captured_at

    good = uk.make_frames(fleet["spool"], 2)
    bad = Spool(fleet["spool"]).put({"rgb.png": (b"this is not a png at all" * 10, "rgb")},
                                    dict(device_id="dev-1", captured_at=captured_at(), score=0.99, width=8,
                                         height=8))
    serve(fleet)
    r = once(fleet)
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(stored(fleet["store"])) == set(good)
    reason = json.loads((fleet["spool"] / "failed" / f"{bad}.failed.json").read_text())
    assert reason["status"] == 415, reason
    assert (fleet["spool"] / "failed" / f"{bad}.rgb.png").exists()
    st = subprocess.run([uk.PY, "-m", "edgedepth", "upload", "status", "--spool", str(fleet["spool"])],
                        capture_output=True, text=True, env=uk.env(), cwd=uk.REPO)
    assert "failed 1" in st.stdout and "done 2" in st.stdout and bad[:12] in st.stdout, st.stdout


def test_server_down_then_up_is_retried_and_delivered(fleet):
    frames = uk.make_frames(fleet["spool"], 10)
    d = uk.start_daemon(fleet["spool"], fleet["port"], fleet["tok"], fleet["tmp"] / "daemon.log")
    fleet["procs"].append(d)
    uk.wait_log(fleet["tmp"] / "daemon.log", "Connection refused", d)  # no server yet: refused, back-off
    assert d.poll() is None and uk.spool_item_count(fleet["spool"]) == 10
    serve(fleet)
    t0 = time.time()
    while uk.spool_item_count(fleet["spool"]) and time.time() - t0 < 30:
        time.sleep(0.1)
    assert stored(fleet["store"]) == frames
    assert uk.stop(d) == 0
    log = (fleet["tmp"] / "daemon.log").read_text()
    assert "Connection refused" in log and "retry #" in log


def _self_signed(tmp: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_with_a_self_signed_ca_cert(fleet):
    frames = uk.make_frames(fleet["spool"], 3)
    cert, key = _self_signed(fleet["tmp"])
    serve(fleet, "--cert", str(cert), "--key", str(key))
    url = f"https://127.0.0.1:{fleet['port']}"
    # without the CA the TLS handshake fails: transient, data kept, --once gives up with exit 3
    r = once(fleet, "--once-timeout", "3", server=url)
    assert r.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, r.stderr[-2000:]
    assert uk.spool_item_count(fleet["spool"]) == 3
    r = once(fleet, "--ca-cert", str(cert), server=url)
    assert r.returncode == 0, r.stderr[-2000:]
    assert stored(fleet["store"]) == frames


def test_items_of_another_device_id_get_a_clear_error_naming_both(fleet):
    """`edgedepth run` spooled as 'dev-1' (e.g. its host-name default) but the token is 'dev-2''s: the
    daemon says so once, names both ids and the fix, keeps every item and does not keep re-sending."""
    frames = uk.make_frames(fleet["spool"], 3)  # device_id "dev-1"
    fleet["tok"].write_text(uk.add_device(fleet["store"], "dev-2") + "\n")
    serve(fleet)
    r = once(fleet, "--once-timeout", "4")
    assert r.returncode == 3, r.stderr[-3000:]
    assert uk.spool_item_count(fleet["spool"]) == 3 and not stored(fleet["store"])  # nothing lost
    err = r.stderr
    assert "spool items carry device_id 'dev-1' but the upload token belongs to 'dev-2'" in err, err[-3000:]
    assert "--device-id dev-2" in err and "refused the upload token" not in err
    assert err.count("Fix:") == 1  # said once, clearly
    server_log = (fleet["tmp"] / "server.log").read_text()
    assert server_log.count('" 403 ') == 1  # the other items of 'dev-1' were not sent in vain
    assert set(frames) == {p.name[:64] for p in fleet["spool"].glob("*.json")}
