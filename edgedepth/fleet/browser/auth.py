"""The data browser's own admin token (device upload tokens never open it).

The token is read from a file (`--admin-token-file`; `edgedepth dashboard --new-token` writes one).
A browser signs in once with it and then carries a session cookie derived from it:
HMAC-SHA256(token, "edgedepth-browser-session/1"), HttpOnly, SameSite=Strict, so changing the token ends
every session. Scripts may send `Authorization: Bearer <token>` instead. Every comparison is constant-time
(hmac.compare_digest of SHA-256 digests, so lengths leak nothing either).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Optional, Union

from edgedepth.errors import ConfigError
from edgedepth.fleet.auth import bearer_token

log = logging.getLogger(__name__)

COOKIE = "edgedepth_admin"
MIN_TOKEN_LEN = 16
MAX_TOKEN_LEN = 256
_SESSION_MSG = b"edgedepth-browser-session/1"


def new_token_file(path: Union[str, Path]) -> str:
    """Write a fresh random admin token to `path` (mode 0600, refused if it exists) and return it."""
    p = Path(path).expanduser()
    token = "eda_" + secrets.token_urlsafe(32)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(str(p), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{p} already exists; use it, or delete it to make a new admin token") from exc
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    return token


def read_token_file(path: Union[str, Path]) -> str:
    """The admin token in `path` (its first line); ConfigError when missing or too short."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
        mode = p.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the admin token file {p} ({exc}); make one with "
                          f"`edgedepth dashboard --new-token --admin-token-file {p} ...`") from exc
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not MIN_TOKEN_LEN <= len(token) <= MAX_TOKEN_LEN or any(c.isspace() for c in token):
        raise ConfigError(f"the admin token in {p} must be one line of {MIN_TOKEN_LEN}-{MAX_TOKEN_LEN} "
                          "characters without spaces (a long random string)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("admin token file %s is readable by other users; chmod 600 it", p)
    return token


class AdminAuth:
    """Checks the admin token (bearer header or session cookie) in constant time."""

    def __init__(self, token: str) -> None:
        if len(token) < MIN_TOKEN_LEN:
            raise ConfigError(f"the admin token must be at least {MIN_TOKEN_LEN} characters")
        self._token_digest = hashlib.sha256(token.encode("utf-8")).digest()
        self.session = hmac.new(token.encode("utf-8"), _SESSION_MSG, hashlib.sha256).hexdigest()
        self._session_digest = hashlib.sha256(self.session.encode()).digest()

    def check_token(self, presented: Optional[str]) -> bool:
        if not presented or len(presented) > MAX_TOKEN_LEN:
            return False
        return hmac.compare_digest(hashlib.sha256(presented.encode("utf-8")).digest(), self._token_digest)

    def check_session(self, cookie: Optional[str]) -> bool:
        if not cookie or len(cookie) > 128:
            return False
        return hmac.compare_digest(hashlib.sha256(cookie.encode("utf-8")).digest(), self._session_digest)

    def allowed(self, authorization: Optional[str], cookie: Optional[str]) -> bool:
        """Whether a request carries the admin token (header) or a session cookie made from it."""
        token = bearer_token(authorization)
        ok_header = self.check_token(token) if token is not None else False
        return ok_header or self.check_session(cookie)
