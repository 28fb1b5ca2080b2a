"""`edgedepth ingest`: run the central ingest server and manage device tokens."""

from __future__ import annotations

from typing import Optional

import click

from edgedepth.errors import ConfigError

STORE_HELP = "Store: a directory (or file://DIR) or s3://BUCKET/PREFIX."
AUTH_DB_HELP = "Device token database (SQLite). Default: STORE/devices.db for a local store; required for s3."


def _registry(store: Optional[str], auth_db: Optional[str]):
    from edgedepth.fleet.auth import DeviceRegistry, default_auth_db

    if not store and not auth_db:
        raise ConfigError("name the device database: --auth-db PATH, or --store DIR for STORE/devices.db")
    return DeviceRegistry(default_auth_db(store or "", auth_db))


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
@click.option("--read-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a body may take, plus its size at --min-upload-kbs (slower: 408).")
@click.option("--min-upload-kbs", default=8.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Slowest upload rate tolerated, KiB/s (sets the body deadline with --read-timeout); "
              "keep it below the slowest device's upload --max-bandwidth.")
@click.option("--max-concurrent", default=16, show_default=True, type=click.IntRange(min=1),
              help="Upload bodies held in memory at once (more: 503 with Retry-After).")
@click.option("--min-free-mb", default=256.0, show_default=True, type=click.FloatRange(min=0),
              help="Local store: refuse uploads (503) when less disk than this would remain free.")
@click.option("--server-name", default=None, help="Name in S3 manifest file names (default: host-pid).")
@click.option("--manifest-every", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
              help="S3 store: seconds between manifests of newly stored items.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Server processes on this one address (uvicorn workers sharing the port and the store).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Server log level.")
def serve(store: str, endpoint_url: Optional[str], host: str, port: int, cert: Optional[str],
          key: Optional[str], auth_db: Optional[str], max_item_mb: float, rate: float, burst: float,
          read_timeout: float, min_upload_kbs: float, max_concurrent: int, min_free_mb: float,
          server_name: Optional[str], manifest_every: float, workers: int, log_level: str) -> None:
    """Run the ingest server (HTTPS with --cert/--key) until interrupted."""
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
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # no-op if set up
    logging.getLogger("edgedepth").setLevel(log_level.upper())
    config = IngestConfig(store=store, endpoint_url=endpoint_url, auth_db=str(db),
                          max_item_bytes=int(max_item_mb * (1 << 20)), rate_per_s=rate, burst=burst,
                          read_timeout_s=read_timeout, min_upload_bytes_per_s=min_upload_kbs * 1024,
                          max_concurrent_uploads=max_concurrent, min_free_bytes=int(min_free_mb * (1 << 20)),
                          server_name=server_name, manifest_every_s=manifest_every)
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
    registry = _registry(store, auth_db)
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
