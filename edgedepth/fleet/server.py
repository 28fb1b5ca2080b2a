"""The ingest server: a Starlette ASGI app that accepts spool items from devices and stores them.

Wire protocol (the device side is edgedepth/fleet/client.py):
    POST /v1/items/{id}   body: flat tar of the item's files; headers Authorization: Bearer <token>,
                          Content-Type: application/x-tar, Content-Length, X-Edgedepth-Body-Sha256.
                          201 stored | 200 duplicate | 400 malformed | 401 bad token | 403 device_id in
                          the metadata is not the token's device | 408 body too slow | 411 no length |
                          413 too large | 415 not an image/array | 422 hash or size mismatch |
                          429 rate limited (Retry-After) | 503 store unavailable or busy (Retry-After)
    HEAD /v1/items/{id}   200 stored | 404 not stored (same auth)
    GET  /healthz         {"status": "ok"}
    GET  /metrics         Prometheus text

Requests refused before the body is read (400 bad id/headers, 401, 415, 429, 503 busy) drain a body
of at most the item limit first, so the client reads the answer instead of a reset connection; with
`Expect: 100-continue` the body is never sent. 411/413/408 answer at once and close the connection.
Starlette and uvicorn are imported only when an app is made (`server` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from edgedepth.errors import require
from edgedepth.fleet.auth import DeviceRegistry, bearer_token, default_auth_db
from edgedepth.fleet.ratelimit_server import DeviceRateLimiter
from edgedepth.fleet.store.base import Store, StoreUnavailable, utc_now_iso
from edgedepth.fleet.validate import UploadRejected, check_contents, parse_upload
from edgedepth.spool import ITEM_ID_RE

log = logging.getLogger("edgedepth.ingest")
BODY_SHA_HEADER = "x-edgedepth-body-sha256"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
RETRY_AFTER_UNAVAILABLE_S = 30


@dataclass
class IngestConfig:
    """Settings of one ingest server (the `edgedepth ingest serve` options)."""

    store: str
    endpoint_url: Optional[str] = None
    auth_db: Optional[str] = None
    max_item_bytes: int = 20 << 20
    rate_per_s: float = 10.0  # uploads per device per second (token bucket refill)
    burst: float = 30.0  # bucket size
    read_timeout_s: float = 30.0  # a body must arrive within read_timeout_s + length / min_rate
    min_upload_bytes_per_s: float = 8 << 10  # keep below the slowest device --max-bandwidth
    max_concurrent_uploads: int = 16  # bodies held in memory at once; more -> 503
    min_free_bytes: int = 256 << 20  # local store: keep this much disk free (else 503)
    server_name: Optional[str] = None  # S3 manifests: which server wrote them
    manifest_every_s: float = 60.0
    browser: Optional[object] = None  # a BrowserConfig: mount the data browser at /browse (own admin token)


class Metrics:
    """Counters rendered as Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Dict[Tuple[str, str, int], int] = defaultdict(int)
        self.rejects: Dict[str, int] = defaultdict(int)
        self.items_stored = 0
        self.duplicates = 0
        self.bytes_stored = 0
        self.body_bytes = 0
        self.upload_seconds = 0.0

    def request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejects[reason] += 1

    def stored(self, nbytes: int, duplicate: bool, body_bytes: int, seconds: float) -> None:
        with self._lock:
            if duplicate:
                self.duplicates += 1
            else:
                self.items_stored += 1
                self.bytes_stored += nbytes
            self.body_bytes += body_bytes
            self.upload_seconds += seconds

    def render(self) -> str:
        out = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("edgedepth_ingest_requests_total", "counter", "HTTP requests by method, route and status.")
            for (method, route, status), n in sorted(self.requests.items()):
                out.append(f'edgedepth_ingest_requests_total{{method="{method}",route="{route}",'
                           f'status="{status}"}} {n}')
            family("edgedepth_ingest_rejects_total", "counter", "Refused uploads by reason.")
            for reason, n in sorted(self.rejects.items()):
                out.append(f'edgedepth_ingest_rejects_total{{reason="{reason}"}} {n}')
            family("edgedepth_ingest_items_stored_total", "counter", "Items stored (new).")
            out.append(f"edgedepth_ingest_items_stored_total {self.items_stored}")
            family("edgedepth_ingest_duplicates_total", "counter", "Uploads of items already stored.")
            out.append(f"edgedepth_ingest_duplicates_total {self.duplicates}")
            family("edgedepth_ingest_bytes_stored_total", "counter", "Bytes of new items' files.")
            out.append(f"edgedepth_ingest_bytes_stored_total {self.bytes_stored}")
            family("edgedepth_ingest_upload_body_bytes_total", "counter", "Bytes of accepted upload bodies.")
            out.append(f"edgedepth_ingest_upload_body_bytes_total {self.body_bytes}")
            family("edgedepth_ingest_upload_seconds_total", "counter", "Time spent on accepted uploads.")
            out.append(f"edgedepth_ingest_upload_seconds_total {self.upload_seconds:.6f}")
        return "\n".join(out) + "\n"


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str, headers: Optional[Dict[str, str]] = None,
                 drain: bool = False, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.reason, self.headers, self.drain, self.close = status, reason, headers, drain, close


def create_app(config: IngestConfig, store: Optional[Store] = None,
               devices: Optional[DeviceRegistry] = None):
    """Build the Starlette app. `store`/`devices` default to the ones named by `config`."""
    require("starlette", "server")
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    if store is None:
        from edgedepth.fleet.store import open_store

        store = open_store(config.store, config.endpoint_url, min_free_bytes=config.min_free_bytes,
                           server_name=config.server_name, manifest_every_s=config.manifest_every_s,
                           adopt_orphans=True)
    if devices is None:
        devices = DeviceRegistry(default_auth_db(config.store, config.auth_db))
    limiter = DeviceRateLimiter(config.rate_per_s, max(1.0, config.burst))
    metrics = Metrics()
    uploads = asyncio.Semaphore(config.max_concurrent_uploads)

    def error(status: int, reason: str, message: str, headers: Optional[Dict[str, str]] = None):
        if status >= 400 and reason:
            metrics.reject(reason)
        return JSONResponse({"error": reason, "detail": message}, status_code=status, headers=headers)

    async def read_body(request: Request, length: int, keep: bool = True) -> bytes:
        """The whole body, within a deadline that grows with its length (slow clients get 408).

        keep=False reads and drops it (draining a refused request without holding its bytes).
        """
        deadline = config.read_timeout_s + length / max(1.0, config.min_upload_bytes_per_s)
        buf = bytearray()
        received = 0

        async def _read() -> None:
            nonlocal received
            async for chunk in request.stream():
                received += len(chunk)
                if received > length or received > config.max_item_bytes:
                    raise _Refused(413, "too_large", "body longer than its Content-Length", close=True)
                if keep:
                    buf.extend(chunk)

        try:
            await asyncio.wait_for(_read(), deadline)
        except asyncio.TimeoutError as exc:
            raise _Refused(408, "timeout", f"body not received within {deadline:.0f} s", close=True) from exc
        except ClientDisconnect as exc:
            raise _Refused(400, "disconnect", "client went away before sending the whole body") from exc
        if received != length:
            raise _Refused(400, "truncated", f"body has {received} bytes, Content-Length says {length}")
        return bytes(buf)

    async def drain(request: Request, length: int) -> bool:
        """Read and drop a refused request's body so the client sees the answer; False if not possible."""
        if request.headers.get("expect", "").lower() == "100-continue" or length > config.max_item_bytes:
            return False
        try:
            await read_body(request, length, keep=False)
            return True
        except _Refused:
            return False

    def check_headers(request: Request) -> Tuple[int, str]:
        if request.headers.get("content-length") is None:
            raise _Refused(411, "no_length", "Content-Length is required (no chunked uploads)", close=True)
        try:
            length = int(request.headers["content-length"])
        except ValueError as exc:
            raise _Refused(400, "bad_header", "Content-Length is not a number", close=True) from exc
        if length < 0 or length > config.max_item_bytes:
            raise _Refused(413, "too_large", f"item of {length} bytes is over the limit of "
                           f"{config.max_item_bytes} bytes", close=True)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-tar":
            raise _Refused(415, "content_type", f"Content-Type must be application/x-tar, not {ctype!r}",
                           drain=True)
        body_sha = request.headers.get(BODY_SHA_HEADER, "").strip().lower()
        if not _SHA_RE.match(body_sha):
            raise _Refused(400, "bad_header", "X-Edgedepth-Body-Sha256 (hex SHA-256 of the body) is required",
                           drain=True)
        return length, body_sha

    async def authenticate(request: Request) -> str:
        token = bearer_token(request.headers.get("authorization"))
        device = await run_in_threadpool(devices.authenticate, token)
        if device is None:
            raise _Refused(401, "auth", "unknown or revoked device token",
                           headers={"WWW-Authenticate": 'Bearer realm="edgedepth-ingest"'}, drain=True)
        return device

    async def post_item(request: Request, item_id: str) -> Response:
        started = time.monotonic()
        device = await authenticate(request)
        length, body_sha = check_headers(request)
        allowed, retry_after = limiter.take(device)
        if not allowed:
            raise _Refused(429, "rate_limited", f"device {device} is over {config.rate_per_s:g} uploads/s",
                           headers={"Retry-After": str(retry_after)}, drain=True)
        if uploads.locked():
            raise _Refused(503, "busy", "too many uploads in progress", headers={"Retry-After": "2"},
                           drain=True)
        async with uploads:
            body = await read_body(request, length)
            if hashlib.sha256(body).hexdigest() != body_sha:
                raise UploadRejected(422, "hash_mismatch", "body does not match X-Edgedepth-Body-Sha256")
            item = await run_in_threadpool(parse_upload, item_id, body, False)
            del body
            if item.meta.device_id != device:
                raise UploadRejected(403, "device_mismatch", f"metadata device_id {item.meta.device_id!r} "
                                     f"is not the token's device {device!r}")
            # Same id = same file hashes as the stored item, which passed the content checks then.
            stored = False
            if not await run_in_threadpool(store.has, item_id):
                await run_in_threadpool(check_contents, item)
                record = dict(item.meta_dict, received_at=utc_now_iso(), received_by=device)
                stored = await run_in_threadpool(store.put_item, item_id, item.files, record)
        nbytes = sum(len(d) for d in item.files.values())
        metrics.stored(nbytes, not stored, length, time.monotonic() - started)
        log.info("%s item %s from %s (%d bytes)", "stored" if stored else "duplicate", item_id[:12], device,
                 nbytes)
        return JSONResponse({"id": item_id, "stored": True, "duplicate": not stored},
                            status_code=201 if stored else 200)

    async def head_item(request: Request, item_id: str) -> Response:
        await authenticate(request)
        found = await run_in_threadpool(store.has, item_id)
        return Response(status_code=200 if found else 404)

    async def items(request: Request) -> Response:
        item_id = request.path_params["item_id"]
        method = request.method
        declared = request.headers.get("content-length", "")
        length = int(declared) if declared.isdigit() else 0
        try:
            if not ITEM_ID_RE.match(item_id):
                raise _Refused(400, "bad_id", f"bad item id {item_id[:80]!r}: expected 64 lowercase hex",
                               drain=method == "POST")
            return await (post_item(request, item_id) if method == "POST" else head_item(request, item_id))
        except _Refused as exc:
            headers = dict(exc.headers or {})
            if method == "POST" and (exc.close or (exc.drain and not await drain(request, length))):
                headers["Connection"] = "close"
            log.warning("refused %s %s: %s %s", method, item_id[:12], exc.status, exc)
            return error(exc.status, exc.reason, str(exc), headers)
        except UploadRejected as exc:
            log.warning("refused %s %s: %s %s", method, item_id[:12], exc.status, exc)
            return error(exc.status, exc.reason, str(exc))
        except StoreUnavailable as exc:
            log.error("store unavailable: %s", exc)
            return error(503, "unavailable", str(exc), {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        log.info("ingest server: store %s, device db %s", store.describe(), devices.path)
        try:
            yield
        finally:
            await run_in_threadpool(store.close)
            devices.close()

    routes = [
        Route("/v1/items/{item_id:path}", items, methods=["POST", "HEAD"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    if config.browser is not None:  # the read-only data browser (edgedepth.fleet.browser)
        from starlette.routing import Mount

        from edgedepth.fleet.browser.app import create_browser_app

        routes.append(Mount("/browse", app=create_browser_app(config.browser, store=store)))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.store = store
    app.state.devices = devices
    app.state.metrics = metrics
    return _CountRequests(app, metrics)


class _CountRequests:
    """ASGI middleware: counts every response by method, route and status for /metrics."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.state = app.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = "/v1/items" if path.startswith("/v1/items/") else (
            path if path in ("/healthz", "/metrics") else "other")
        seen = {"status": 500}

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.request(scope.get("method", "?"), route, seen["status"])


def serve(config: IngestConfig, host: str = "127.0.0.1", port: int = 8080, certfile: Optional[str] = None,
          keyfile: Optional[str] = None, log_level: str = "info") -> None:
    """Run the app under uvicorn (HTTPS when a certificate and key are given) until stopped."""
    uvicorn = require("uvicorn", "server")
    app = create_app(config)
    uvicorn.run(app, host=host, port=port, ssl_certfile=certfile, ssl_keyfile=keyfile, log_level=log_level,
                timeout_keep_alive=30, timeout_graceful_shutdown=10, server_header=False,
                h11_max_incomplete_event_size=64 << 10)
