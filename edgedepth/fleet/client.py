"""HTTP(S) client for the ingest server's wire protocol (`POST /v1/items/{id}`).

Every call returns an `Outcome` with a `kind` the daemon acts on; nothing here retries or sleeps
except the bandwidth pacing of the body:
- stored / duplicate: a 200/201 whose JSON body names this item's id with `stored` or `duplicate` true
  -> confirmed, the local copy may go;
- unconfirmed: any other 2xx (an HTML page, a 204, JSON naming another id, `stored: false`): whatever
  answered is not an ingest server that took the item -> keep the data, back off;
- rejected: 400, 413, 415, 422 -> permanent, the item goes to failed/;
- device_mismatch: 403 `device_mismatch`: the item's device_id is not the token's device;
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
from typing import Callable, Iterator, Optional, Tuple

import httpx

from edgedepth import __version__
from edgedepth.errors import ConfigError
from edgedepth.fleet.ratelimit import TokenBucket
from edgedepth.fleet.wire import BODY_SHA_HEADER, CHUNK, CONTENT_TYPE, PreparedBody, iter_body

log = logging.getLogger("edgedepth.fleet.client")

STORED, DUPLICATE, REJECTED, AUTH, TRANSIENT = "stored", "duplicate", "rejected", "auth", "transient"
UNCONFIRMED, DEVICE_MISMATCH = "unconfirmed", "device_mismatch"
PERMANENT_STATUSES = (400, 413, 415, 422)
MAX_ANSWER_BYTES = 64 * 1024  # of a response body read; a bigger one is not the ingest server's answer


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


def _error_fields(resp: httpx.Response) -> Tuple[str, str]:
    """(machine-readable error, human text) of an error answer; the text is cut to 500 characters."""
    text = resp.text[:500] if resp.content else ""
    error = ""
    try:
        body = json.loads(resp.content or b"null")
        if isinstance(body, dict):
            error = str(body.get("error") or "")[:100]
            text = str(body.get("detail") or body.get("error") or body.get("reason") or text)[:500]
    except ValueError:
        pass
    return error, text


def _reason(resp: httpx.Response) -> str:
    return f"HTTP {resp.status_code}: {_error_fields(resp)[1]}".strip()


def _describe_unconfirmed(resp: httpx.Response, why: str) -> str:
    ctype = resp.headers.get("Content-Type", "no content type")
    return (f"unconfirmed answer HTTP {resp.status_code} ({ctype}, {len(resp.content)} B): {why}; is "
            "--server the ingest server?")


def confirm(resp: httpx.Response, item_id: str, sent: int = 0) -> Outcome:
    """A 2xx confirms delivery only with a JSON body naming `item_id` as stored or duplicate."""
    code = resp.status_code
    if code not in (200, 201):
        return Outcome(UNCONFIRMED, code, _describe_unconfirmed(resp, "not 200/201"), sent_bytes=sent)
    try:
        body = json.loads(resp.content)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return Outcome(UNCONFIRMED, code, _describe_unconfirmed(resp, "the body is not a JSON object"),
                       sent_bytes=sent)
    if body.get("id") != item_id:
        named = str(body.get("id"))[:80]
        return Outcome(UNCONFIRMED, code, _describe_unconfirmed(resp, f"it names item {named!r}, not "
                                                                      f"{item_id[:12]}..."), sent_bytes=sent)
    duplicate = body.get("duplicate") is True
    if body.get("stored") is not True and not duplicate:
        return Outcome(UNCONFIRMED, code, _describe_unconfirmed(resp, "it does not say stored or duplicate"),
                       sent_bytes=sent)
    return Outcome(DUPLICATE if duplicate else STORED, code, sent_bytes=sent)


def classify(resp: httpx.Response, item_id: str, sent: int = 0) -> Outcome:
    code = resp.status_code
    if 200 <= code < 300:
        return confirm(resp, item_id, sent)
    if code in PERMANENT_STATUSES:
        return Outcome(REJECTED, code, _reason(resp), sent_bytes=sent)
    if code in (401, 403):
        error, _ = _error_fields(resp)
        kind = DEVICE_MISMATCH if code == 403 and error == "device_mismatch" else AUTH
        return Outcome(kind, code, _reason(resp), sent_bytes=sent)
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
            with self._client.stream("POST", self._url(body.item_id), content=chunks(),
                                     headers=headers) as streamed:
                answer = bytearray()
                for part in streamed.iter_bytes():  # a real answer is a few hundred bytes: 64 KiB at most
                    answer += part[:MAX_ANSWER_BYTES - len(answer)]
                    if len(answer) >= MAX_ANSWER_BYTES:
                        break
                resp = httpx.Response(streamed.status_code, headers=streamed.headers, content=bytes(answer))
        except httpx.HTTPError as exc:
            return Outcome(TRANSIENT, None, f"{type(exc).__name__}: {exc}", sent_bytes=counter[0])
        return classify(resp, body.item_id, counter[0])
