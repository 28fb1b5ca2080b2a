"""The signed registry state: round trip, tampering, malformed payloads, freshness, the trust record."""

from __future__ import annotations

import base64
import json

import pytest

from edgedepth.registry.keys import generate_keypair, load_private_key, load_public_key
from edgedepth.registry.state import (
    StateRejected,
    TrustStore,
    VersionRecord,
    check_fresh,
    parse_state,
    sign_state,
)

SHA = "ab" * 32


@pytest.fixture
def pair(keys):
    return load_private_key(keys[0]), load_public_key(keys[1])


def resign_payload(raw: bytes, key, change) -> bytes:
    """Re-sign an edited payload with `key` (what only the key holder can do)."""
    env = json.loads(raw)
    payload = json.loads(env["signed"])
    change(payload)
    env["signed"] = json.dumps(payload)
    env["signature"] = base64.b64encode(key.sign(env["signed"].encode())).decode()
    return json.dumps(env).encode()


def test_round_trip_and_promoted_order(pair):
    key, pub = pair
    recs = [VersionRecord("2", SHA, True), VersionRecord("10", SHA, True), VersionRecord("3", SHA, False)]
    state = sign_state(recs, 4, key, expires_s=60, now=1000.0)
    got = parse_state(state.raw, pub)
    assert got.sequence == 4 and got.latest_promoted == "10"
    assert [r.version for r in got.promoted()] == ["10", "2"] and got.entry("3").promoted is False
    assert got.expires == "1970-01-01T00:17:40Z" and got.sha256 == state.sha256
    check_fresh(got, now=1059.0)
    with pytest.raises(StateRejected, match="expired at 1970-01-01T00:17:40Z"):
        check_fresh(got, now=1060.0)


@pytest.mark.parametrize("change, match", [
    (lambda p: p.update(sequence=0), "sequence"),
    (lambda p: p.update(sequence="7"), "sequence"),
    (lambda p: p["versions"].append(dict(p["versions"][0])), "listed twice"),
    (lambda p: p["versions"][0].update(manifest_sha256="xyz"), "manifest_sha256"),
    (lambda p: p["versions"][0].update(version="../1"), "dotted number"),
    (lambda p: p.update(expires="next week"), "bad time"),
    (lambda p: p.update(format="other/1"), "format"),
])
def test_malformed_signed_payloads_are_refused(pair, change, match):
    key, pub = pair
    raw = sign_state([VersionRecord("1", SHA, True)], 1, key).raw
    with pytest.raises(StateRejected, match=match):
        parse_state(resign_payload(raw, key, change), pub)


def test_other_key_garbage_and_unsigned_edits_are_refused(pair, tmp_path):
    key, pub = pair
    raw = sign_state([VersionRecord("1", SHA, False)], 1, key).raw
    other = load_private_key(generate_keypair(tmp_path / "other")[0])
    with pytest.raises(StateRejected, match="does not verify"):
        parse_state(sign_state([VersionRecord("1", SHA, True)], 9, other).raw, pub)
    env = json.loads(raw)
    env["signed"] = env["signed"].replace('"promoted":false', '"promoted":true')
    with pytest.raises(StateRejected, match="does not verify"):
        parse_state(json.dumps(env).encode(), pub)
    for junk in (b"", b"[]", b"{}", b"\xff\xfe", json.dumps({"signed": 1, "signature": "x"}).encode()):
        with pytest.raises(StateRejected, match="not a signed edgedepth registry state"):
            parse_state(junk, pub)


def test_trust_store_persists_refuses_older_and_forgets_on_key_change(pair, tmp_path):
    key, pub = pair
    path = tmp_path / "trust.json"
    s1, s2 = (sign_state([VersionRecord("1", SHA, True)], n, key) for n in (1, 2))
    trust = TrustStore(path)
    trust.accept(s2)
    trust.accept(s2)  # the same state again is fine
    again = TrustStore(path)
    assert again.sequence == 2
    with pytest.raises(StateRejected, match="older than sequence 2"):
        again.accept(s1)
    again.bind_key("0123456789abcdef")  # a new public key starts a new history
    again.accept(s1)
    assert TrustStore(path).sequence == 1
    path.write_text("{not json")
    assert TrustStore(path).sequence == 0  # unreadable: logged, starts over rather than bricking updates
