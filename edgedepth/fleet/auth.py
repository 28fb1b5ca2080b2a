"""Device tokens for the ingest server.

`add_device(name)` makes a random 256-bit bearer token, returns it once and keeps only
SHA-256(salt || token), where the salt is random per database. A salted fast hash is enough here
because tokens are long random strings (not passwords), and it keeps a lookup per request cheap.
A lookup hashes the presented token, finds the row by that hash and compares the hashes in constant
time. Revoking sets `revoked_at`; the server reads the database on every request, so a revocation
takes effect on the next upload without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Dict, List, Optional, Union

from edgedepth.errors import ConfigError
from edgedepth.fleet.store.base import utc_now_iso

DEVICE_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # same rule as SpoolMeta.device_id
TOKEN_PREFIX = "edt_"
MAX_TOKEN_LEN = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
"""


def default_auth_db(store_uri: str, auth_db: Optional[str]) -> Path:
    """The device database: --auth-db if given, else STORE/devices.db for a local store."""
    if auth_db:
        return Path(auth_db).expanduser()
    uri = str(store_uri)
    if "://" in uri and not uri.startswith("file://"):
        raise ConfigError(f"--auth-db PATH is required with the store {uri} (only a local store "
                          f"keeps devices.db beside its items)")
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser() / "devices.db"


class DeviceRegistry:
    """SQLite table of devices and their token hashes."""

    def __init__(self, path: Union[str, Path], create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise ConfigError(f"no device database at {self.path}: add a device first "
                                  f"(edgedepth ingest add-device NAME)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(self.path), os.O_CREAT | os.O_WRONLY, 0o600)  # readable by the owner only
            os.close(fd)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = 'salt'").fetchone()
            if row is None:
                salt = secrets.token_hex(32)
                self._db.execute("INSERT OR IGNORE INTO settings VALUES ('salt', ?)", (salt,))
                row = self._db.execute("SELECT value FROM settings WHERE key = 'salt'").fetchone()
        self._salt = bytes.fromhex(row[0])

    def _hash(self, token: str) -> str:
        return hashlib.sha256(self._salt + token.encode("utf-8")).hexdigest()

    def add_device(self, name: str, replace: bool = False) -> str:
        """Register `name` and return its new token (shown once; only its hash is stored).

        An active device keeps its token unless `replace` is set; a revoked name can be added again.
        """
        if not DEVICE_NAME_RE.match(name or ""):
            raise ConfigError(f"bad device name {name!r}: 1-128 of A-Z a-z 0-9 _ . : -")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            row = self._db.execute("SELECT revoked_at FROM devices WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] is None and not replace:
                raise ConfigError(f"device {name!r} already has a token: pass --replace to issue a new one "
                                  f"(the old one stops working)")
            self._db.execute("INSERT OR REPLACE INTO devices (name, token_hash, created_at, revoked_at) "
                             "VALUES (?, ?, ?, NULL)", (name, self._hash(token), utc_now_iso()))
        return token

    def revoke_device(self, name: str) -> None:
        with self._lock:
            cur = self._db.execute("UPDATE devices SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                                   (utc_now_iso(), name))
            if cur.rowcount == 0:
                known = self._db.execute("SELECT 1 FROM devices WHERE name = ?", (name,)).fetchone()
                if known is None:
                    raise ConfigError(f"no device named {name!r} (see: edgedepth ingest list-devices)")

    def list_devices(self) -> List[Dict[str, Optional[str]]]:
        with self._lock:
            rows = self._db.execute("SELECT name, created_at, revoked_at FROM devices "
                                    "ORDER BY name").fetchall()
        return [{"name": n, "created_at": c, "revoked_at": r} for n, c, r in rows]

    def authenticate(self, token: Optional[str]) -> Optional[str]:
        """The device name for an active token, else None."""
        if not token or len(token) > MAX_TOKEN_LEN:
            return None
        wanted = self._hash(token)
        with self._lock:
            row = self._db.execute("SELECT name, token_hash FROM devices WHERE token_hash = ? "
                                   "AND revoked_at IS NULL", (wanted,)).fetchone()
        if row is None or not hmac.compare_digest(row[1], wanted):
            return None
        return row[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def bearer_token(header: Optional[str]) -> Optional[str]:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
