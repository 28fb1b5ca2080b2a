"""The ingest server: a Starlette ASGI app that accepts spool items from devices and stores them.

Wire protocol (the device side is edgedepth/fleet/client.py):
    POST /v1/items/{id}   body: flat tar of the item's files; headers Authorization: Bearer <token>,
                          Content-Type: application/x-tar, Content-Length, X-Edgedepth-Body-Sha256.
                          201 stored | 200 duplicate | 400 malformed | 401 bad token | 403 device_id in
                          the metadata is not the token's device | 408 body too slow | 411 no length |
                          413 too large | 415 not an image/array | 422 hash or size mismatch |
                          429 rate limited or too many uploads of this device at once (Retry-After) |
                          503 store unavailable or busy (Retry-After)
    HEAD /v1/items/{id}   200 stored by the caller's device | 404 not stored, or another device's
    GET  /healthz         {"status": "ok"}
    GET  /metrics         Prometheus text

Requests refused before the body is read (400 bad id/headers, 401, 415, 429, 503 busy) drain a body
of at most the item limit first, so the client reads the answer instead of a reset connection; with
`Expect: 100-continue` the body is never sent (a drain lasts at most `drain_timeout_s`).
411/413/408 answer at once and close the connection.

Slow and hostile clients (the defences are described in docs/fleet-security.md):
- a body must advance by `min_upload_bytes_per_s * read_timeout_s` bytes in every window of
  `read_timeout_s` seconds (a sliding window, not one total deadline), else 408 and the connection closes;
- one device may send `max_uploads_per_device` bodies at once (more: 429), the server
  `max_concurrent_uploads` (more: 503), and the bytes of all bodies held in memory are capped at
  `body_memory_bytes` (counted as they arrive, so a slow client holds no budget it has not used);
- the request head must arrive within `header_timeout_s` of its first byte (of the connection's start
  for a new connection), idle keep-alive connections close after `keep_alive_s`, and uvicorn answers
  503 beyond `max_connections` connections (`serve`; the limits live in edgedepth.fleet.ratelimit_server);
- images are checked by header against the largest frame and their kind before decoding, and only
  `max_decodes` decode at once (edgedepth.fleet.validate).
Starlette and uvicorn are imported only when an app is made (`server` extra).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edgedepth.errors import DataError, require
from edgedepth.fleet.auth import DeviceRegistry, bearer_token, default_auth_db
from edgedepth.fleet.ratelimit_server import Busy, DeviceRateLimiter, UploadSlots, guarded_h11_protocol
from edgedepth.fleet.store.base import Store, StoreUnavailable, utc_now_iso
from edgedepth.fleet.validate import (
    DEFAULT_MAX_FRAME,
    IMAGES_PER_ITEM,
    Limits,
    UploadRejected,
    check_contents,
    parse_upload,
    set_decode_slots,
)
from edgedepth.metrics_http import registry_of, text_of
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
    read_timeout_s: float = 10.0  # the sliding window over which min_upload_bytes_per_s is enforced
    min_upload_bytes_per_s: float = 8 << 10  # keep below the slowest device --max-bandwidth
    max_concurrent_uploads: int = 64  # bodies being received at once; more -> 503
    max_uploads_per_device: int = 2  # bodies one device may send at once; more -> 429
    body_memory_bytes: int = 128 << 20  # body bytes held in memory by all uploads together; more -> 503
    drain_timeout_s: float = 10.0  # longest a refused request's body is read to send the answer
    max_frame: Tuple[int, int] = DEFAULT_MAX_FRAME  # largest image accepted, width x height
    max_item_pixels: Optional[int] = None  # pixels of all images of one item; None: 8 largest frames
    max_decodes: int = 2  # images decoded at once
    header_timeout_s: float = 10.0  # request head must arrive within this (slow headers: closed)
    keep_alive_s: float = 15.0  # idle keep-alive connections are closed after this
    max_connections: int = 256  # uvicorn's limit_concurrency: beyond it requests get 503
    min_free_bytes: int = 256 << 20  # local store: keep this much disk free (else 503)
    server_name: Optional[str] = None  # S3 manifests: which server wrote them
    manifest_every_s: float = 60.0
    browser: Optional[object] = None  # a BrowserConfig: mount the data browser at /browse (own admin token)


class Metrics:
    """The ingest server's counters, exposed with prometheus_client (edgedepth.metrics_http)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.uploads_in_flight = 0
        self.body_bytes_held = 0
        self.requests: Dict[Tuple[str, str, int], int] = defaultdict(int)
        self.rejects: Dict[str, int] = defaultdict(int)
        self.items_stored = 0
        self.duplicates = 0
        self.bytes_stored = 0
        self.body_bytes = 0
        self.upload_seconds = 0.0
        self._registry = registry_of(self.families)

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

    def families(self) -> Iterator[Metric]:
        """The counters as Prometheus metric families (served through edgedepth.metrics_http)."""
        with self._lock:
            requests = CounterMetricFamily("edgedepth_ingest_requests", "HTTP requests by method, route and "
                                           "status.", labels=["method", "route", "status"])
            for (method, route, status), n in sorted(self.requests.items()):
                requests.add_metric([method, route, str(status)], n)
            rejects = CounterMetricFamily("edgedepth_ingest_rejects", "Refused uploads by reason.",
                                          labels=["reason"])
            for reason, n in sorted(self.rejects.items()):
                rejects.add_metric([reason], n)
            yield requests
            yield rejects
            for name, help_text, value in (
                ("items_stored", "Items stored (new).", self.items_stored),
                ("duplicates", "Uploads of items already stored.", self.duplicates),
                ("bytes_stored", "Bytes of new items' files.", self.bytes_stored),
                ("upload_body_bytes", "Bytes of accepted upload bodies.", self.body_bytes),
                ("upload_seconds", "Time spent on accepted uploads.", self.upload_seconds),
            ):
                yield CounterMetricFamily(f"edgedepth_ingest_{name}", help_text, value=value)
            yield GaugeMetricFamily("edgedepth_ingest_uploads_in_flight", "Upload bodies being received now.",
                                    value=self.uploads_in_flight)
            yield GaugeMetricFamily("edgedepth_ingest_body_bytes_held",
                                    "Upload body bytes held in memory now.", value=self.body_bytes_held)

    def render(self) -> str:
        return text_of(self._registry)


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
    frame_w, frame_h = config.max_frame
    limits = Limits(max_width=frame_w, max_height=frame_h,
                    max_item_pixels=config.max_item_pixels or IMAGES_PER_ITEM * frame_w * frame_h)
    set_decode_slots(config.max_decodes)
    uploads = UploadSlots(config.max_concurrent_uploads, config.max_uploads_per_device,
                          config.body_memory_bytes, metrics)
    window = max(0.1, config.read_timeout_s)
    window_bytes = max(1, int(config.min_upload_bytes_per_s * window))

    def error(status: int, reason: str, message: str, headers: Optional[Dict[str, str]] = None):
        if status >= 400 and reason:
            metrics.reject(reason)
        return JSONResponse({"error": reason, "detail": message}, status_code=status, headers=headers)

    async def read_body(request: Request, length: int, keep: bool = True,
                        deadline_s: Optional[float] = None) -> bytes:
        """The whole body, which must advance by `window_bytes` in every `window` seconds (else 408).

        keep=False reads and drops it (draining a refused request without holding its bytes); then
        `deadline_s` bounds the whole read. Kept bytes are charged to the memory budget as they arrive.
        """
        chunks = []
        received = 0
        start = time.monotonic()
        samples = collections.deque([(start, 0)])  # (time, bytes received by then), oldest first
        tick = window / 4
        try:
            while received < length:
                now = time.monotonic()
                if deadline_s is not None and now - start > deadline_s:
                    raise _Refused(408, "timeout", f"body not drained within {deadline_s:g} s", close=True)
                while len(samples) > 1 and samples[1][0] <= now - window:
                    samples.popleft()
                if now - start >= window and received - samples[0][1] < window_bytes:
                    raise _Refused(408, "timeout", f"body slower than {window_bytes} bytes in {window:g} s "
                                   f"({received} of {length} bytes received)", close=True)
                try:
                    message = await asyncio.wait_for(request.receive(), tick)
                except asyncio.TimeoutError:
                    continue
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > length or received > config.max_item_bytes:
                    raise _Refused(413, "too_large", "body longer than its Content-Length", close=True)
                if chunk:
                    samples.append((time.monotonic(), received))
                    if keep:
                        uploads.charge(request, len(chunk))
                        chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except ClientDisconnect as exc:
            raise _Refused(400, "disconnect", "client went away before sending the whole body") from exc
        if received != length:
            raise _Refused(400, "truncated", f"body has {received} bytes, Content-Length says {length}")
        return b"".join(chunks)

    async def drain(request: Request, length: int) -> bool:
        """Read and drop a refused request's body so the client sees the answer; False if not possible."""
        if request.headers.get("expect", "").lower() == "100-continue" or length > config.max_item_bytes:
            return False
        try:
            await read_body(request, length, keep=False, deadline_s=config.drain_timeout_s)
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
        with uploads.slot(request, device):
            body = await read_body(request, length)
            if hashlib.sha256(body).hexdigest() != body_sha:
                raise UploadRejected(422, "hash_mismatch", "body does not match X-Edgedepth-Body-Sha256")
            item = await run_in_threadpool(parse_upload, item_id, body, False, limits)
            del body
            if item.meta.device_id != device:
                raise UploadRejected(403, "device_mismatch", f"metadata device_id {item.meta.device_id!r} "
                                     f"is not the token's device {device!r}")
            # Same id = same file hashes as the stored item, which passed the content checks then.
            stored = False
            if not await run_in_threadpool(store.has, item_id):
                await run_in_threadpool(check_contents, item, limits)
                record = dict(item.meta_dict, received_at=utc_now_iso(), received_by=device)
                try:
                    stored = await run_in_threadpool(store.put_item, item_id, item.files, record)
                except DataError as exc:
                    raise UploadRejected(400, "bad_meta", str(exc)) from exc
        nbytes = sum(len(d) for d in item.files.values())
        metrics.stored(nbytes, not stored, length, time.monotonic() - started)
        log.info("%s item %s from %s (%d bytes)", "stored" if stored else "duplicate", item_id[:12], device,
                 nbytes)
        return JSONResponse({"id": item_id, "stored": True, "duplicate": not stored},
                            status_code=201 if stored else 200)

    def owned_by(item_id: str, device: str) -> bool:
        if not store.has(item_id):
            return False
        try:
            meta = store.get_meta(item_id)
        except DataError:
            return False
        return device in (meta.get("received_by"), meta.get("device_id"))

    async def head_item(request: Request, item_id: str) -> Response:
        device = await authenticate(request)
        found = await run_in_threadpool(owned_by, item_id, device)
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
        except Busy as exc:
            headers = {"Retry-After": str(exc.retry_after)}
            if exc.close:
                headers["Connection"] = "close"
            elif method == "POST" and not await drain(request, length):
                headers["Connection"] = "close"
            log.warning("refused %s %s: %s %s", method, item_id[:12], exc.status, exc)
            return error(exc.status, exc.reason, str(exc), headers)
        except StoreUnavailable as exc:
            log.error("store unavailable: %s", exc)
            return error(503, "unavailable", str(exc), {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

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
    metrics = app.state.metrics
    protocol = guarded_h11_protocol(config.header_timeout_s,
                                    on_timeout=lambda: metrics.reject("head_timeout"))
    uvicorn.run(app, host=host, port=port, ssl_certfile=certfile, ssl_keyfile=keyfile, log_level=log_level,
                http=protocol, limit_concurrency=config.max_connections,
                timeout_keep_alive=max(1, int(round(config.keep_alive_s))), timeout_graceful_shutdown=10,
                server_header=False, h11_max_incomplete_event_size=16 << 10)
