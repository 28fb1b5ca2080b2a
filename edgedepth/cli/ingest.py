"""`edgedepth ingest`: run the central ingest server and manage device tokens."""

from __future__ import annotations

from typing import Optional

import click

from edgedepth.cli.dashboard import browser_config, browser_options
from edgedepth.errors import ConfigError

STORE_HELP = "Store: a directory (or file://DIR) or s3://BUCKET/PREFIX."
AUTH_DB_HELP = "Device token database (SQLite). Default: STORE/devices.db for a local store; required for s3."


def _registry(store: Optional[str], auth_db: Optional[str], create: bool = False):
    """The device database; only add-device creates it (and the store folder holding it)."""
    from edgedepth.cli.options import unwritable_reason
    from edgedepth.fleet.auth import DeviceRegistry, default_auth_db

    if not store and not auth_db:
        raise ConfigError("name the device database: --auth-db PATH, or --store DIR for STORE/devices.db")
    path = default_auth_db(store or "", auth_db)
    why = unwritable_reason(path) if create else None
    if why:
        raise ConfigError(f"cannot create the device database: {why}")
    return DeviceRegistry(path, create=create)


def check_port_free(host: str, port: int) -> None:
    """ConfigError when (host, port) cannot be bound, before the server starts and logs its own failure."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r}: {exc.strerror}; give --host an address of this "
                          "machine, e.g. 0.0.0.0 or 127.0.0.1") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
        try:
            sock.bind(addr)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; stop what uses it or "
                              "choose another --port") from None


def _frame(text: str) -> tuple:
    """(width, height) from 'WIDTHxHEIGHT'."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit() or int(w) < 1 or int(h) < 1:
        raise ConfigError(f"--max-frame {text!r}: use WIDTHxHEIGHT, e.g. 1920x1080")
    return int(w), int(h)


@click.group()
def ingest() -> None:
    """Central ingest server: receives spool items from devices into a directory or S3 store."""


@ingest.command()
@click.option("--store", "store", required=True, help=STORE_HELP)
@click.option("--endpoint-url", default=None, help="S3-compatible endpoint (MinIO, Ceph, ...); s3:// only.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TLS certificate chain (PEM); serve HTTPS with --key.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TLS private key (PEM) for --cert.")
@click.option("--auth-db", default=None, help=AUTH_DB_HELP)
@click.option("--max-item-mb", default=20.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Largest accepted upload body, MiB (larger: 413).")
@click.option("--rate", default=10.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Uploads per second allowed per device (token bucket refill; over it: 429).")
@click.option("--burst", default=30.0, show_default=True, type=click.FloatRange(min=1),
              help="Uploads a device may send at once before --rate applies.")
@click.option("--read-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Sliding window, seconds: in every window of this length a body must advance by "
              "--min-upload-kbs x window (slower: 408, connection closed).")
@click.option("--min-upload-kbs", default=8.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Slowest upload rate tolerated over --read-timeout, KiB/s; keep it below the slowest "
              "device's upload --max-bandwidth.")
@click.option("--max-concurrent", default=64, show_default=True, type=click.IntRange(min=1),
              help="Upload bodies received at once (more: 503 with Retry-After).")
@click.option("--max-per-device", default=2, show_default=True, type=click.IntRange(min=1),
              help="Upload bodies one device may send at once (more: 429 with Retry-After).")
@click.option("--body-memory-mb", default=128.0, show_default=True, type=click.FloatRange(min=1),
              help="MiB of upload bodies held in memory by all uploads together (more: 503).")
@click.option("--max-frame", default="1920x1080", show_default=True,
              help="Largest image accepted, WIDTHxHEIGHT (either orientation; larger: 413 before decoding).")
@click.option("--max-decodes", default=2, show_default=True, type=click.IntRange(min=1),
              help="Images decoded at once (bounds the memory that checking uploads takes).")
@click.option("--header-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a request head may take to arrive (slower: connection closed).")
@click.option("--keep-alive", default=15.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds an idle keep-alive connection stays open.")
@click.option("--max-connections", default=256, show_default=True, type=click.IntRange(min=1),
              help="Open connections served at once (more: 503).")
@click.option("--min-free-mb", default=256.0, show_default=True, type=click.FloatRange(min=0),
              help="Local store: refuse uploads (503) when less disk than this would remain free.")
@click.option("--server-name", default=None, help="Name in S3 manifest file names (default: host-pid).")
@click.option("--manifest-every", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
              help="S3 store: seconds between manifests of newly stored items.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Server processes on this one address (uvicorn workers sharing the port and the store).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Server log level.")
@browser_options
def serve(store: str, endpoint_url: Optional[str], host: str, port: int, cert: Optional[str],
          key: Optional[str], auth_db: Optional[str], max_item_mb: float, rate: float, burst: float,
          read_timeout: float, min_upload_kbs: float, max_concurrent: int, max_per_device: int,
          body_memory_mb: float, max_frame: str, max_decodes: int, header_timeout: float, keep_alive: float,
          max_connections: int, min_free_mb: float, server_name: Optional[str], manifest_every: float,
          workers: int, log_level: str, **browse) -> None:
    """Run the ingest server (HTTPS with --cert/--key) until interrupted; with --admin-token-file it also
    serves the read-only data browser at /browse/."""
    import logging

    from edgedepth.fleet.auth import default_auth_db
    from edgedepth.fleet.server import IngestConfig
    from edgedepth.fleet.server import serve as run_server

    if bool(cert) != bool(key):
        raise ConfigError("--cert and --key go together: give both for HTTPS, neither for plain HTTP")
    db = default_auth_db(store, auth_db)
    if not db.exists():
        where = f"--auth-db {db}" if auth_db else f"--store {store}"
        raise ConfigError(f"no device database at {db}: add a device first "
                          f"(edgedepth ingest add-device NAME {where})")
    check_port_free(host, port)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # no-op if set up
    logging.getLogger("edgedepth").setLevel(log_level.upper())
    config = IngestConfig(store=store, endpoint_url=endpoint_url, auth_db=str(db),
                          max_item_bytes=int(max_item_mb * (1 << 20)), rate_per_s=rate, burst=burst,
                          read_timeout_s=read_timeout, min_upload_bytes_per_s=min_upload_kbs * 1024,
                          max_concurrent_uploads=max_concurrent, max_uploads_per_device=max_per_device,
                          body_memory_bytes=int(body_memory_mb * (1 << 20)), max_frame=_frame(max_frame),
                          max_decodes=max_decodes, header_timeout_s=header_timeout, keep_alive_s=keep_alive,
                          max_connections=max_connections, min_free_bytes=int(min_free_mb * (1 << 20)),
                          server_name=server_name, manifest_every_s=manifest_every,
                          browser=browser_config(store, endpoint_url, **browse))
    if workers > 1:
        from edgedepth.fleet.workers import serve_workers

        serve_workers(config, workers, host=host, port=port, certfile=cert, keyfile=key, log_level=log_level)
        return
    run_server(config, host=host, port=port, certfile=cert, keyfile=key, log_level=log_level)


@ingest.command("add-device")
@click.argument("name")
@click.option("--store", default=None, help=STORE_HELP + " Its devices.db is used unless --auth-db is given.")
@click.option("--auth-db", default=None, help=AUTH_DB_HELP)
@click.option("--replace", is_flag=True, help="Issue a new token for an existing device (the old one stops).")
def add_device(name: str, store: Optional[str], auth_db: Optional[str], replace: bool) -> None:
    """Register a device and print its upload token (shown only this once; only a hash is kept)."""
    registry = _registry(store, auth_db, create=True)
    try:
        token = registry.add_device(name, replace=replace)
    finally:
        registry.close()
    click.echo(token)
    click.echo(f"device {name!r} added to {registry.path}; keep the token secret: it is not stored "
               f"and cannot be shown again", err=True)


@ingest.command("revoke-device")
@click.argument("name")
@click.option("--store", default=None, help=STORE_HELP + " Its devices.db is used unless --auth-db is given.")
@click.option("--auth-db", default=None, help=AUTH_DB_HELP)
def revoke_device(name: str, store: Optional[str], auth_db: Optional[str]) -> None:
    """Revoke a device's token; a running server refuses it from the next request on."""
    registry = _registry(store, auth_db)
    try:
        registry.revoke_device(name)
    finally:
        registry.close()
    click.echo(f"revoked {name}")


@ingest.command("list-devices")
@click.option("--store", default=None, help=STORE_HELP + " Its devices.db is used unless --auth-db is given.")
@click.option("--auth-db", default=None, help=AUTH_DB_HELP)
def list_devices(store: Optional[str], auth_db: Optional[str]) -> None:
    """List registered devices (name, when added, when revoked); tokens are never shown."""
    registry = _registry(store, auth_db)
    try:
        rows = registry.list_devices()
    finally:
        registry.close()
    if not rows:
        click.echo("no devices")
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
        click.echo(f"{r['name']:<{width}}  added {r['created_at']}  {state}")
