"""HTTP(S) client for the ingest server's wire protocol (`POST`/`HEAD /v1/items/{id}`).

Every call returns an `Outcome` with a `kind` the daemon acts on; nothing here retries or sleeps
except the bandwidth pacing of the body:
- stored / duplicate: the server has the item (2xx) -> the local copy may go;
- rejected: 400, 413, 415, 422 -> permanent, the item goes to failed/;
- auth: 401/403 -> an operator problem: keep the data, back off, log loudly;
- transient: connection errors, timeouts, 429 (Retry-After), 5xx and anything unexpected.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import httpx

from edgedepth import __version__
from edgedepth.errors import ConfigError
from edgedepth.fleet.ratelimit import TokenBucket
from edgedepth.fleet.wire import BODY_SHA_HEADER, CHUNK, CONTENT_TYPE, PreparedBody, iter_body

log = logging.getLogger("edgedepth.fleet.client")

STORED, DUPLICATE, REJECTED, AUTH, TRANSIENT = "stored", "duplicate", "rejected", "auth", "transient"
PRESENT, ABSENT = "present", "absent"  # answers of has()
PERMANENT_STATUSES = (400, 413, 415, 422)


@dataclass
class Outcome:
    kind: str
    status: Optional[int] = None  # HTTP status, None when no response came back
    reason: str = ""
    retry_after: Optional[float] = None
    sent_bytes: int = 0

    @property
    def delivered(self) -> bool:
        return self.kind in (STORED, DUPLICATE)


def _retry_after(resp: httpx.Response) -> Optional[float]:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare, the daemon's own back-off applies


def _reason(resp: httpx.Response) -> str:
    text = resp.text[:500] if resp.content else ""
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            text = str(body.get("error") or body.get("detail") or body.get("reason") or text)
    except ValueError:
        pass
    return f"HTTP {resp.status_code}: {text}".strip()


def classify(resp: httpx.Response, sent: int = 0) -> Outcome:
    code = resp.status_code
    if code in (200, 201):
        dup = False
        try:
            dup = bool(resp.json().get("duplicate")) or code == 200
        except ValueError:
            dup = code == 200
        return Outcome(DUPLICATE if dup else STORED, code, sent_bytes=sent)
    if 200 <= code < 300:
        return Outcome(STORED, code, sent_bytes=sent)
    if code in PERMANENT_STATUSES:
        return Outcome(REJECTED, code, _reason(resp), sent_bytes=sent)
    if code in (401, 403):
        return Outcome(AUTH, code, _reason(resp), sent_bytes=sent)
    return Outcome(TRANSIENT, code, _reason(resp), _retry_after(resp), sent_bytes=sent)


class UploadClient:
    """One keep-alive connection to the ingest server; `limiter` paces request bodies."""

    def __init__(self, server: str, token: str, ca_cert: Optional[str] = None, timeout: float = 60.0,
                 limiter: Optional[TokenBucket] = None):
        if not server.startswith(("http://", "https://")):
            raise ConfigError(f"--server must be an http:// or https:// URL, got {server!r}")
        if not token:
            raise ConfigError("no upload token: pass --token-file FILE or set EDGEDEPTH_TOKEN")
        verify: object = True
        if ca_cert:
            if not Path(ca_cert).is_file():
                raise ConfigError(f"--ca-cert {ca_cert} does not exist")
            verify = ssl.create_default_context(cafile=str(ca_cert))
        self.base = server.rstrip("/")
        self.limiter = limiter
        # TCP_NODELAY: headers and body chunks go out as separate writes; without it Nagle's algorithm
        # and the peer's delayed ACK add ~40 ms to every request on a fast link.
        transport = httpx.HTTPTransport(verify=verify, retries=0,
                                        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                                        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"edgedepth-upload/{__version__}"},
        )

    def close(self) -> None:
        self._client.close()

    def _url(self, item_id: str) -> str:
        return f"{self.base}/v1/items/{item_id}"

    def has(self, item_id: str) -> Outcome:
        """HEAD: kind PRESENT (the server has the item), ABSENT (404), or AUTH / TRANSIENT on errors."""
        try:
            resp = self._client.head(self._url(item_id))
        except httpx.HTTPError as exc:
            return Outcome(TRANSIENT, None, f"HEAD failed: {type(exc).__name__}: {exc}")
        if resp.status_code == 200:
            return Outcome(PRESENT, 200)
        if resp.status_code == 404:
            return Outcome(ABSENT, 404)
        out = classify(resp)
        if out.kind in (STORED, DUPLICATE, REJECTED):  # unexpected answers to HEAD: try again later
            out = Outcome(TRANSIENT, resp.status_code, f"unexpected HEAD answer: {_reason(resp)}")
        return out

    def upload(self, body: PreparedBody, on_sent: Optional[Callable[[int], None]] = None) -> Outcome:
        """POST one prepared item, streaming its files from disk at the limiter's pace."""
        counter = [0]

        def chunks() -> Iterator[bytes]:
            size = self.limiter.chunk_size(CHUNK) if self.limiter else CHUNK
            for chunk in iter_body(body.members, size):
                if self.limiter is not None:
                    self.limiter.consume(len(chunk))
                counter[0] += len(chunk)
                if on_sent is not None:
                    on_sent(len(chunk))
                yield chunk

        headers = {
            "Content-Type": CONTENT_TYPE,
            "Content-Length": str(body.length),
            BODY_SHA_HEADER: body.sha256,
        }
        try:
            resp = self._client.post(self._url(body.item_id), content=chunks(), headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(TRANSIENT, None, f"{type(exc).__name__}: {exc}", sent_bytes=counter[0])
        return classify(resp, counter[0])
