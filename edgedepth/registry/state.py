"""REGISTRY/state.json: the signed state of a registry, and the device's memory of the newest one seen.

index.json is informational (metrics, notes, model details) and unsigned; what a device installs is
decided by state.json alone. Its layout::

    {"format": "edgedepth-registry-state/1",
     "key_id": "<16 hex digits>",
     "signature": "<base64 Ed25519 signature over the UTF-8 bytes of the 'signed' string>",
     "signed": "<JSON text of the payload below>"}

    payload = {"format": "edgedepth-registry-state/1", "sequence": 12,
               "issued_at": "2026-12-06T21:00:00Z", "expires": "2026-12-13T21:00:00Z", "key_id": "...",
               "versions": [{"version": "3", "manifest_sha256": "...", "promoted": true}, ...]}

The payload is embedded as a string so the signature covers exact bytes (no canonical-JSON rules to get
wrong). Every publish, promotion, withdrawal and re-signing writes a new state with `sequence` one
higher. A device accepts a state only when the signature verifies with its public key, it has not
expired, and its sequence is not lower than the highest it has accepted before (kept on disk by
TrustStore); the same sequence is accepted only with the same bytes. Each version's manifest SHA-256
ties the state to the signed manifest, which lists every file's SHA-256 and size.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgedepth.errors import ConfigError
from edgedepth.fsutil import write_bytes_atomic
from edgedepth.registry.index import RegistryError, check_version, version_key
from edgedepth.registry.keys import key_id

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
STATE = "state.json"
STATE_FORMAT = "edgedepth-registry-state/1"
DEFAULT_EXPIRES_S = 7 * 86400.0
MAX_STATE_BYTES = 8 << 20  # ~50,000 versions; a larger state.json is refused unread
_SHA256_HEX = frozenset("0123456789abcdef")


class StateRejected(RegistryError):
    """The registry's signed state is forged, modified, expired or older than one already accepted."""


def format_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_time(text: str, source: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, TypeError) as exc:
        raise StateRejected(f"{source}: bad time {text!r} (expected YYYY-MM-DDTHH:MM:SSZ)") from exc


@dataclass(frozen=True)
class VersionRecord:
    version: str
    manifest_sha256: str
    promoted: bool = False

    def to_json(self) -> Dict[str, Any]:
        return {"version": self.version, "manifest_sha256": self.manifest_sha256, "promoted": self.promoted}


@dataclass(frozen=True)
class SignedState:
    """A verified registry state (built only by parse_state / sign_state)."""

    sequence: int
    issued_at: str
    expires: str
    key_id: str
    versions: Tuple[VersionRecord, ...]
    sha256: str = ""  # of the whole state.json bytes
    raw: bytes = field(default=b"", repr=False)

    @property
    def expires_ts(self) -> float:
        return parse_time(self.expires, STATE)

    def entry(self, version: str) -> Optional[VersionRecord]:
        v = check_version(version)
        return next((r for r in self.versions if r.version == v), None)

    def promoted(self) -> List[VersionRecord]:
        """Promoted versions, newest first."""
        return sorted((r for r in self.versions if r.promoted), key=lambda r: version_key(r.version),
                      reverse=True)

    @property
    def latest_promoted(self) -> Optional[str]:
        top = self.promoted()
        return top[0].version if top else None


def sign_state(versions: List[VersionRecord], sequence: int, private_key: Ed25519PrivateKey,
               expires_s: float = DEFAULT_EXPIRES_S, now: Optional[float] = None) -> SignedState:
    """A new signed state (its state.json bytes in `.raw`)."""
    if expires_s <= 0:
        raise RegistryError(f"expiry {expires_s} s must be positive")
    now = time.time() if now is None else float(now)
    kid = key_id(private_key)
    records = sorted(versions, key=lambda r: version_key(r.version))
    payload = {"format": STATE_FORMAT, "sequence": int(sequence), "issued_at": format_time(now),
               "expires": format_time(now + expires_s), "key_id": kid,
               "versions": [r.to_json() for r in records]}
    signed = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    sig = private_key.sign(signed.encode("utf-8"))
    envelope = {"format": STATE_FORMAT, "key_id": kid, "signature": base64.b64encode(sig).decode("ascii"),
                "signed": signed}
    raw = (json.dumps(envelope, sort_keys=True, indent=2) + "\n").encode("utf-8")
    return SignedState(int(sequence), payload["issued_at"], payload["expires"], kid, tuple(records),
                       hashlib.sha256(raw).hexdigest(), raw)


def parse_state(data: bytes, public_key: Ed25519PublicKey, source: str = STATE) -> SignedState:
    """Verify a state.json's signature and structure (not its freshness: see check_fresh / TrustStore)."""
    if len(data) > MAX_STATE_BYTES:
        raise StateRejected(f"{source} is {len(data)} bytes, more than the {MAX_STATE_BYTES} allowed")
    try:
        envelope = json.loads(data.decode("utf-8"))
        signed, sig_text = envelope["signed"], envelope["signature"]
        if not isinstance(signed, str) or not isinstance(sig_text, str):
            raise TypeError("'signed' and 'signature' must be strings")
        sig = base64.b64decode(sig_text, validate=True)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise StateRejected(f"{source} is not a signed edgedepth registry state ({exc}); it was modified "
                            "or written by something else: re-sign it with `edgedepth publish --resign`"
                            ) from None
    try:
        public_key.verify(sig, signed.encode("utf-8"))
    except InvalidSignature:
        raise StateRejected(
            f"{source}: the signature does not verify against public key {key_id(public_key)}: the state "
            "was modified on the registry or signed with another key; refusing it (check the device's public "
            "key, or re-sign the registry with `edgedepth publish --resign`)") from None
    try:
        payload = json.loads(signed)
        if payload.get("format") != STATE_FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, expected {STATE_FORMAT}")
        sequence = payload["sequence"]
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
            raise ValueError(f"sequence {sequence!r} is not a positive integer")
        records = []
        for e in payload["versions"]:
            sha = str(e["manifest_sha256"])
            if len(sha) != 64 or not set(sha) <= _SHA256_HEX:
                raise ValueError(f"version {e.get('version')!r} has a bad manifest_sha256")
            records.append(VersionRecord(check_version(e["version"]), sha, bool(e.get("promoted", False))))
        if len({r.version for r in records}) != len(records):
            raise ValueError("a version is listed twice")
        parse_time(payload["issued_at"], source)
        parse_time(payload["expires"], source)
    except (ValueError, KeyError, TypeError, AttributeError, RegistryError, ConfigError) as exc:
        raise StateRejected(f"{source}: signed state is malformed ({exc}); re-sign it") from None
    records.sort(key=lambda r: version_key(r.version))
    return SignedState(sequence, payload["issued_at"], payload["expires"], str(payload.get("key_id", "")),
                       tuple(records), hashlib.sha256(data).hexdigest(), bytes(data))


def check_fresh(state: SignedState, now: Optional[float] = None, source: str = STATE) -> None:
    """Refuse an expired state (a registry frozen in time, by an attacker or by nobody re-signing it)."""
    now = time.time() if now is None else float(now)
    if now >= state.expires_ts:
        raise StateRejected(
            f"{source} (sequence {state.sequence}) expired at {state.expires}; the device clock says "
            f"{format_time(now)}. Either nobody re-signed the registry in time (run `edgedepth publish "
            "--registry R --key K --resign` on the publishing machine) or an old state is being replayed; "
            "no update is installed until a fresh one arrives")


class TrustStore:
    """The highest registry state a device has accepted: sequence, hash, promoted version (on disk).

    Written atomically, so a power cut leaves the old or the new record. Without a path the record
    lives in memory only (one client object).
    """

    def __init__(self, path: Optional[PathLike] = None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self.record: Dict[str, Any] = self._load()

    def bind_key(self, kid: str) -> None:
        """Forget the record when the device now trusts another key: a new key pair starts a new history.

        This is the recovery from a leaked key that signed a state with a huge sequence number (a
        fast-forward): install the new public key, and the sequence count starts over with it.
        """
        with self._lock:
            if self.record and self.record.get("key_id") not in (None, kid):
                log.warning("the registry public key changed (%s -> %s): the highest state sequence seen "
                            "(%d) belonged to the old key and is forgotten", self.record.get("key_id"), kid,
                            self.sequence)
                self.record = {}

    def _load(self) -> Dict[str, Any]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            rec = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(rec, dict) and isinstance(rec.get("sequence"), int):
                return rec
            raise ValueError("no integer 'sequence'")
        except (OSError, ValueError) as exc:
            # Refusing every state would brick updates for good; start over and say so loudly.
            log.error("registry trust record %s is unreadable (%s); accepting the next valid state as new",
                      self.path, exc)
            return {}

    @property
    def sequence(self) -> int:
        return int(self.record.get("sequence", 0))

    def check(self, state: SignedState, source: str = STATE) -> None:
        """Refuse a state older than (or different at the same sequence as) the one accepted before."""
        seen = self.sequence
        if state.sequence < seen:
            raise StateRejected(
                f"{source}: sequence {state.sequence} is older than sequence {seen} this device already "
                f"accepted (promoted then: {self.record.get('latest_promoted')}); an old signed state is "
                "being replayed (rollback): refusing it")
        if state.sequence == seen and self.record.get("sha256") not in (None, state.sha256):
            raise StateRejected(
                f"{source}: a different state carries sequence {seen}, which this device already accepted; "
                "two states were signed with one sequence number (two publishers at once, or a leaked "
                "key): refusing it until a higher sequence is published")

    def accept(self, state: SignedState, now: Optional[float] = None) -> None:
        """check() then remember `state` as the newest (atomically, durably)."""
        with self._lock:
            self.check(state)
            if state.sequence == self.sequence and self.record.get("sha256") == state.sha256:
                return
            before = self.record.get("latest_promoted")
            if before and state.latest_promoted and \
                    version_key(state.latest_promoted) < version_key(before):
                log.warning("the registry withdrew version %s: the newest promoted version is now %s "
                            "(a device never installs an older version than it runs)",
                            before, state.latest_promoted)
            self.record = {"sequence": state.sequence, "sha256": state.sha256, "expires": state.expires,
                           "key_id": state.key_id,
                           "latest_promoted": state.latest_promoted,
                           "accepted_at": format_time(time.time() if now is None else now)}
            if self.path is not None:
                write_bytes_atomic(self.path, (json.dumps(self.record, indent=2, sort_keys=True) + "\n")
                                   .encode("utf-8"))
