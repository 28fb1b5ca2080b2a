"""`edgedepth dashboard`: the fleet data browser on its own (read-only web pages over an ingest store)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgedepth.errors import ConfigError

BROWSER_OPTIONS = [
    click.option("--admin-token-file", "admin_token_file", type=click.Path(dir_okay=False),
                 help="File holding the data browser's admin token (device tokens do not open it)."),
    click.option("--rounds", "rounds_dir", default=None, type=click.Path(file_okay=False),
                 help="Rounds folder (the parent of `edgedepth round build --out` folders) to show with "
                      "their datasets and gate results (ROUND/gate.json)."),
    click.option("--registry", default=None,
                 help="Model registry (DIR, s3://..., https://...) whose versions and promotions to show."),
    click.option("--catalog-db", default=None,
                 help="The browser's query tables (SQLite). Default: STORE/browse.db; required for s3."),
    click.option("--depth-range", default="0.5,20", show_default=True,
                 help="NEAR,FAR metres of the depth colour scale shared by every preview."),
]


def browser_options(func):
    for option in reversed(BROWSER_OPTIONS):
        func = option(func)
    return func


def browser_config(store: str, endpoint_url: Optional[str], admin_token_file: Optional[str],
                   rounds_dir: Optional[str], registry: Optional[str], catalog_db: Optional[str],
                   depth_range: str):
    """The BrowserConfig of the options above (None when no admin token file is given)."""
    from edgedepth.fleet.browser.app import BrowserConfig, parse_depth_range
    from edgedepth.fleet.browser.auth import read_token_file

    if not admin_token_file:
        return None
    read_token_file(admin_token_file)  # fail at start, not at the first page
    return BrowserConfig(store=store, admin_token_file=admin_token_file, rounds_dir=rounds_dir,
                         registry=registry, endpoint_url=endpoint_url, catalog_db=catalog_db,
                         depth_range=parse_depth_range(depth_range))


@click.command("dashboard")
@click.option("--store", required=True, help="Ingest store: a directory (or file://DIR) or s3://BUCKET/PREFIX.")
@click.option("--endpoint-url", default=None, help="S3-compatible endpoint (MinIO, ...); s3:// only.")
@browser_options
@click.option("--new-token", is_flag=True,
              help="Write a new random admin token to --admin-token-file (which must not exist) and "
                   "print it.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TLS certificate chain (PEM); serve HTTPS with --key.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TLS private key (PEM).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Server log level.")
def dashboard(store: str, endpoint_url: Optional[str], admin_token_file: Optional[str],
              rounds_dir: Optional[str], registry: Optional[str], catalog_db: Optional[str], depth_range: str,
              new_token: bool, host: str, port: int, cert: Optional[str], key: Optional[str],
              log_level: str) -> None:
    """Serve the read-only fleet data browser at http://HOST:PORT/browse/ (sign in with the admin token)."""
    import logging

    from edgedepth.errors import require

    if not admin_token_file:
        raise ConfigError("--admin-token-file is required (add --new-token to create one)")
    if bool(cert) != bool(key):
        raise ConfigError("--cert and --key go together: give both for HTTPS, neither for plain HTTP")
    local = store[len("file://"):] if store.startswith("file://") else store
    if "://" not in local and not Path(local).expanduser().is_dir():
        raise ConfigError(f"no store at {store}: give the folder `edgedepth ingest serve --store` writes to")
    if new_token:
        from edgedepth.cli.options import unwritable_reason
        from edgedepth.fleet.browser.auth import new_token_file

        why = unwritable_reason(Path(admin_token_file))
        if why:
            raise ConfigError(f"--admin-token-file: {why}")
        click.echo(new_token_file(admin_token_file))
        click.echo(f"admin token written to {admin_token_file} (mode 600)", err=True)
    config = browser_config(store, endpoint_url, admin_token_file, rounds_dir, registry, catalog_db,
                            depth_range)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("edgedepth").setLevel(log_level.upper())
    uvicorn = require("uvicorn", "server")
    from edgedepth.fleet.browser.app import create_dashboard_app

    app = create_dashboard_app(config)
    uvicorn.run(app, host=host, port=port, ssl_certfile=cert, ssl_keyfile=key, log_level=log_level,
                server_header=False, timeout_graceful_shutdown=5)
