"""The data browser: read-only, server-rendered HTML pages over the ingest store (Starlette + Jinja2).

Pages (relative to where it is mounted, /browse by default):
    /                 frames: thumbnails (RGB, depth, prediction, uncertainty), scores, filters, sorting
    /frame/{id}       one frame: larger images, depth figures in metres, every metadata field
    /img/{id}/{name}  a file of a frame as a JPEG thumbnail (?w=96|160|320|640), cached
    /devices          uploads per device: counts and bytes over time
    /rounds           rounds built from the store: datasets, gate tables, versions trained on them
    /models           registry versions: promoted or not, gate verdicts
    /login, /logout   the admin token -> a session cookie
Everything but /login and /style.css needs the admin token (see edgedepth.fleet.browser.auth).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlencode

from edgedepth.errors import ConfigError, DataError, require
from edgedepth.fleet.browser.auth import COOKIE, AdminAuth, read_token_file
from edgedepth.fleet.browser.catalog import SORTS, TEXT_FILTERS, Catalog, FrameQuery, decode_cursor
from edgedepth.fleet.browser.history import History
from edgedepth.fleet.browser.images import (
    DEPTH_CMAP,
    UNC_CMAP,
    WIDTHS,
    ThumbnailCache,
    depth_stats,
    depth_ticks,
    gradient_stops,
    placeholder,
    render,
    scalar_stats,
)

log = logging.getLogger("edgedepth.browser")
TEMPLATES = Path(__file__).resolve().parent / "templates"
PAGE_SIZES = (24, 48, 96)
ICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
        b'fill="#1f232a"/><path d="M2 13 L8 3 L14 13 Z" fill="#f28e2b"/></svg>')
MAX_LOGIN_BODY = 4096
LOGIN_FAIL_DELAY_S = 0.3
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass
class BrowserConfig:
    """Settings of the data browser (the `edgedepth dashboard` / `ingest serve` options)."""

    store: str
    admin_token_file: str
    rounds_dir: Optional[str] = None
    registry: Optional[str] = None
    endpoint_url: Optional[str] = None
    catalog_db: Optional[str] = None  # default STORE/browse.db for a local store
    depth_range: Tuple[float, float] = (0.5, 20.0)  # metres: the colour scale of every depth preview
    thumb_cache_bytes: int = 64 << 20
    refresh_s: float = 2.0


def default_catalog_db(store_uri: str, catalog_db: Optional[str]) -> Path:
    if catalog_db:
        return Path(catalog_db).expanduser()
    uri = str(store_uri)
    if "://" in uri and not uri.startswith("file://"):
        raise ConfigError(f"--catalog-db PATH is required with the store {uri} (the browser keeps its "
                          "query tables in a local SQLite file)")
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser() / "browse.db"


def parse_depth_range(text: str) -> Tuple[float, float]:
    try:
        near, far = (float(x) for x in str(text).split(","))
    except ValueError as exc:
        raise ConfigError(f"--depth-range {text!r}: give NEAR,FAR in metres, e.g. 0.5,20") from exc
    if not (0 < near < far and math.isfinite(far)):
        raise ConfigError(f"--depth-range {text!r}: need 0 < NEAR < FAR")
    return near, far


def _human_bytes(n: Any) -> str:
    x = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(x) < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} TiB"


def _part(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return ""
    if v < 0 or not math.isfinite(v):
        return "–"
    return f"{v:.3g}"


def _when(text: Any) -> str:
    t = str(text or "")
    return t[:19].replace("T", " ") if len(t) >= 19 else t


def _environment():
    jinja2 = require("jinja2", "server")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(bytes=_human_bytes, part=_part, when=_when,
                       pretty=lambda v: json.dumps(v, indent=1, sort_keys=True, default=str))
    return env


def _parse_query(params) -> Tuple[FrameQuery, Dict[str, str]]:
    """The frames list query from the URL; DataError on a bad value. Also the kept filter params."""
    keep: Dict[str, str] = {}
    q = FrameQuery()
    sort = params.get("sort") or "score"
    if sort not in SORTS:
        raise DataError(f"unknown sort {sort!r}; one of {', '.join(SORTS)}")
    q.sort = sort
    q.desc = (params.get("order") or "desc") != "asc"
    for name in TEXT_FILTERS:
        value = (params.get(name) or "").strip()
        if value:
            q.filters[name] = keep[name] = value[:300]
    for name in ("round", "has"):
        value = (params.get(name) or "").strip()
        if value:
            keep[name] = value[:300]
    q.round = keep.get("round")
    if keep.get("has") and keep["has"] not in ("depth", "pred", "unc"):
        raise DataError("has= must be depth, pred or unc")
    q.has = keep.get("has")
    for name, attr in (("score_min", "score_min"), ("score_max", "score_max")):
        value = (params.get(name) or "").strip()
        if value:
            try:
                setattr(q, attr, float(value))
            except ValueError as exc:
                raise DataError(f"{name}={value[:20]!r} is not a number") from exc
            keep[name] = value
    for name, attr in (("from", "captured_from"), ("to", "captured_to")):
        value = (params.get(name) or "").strip()
        if value:
            setattr(q, attr, value[:40])
            keep[name] = value[:40]
    per = params.get("per") or str(PAGE_SIZES[0])
    q.limit = int(per) if per.isdigit() and int(per) in PAGE_SIZES else PAGE_SIZES[0]
    if q.limit != PAGE_SIZES[0]:
        keep["per"] = str(q.limit)
    if sort != "score":
        keep["sort"] = sort
    if not q.desc:
        keep["order"] = "asc"
    if params.get("after"):
        q.after = decode_cursor(params["after"])
    elif params.get("before"):
        q.before = decode_cursor(params["before"])
    return q, keep


def create_browser_app(config: BrowserConfig, store=None, devices_db: Optional[str] = None):
    """The browser's Starlette app; `store` is shared when the ingest server mounts it."""
    require("starlette", "server")
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route

    auth = AdminAuth(read_token_file(config.admin_token_file))
    if store is None:
        from edgedepth.fleet.store import open_store

        store = open_store(config.store, config.endpoint_url)
    catalog = Catalog(default_catalog_db(config.store, config.catalog_db), store, refresh_s=config.refresh_s)
    history = History(config.rounds_dir, config.registry, catalog, config.endpoint_url)
    thumbs = ThumbnailCache(config.thumb_cache_bytes)
    env = _environment()
    near, far = config.depth_range
    legend = {
        "depth_stops": gradient_stops(DEPTH_CMAP, reverse=True),
        "unc_stops": gradient_stops(UNC_CMAP, reverse=False),
        "ticks": depth_ticks(near, far), "near": near, "far": far,
    }
    caches: Dict[str, Any] = {}

    def page(request: Request, template: str, status: int = 200, **ctx) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        html = env.get_template(template).render(base=base, legend=legend, config=config, **ctx)
        return HTMLResponse(html, status_code=status,
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})

    def login_page(request: Request, status: int, message: str = "") -> HTMLResponse:
        return page(request, "login.html", status=status, message=message, nav=None)

    def refresh() -> None:
        history.refresh_rounds()  # keeps the round memberships in the catalog current
        catalog.refresh()

    def cached(name: str, make):
        key = (name, catalog.generation)
        if caches.get(name, (None,))[0] != key:
            caches[name] = (key, make())
        return caches[name][1]

    async def frames(request: Request) -> Response:
        try:
            q, keep = _parse_query(request.query_params)
        except DataError as exc:
            return page(request, "error.html", status=400, message=str(exc), nav="frames")
        await run_in_threadpool(refresh)
        result = await run_in_threadpool(catalog.page, q)
        facets = await run_in_threadpool(cached, "facets", catalog.facets)

        def link(**changes) -> str:
            params = {k: v for k, v in keep.items()}
            for k, v in changes.items():
                if v is None:
                    params.pop(k, None)
                else:
                    params[k] = str(v)
            return "?" + urlencode(params) if params else "?"

        def sort_link(key: str) -> str:
            order = "asc" if (q.sort == key and q.desc) else None
            return link(sort=None if key == "score" else key, order=order)

        return page(request, "frames.html", nav="frames", rows=result.rows, total=result.total, q=q,
                    keep=keep, facets=facets, sorts=list(SORTS), page_sizes=PAGE_SIZES,
                    next_link=link(after=result.next_cursor) if result.next_cursor else None,
                    prev_link=link(before=result.prev_cursor) if result.prev_cursor else None,
                    first_link=link() if (q.after or q.before) else None, sort_link=sort_link,
                    store_count=await run_in_threadpool(catalog.count))

    def _detail(item_id: str) -> Optional[Dict[str, Any]]:
        row = catalog.get(item_id)
        if row is None:
            return None
        try:
            meta = store.get_meta(item_id)
        except (DataError, OSError) as exc:
            log.warning("browser: item %s: %s", item_id[:12], exc)
            meta = {}
        stats: Dict[str, Dict[str, float]] = {}
        files = meta.get("files") if isinstance(meta.get("files"), dict) else {}
        for slot in ("depth", "pred", "unc"):
            name = row.get(slot)
            if not name or name not in files:
                continue
            try:
                data = store.read_file(item_id, name)
                stats[slot] = (scalar_stats(data, name) if slot == "unc"
                               else depth_stats(data, name, files[name].get("units")))
            except (DataError, OSError, ValueError) as exc:
                log.warning("browser: item %s: %s does not decode: %s", item_id[:12], name, exc)
                stats[slot] = {"error": 1.0}
        neighbours = sorted((n for n, e in files.items()
                             if isinstance(e, dict) and e.get("kind") == "rgb_neighbor"),
                            key=lambda n: int(files[n].get("offset", 0) or 0))
        return {"row": row, "meta": meta, "stats": stats, "neighbours": neighbours, "files": files}

    async def frame(request: Request) -> Response:
        item_id = request.path_params["item_id"]
        await run_in_threadpool(refresh)
        detail = await run_in_threadpool(_detail, item_id) if len(item_id) == 64 else None
        if detail is None:
            return page(request, "error.html", status=404, message=f"no frame {item_id[:64]!r} in the store",
                        nav="frames")
        return page(request, "frame.html", nav="frames", **detail)

    def _thumbnail(item_id: str, name: str, width: int) -> Tuple[bytes, bool]:
        key = (item_id, name, width, near, far)
        data = thumbs.get(key)
        if data is not None:
            return data, True
        try:
            entry = (store.get_meta(item_id).get("files") or {}).get(name)
        except DataError:
            entry = None
        if not isinstance(entry, dict):
            raise KeyError(name)
        try:
            data = render(store.read_file(item_id, name), name, str(entry.get("kind")), entry.get("units"),
                          width, (near, far))
            ok = True
        except (DataError, OSError, ValueError) as exc:
            log.warning("browser: item %s: %s has no preview (%s); showing a placeholder", item_id[:12], name,
                        exc)
            data, ok = placeholder(width), False
        thumbs.put(key, data)
        return data, ok

    async def image(request: Request) -> Response:
        item_id, name = request.path_params["item_id"], request.path_params["name"]
        w = request.query_params.get("w", "160")
        width = int(w) if w.isdigit() and int(w) in WIDTHS else None
        if width is None or len(item_id) != 64:
            return PlainTextResponse(f"w must be one of {WIDTHS}", status_code=400)
        try:
            data, ok = await run_in_threadpool(_thumbnail, item_id, name, width)
        except (KeyError, DataError):
            return PlainTextResponse("no such file", status_code=404)
        headers = {**SECURITY_HEADERS, "Cache-Control": "private, max-age=86400"}
        if not ok:
            headers["X-Edgedepth-Preview"] = "placeholder"
        return Response(data, media_type="image/jpeg", headers=headers)

    async def devices(request: Request) -> Response:
        await run_in_threadpool(refresh)
        activity = await run_in_threadpool(cached, "activity", catalog.activity)
        return page(request, "devices.html", nav="devices", activity=activity, chart=_chart(activity))

    async def rounds(request: Request) -> Response:
        views = await run_in_threadpool(history.rounds)
        return page(request, "rounds.html", nav="rounds", rounds=views, rounds_dir=config.rounds_dir)

    async def models(request: Request) -> Response:
        view = await run_in_threadpool(history.registry_view)
        return page(request, "models.html", nav="models", registry=view)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return login_page(request, 200)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                return PlainTextResponse("login form too large", status_code=413)
        token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
        if not auth.check_token(token):
            log.warning("browser: failed sign-in from %s", request.client.host if request.client else "?")
            await asyncio.sleep(LOGIN_FAIL_DELAY_S)
            return login_page(request, 401, "That is not the admin token.")
        base = request.scope.get("root_path", "").rstrip("/")
        resp = RedirectResponse(base + "/", status_code=303)
        resp.set_cookie(COOKIE, auth.session, httponly=True, samesite="strict", path=base or "/",
                        secure=request.url.scheme == "https")
        return resp

    async def logout(request: Request) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        resp = RedirectResponse(base + "/login", status_code=303)
        resp.delete_cookie(COOKIE, path=base or "/")
        return resp

    async def icon(request: Request) -> Response:
        return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

    async def style(request: Request) -> Response:
        return Response((TEMPLATES / "style.css").read_bytes(), media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})

    def guarded(endpoint):
        async def handler(request: Request) -> Response:
            if not auth.allowed(request.headers.get("authorization"), request.cookies.get(COOKIE)):
                if endpoint is image:
                    return PlainTextResponse("admin token required", status_code=401,
                                             headers={"WWW-Authenticate": 'Bearer realm="edgedepth-browser"'})
                if (request.method == "GET" and "text/html" in request.headers.get("accept", "")
                        and "authorization" not in request.headers):  # a browser: to the sign-in form
                    base = request.scope.get("root_path", "").rstrip("/")
                    return RedirectResponse(base + "/login", status_code=303, headers=SECURITY_HEADERS)
                resp = login_page(request, 401, "Sign in with the data browser's admin token.")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="edgedepth-browser"'
                return resp
            return await endpoint(request)
        return handler

    app = Starlette(routes=[
        Route("/", guarded(frames), methods=["GET"]),
        Route("/frame/{item_id}", guarded(frame), methods=["GET"]),
        Route("/img/{item_id}/{name}", guarded(image), methods=["GET"]),
        Route("/devices", guarded(devices), methods=["GET"]),
        Route("/rounds", guarded(rounds), methods=["GET"]),
        Route("/models", guarded(models), methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", guarded(logout), methods=["POST"]),
        Route("/style.css", style, methods=["GET"]),
        Route("/favicon.svg", icon, methods=["GET"]),
    ])
    app.state.catalog = catalog
    app.state.thumbs = thumbs
    return app


PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")


def _chart(activity: Dict[str, Any], max_buckets: int = 72, width: int = 880,
           height: int = 160) -> Dict[str, Any]:
    """Stacked bars (uploads and bytes per bucket, one colour per device) as SVG rectangles."""
    buckets = activity["buckets"][-max_buckets:]
    devs = activity["devices"]
    colours = {d["device"]: PALETTE[i % len(PALETTE)] for i, d in enumerate(devs)}
    out: Dict[str, Any] = {"width": width, "height": height, "buckets": buckets, "colours": colours}
    if not buckets:
        out.update(frames=[], bytes=[], max_frames=0, max_bytes=0, labels=[])
        return out
    slot = width / len(buckets)
    for idx, key in ((0, "frames"), (1, "bytes")):
        totals = [sum(d["per_bucket"].get(b, (0, 0))[idx] for d in devs) for b in buckets]
        top = max(totals) or 1
        rects = []
        for i, b in enumerate(buckets):
            y = float(height)
            for d in devs:
                v = d["per_bucket"].get(b, (0, 0))[idx]
                if v:
                    h = height * v / top
                    y -= h
                    rects.append({"x": round(i * slot + 1, 1), "y": round(y, 1),
                                  "w": round(max(1.0, slot - 2), 1), "h": round(h, 1),
                                  "fill": colours[d["device"]],
                                  "title": f"{d['device']} {b}: {v if idx == 0 else _human_bytes(v)}"})
        out[key] = rects
        out["max_" + key] = top
    step = max(1, math.ceil(110 / slot))  # labels at least 110 px apart
    out["labels"] = [{"x": round(i * slot, 1), "text": b[5:].replace("T", " ") + ":00" if len(b) == 13 else b}
                     for i, b in enumerate(buckets) if i % step == 0]
    return out


def create_dashboard_app(config: BrowserConfig):
    """`edgedepth dashboard`: the browser alone, at /browse (and / redirects there)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, RedirectResponse
    from starlette.routing import Mount, Route

    browser = create_browser_app(config)

    async def root(request):
        return RedirectResponse("/browse/", status_code=307)

    async def healthz(request):
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/", root), Route("/healthz", healthz),
                             Mount("/browse", app=browser)])
