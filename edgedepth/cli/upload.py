"""`edgedepth upload`: the device-side upload daemon (spool -> ingest server), and `upload status`."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import click

from edgedepth.cli.options import InputPath, OutputPath, config_option, device_settings
from edgedepth.errors import ConfigError

# click parameter -> its key path in device.yaml
UPLOAD_FLAGS = {
    "spool_dir": ("spool",), "server": ("server",), "token_file": ("token_file",), "ca_cert": ("ca_cert",),
    "db_path": ("upload", "db"), "max_bandwidth": ("upload", "max_bandwidth"),
    "spool_max_mb": ("spool_max_mb",), "metrics_port": ("upload", "metrics_port"),
    "poll_interval": ("upload", "poll_interval"), "rescan_interval": ("upload", "rescan_interval"),
    "backoff_base": ("upload", "backoff_base"), "backoff_max": ("upload", "backoff_max"),
    "timeout": ("upload", "timeout"), "once": ("upload", "once"), "once_timeout": ("upload", "once_timeout"),
    "stats_interval": ("upload", "stats_interval"), "log_level": ("upload", "log_level"),
}


@click.group(invoke_without_command=True)
@config_option("upload")
@click.option("--spool", "spool_dir", type=InputPath(file_okay=False, path_type=Path),
              help="Spool directory the live loop writes (required to run the daemon).")
@click.option("--server", help="Ingest server base URL, e.g. https://ingest.example:8443.")
@click.option("--token-file", type=InputPath(dir_okay=False),
              help="File holding this device's upload token (else env EDGEDEPTH_TOKEN).")
@click.option("--ca-cert", type=InputPath(dir_okay=False),
              help="CA certificate (PEM) to trust for the server, e.g. a self-signed one.")
@click.option("--db", "db_path", type=OutputPath(dir_okay=False, path_type=Path),
              help="Job table (SQLite). Default: <spool>/.queue/jobs.sqlite.")
@click.option("--max-bandwidth", default=None,
              help="Upload bandwidth cap in bytes: 2MB/s, 500KiB/s, ... (default: none).")
@click.option("--spool-max-mb", type=float, default=None,
              help="Spool disk cap in MiB (1 MiB = 1,048,576 B; the unit of `edgedepth run "
                   "--spool-max-mb` too), failed/ included: rejected items go first, then the "
                   "lowest-score items.")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus /metrics and /healthz on 127.0.0.1:PORT (0: any free port).")
@click.option("--poll-interval", type=float, default=1.0, show_default=True,
              help="Seconds between cheap spool checks while idle.")
@click.option("--rescan-interval", type=float, default=60.0, show_default=True,
              help="Seconds between full spool rescans (and orphan cleanup).")
@click.option("--backoff-base", type=float, default=1.0, show_default=True,
              help="First retry delay ceiling in seconds (doubles per failure, full jitter).")
@click.option("--backoff-max", type=float, default=300.0, show_default=True,
              help="Retry delay cap in seconds.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="HTTP timeout per request (s).")
@click.option("--once", is_flag=True, help="Drain the spool and exit (non-zero if items remain).")
@click.option("--once-timeout", type=float, default=600.0, show_default=True,
              help="With --once: give up after this many seconds and exit 3 if items remain.")
@click.option("--stats-interval", type=float, default=60.0, show_default=True,
              help="Seconds between statistics log lines.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO",
              show_default=True, help="Log level of the daemon (logs go to stderr).")
@click.pass_context
def upload(ctx: click.Context, config_path: Optional[str], **_options) -> None:
    """Upload spooled frames to the ingest server, durably, highest score first.

    Runs until SIGTERM/SIGINT (the first finishes the current upload, a second exits at once), or with
    --once until the spool is drained. Example:

    \b
        edgedepth upload --spool /var/lib/edgedepth/spool --server https://ingest:8443 \\
            --token-file /etc/edgedepth/token --ca-cert /etc/edgedepth/ca.pem --max-bandwidth 2MB/s
    """
    if ctx.invoked_subcommand is not None:
        return
    from edgedepth.fleet.daemon import Daemon, DaemonConfig, read_token
    from edgedepth.fleet.ratelimit import parse_bandwidth
    from edgedepth.spool import cap_bytes

    settings = device_settings(ctx, config_path, UPLOAD_FLAGS)
    up = settings.upload
    if not settings.spool or not settings.server:
        raise ConfigError("edgedepth upload needs --spool DIR and --server URL, or spool: and server: in "
                          "--config (see --help)")
    spool_dir = Path(settings.spool)
    if not spool_dir.is_dir():
        raise ConfigError(f"spool directory {spool_dir} does not exist: give the --spool that "
                          "`edgedepth run` writes (the daemon reads it, never creates it)")
    logging.getLogger("edgedepth").setLevel(getattr(logging, up.log_level))
    cfg = DaemonConfig(
        spool=spool_dir, server=settings.server, token=read_token(settings.token_file),
        ca_cert=settings.ca_cert, db=Path(up.db) if up.db else None,
        max_bandwidth=parse_bandwidth(up.max_bandwidth),
        spool_max_bytes=cap_bytes(settings.spool_max_mb),
        metrics_port=up.metrics_port, poll_interval=up.poll_interval, rescan_interval=up.rescan_interval,
        backoff_base=up.backoff_base, backoff_max=up.backoff_max, timeout=up.timeout, once=up.once,
        once_timeout=up.once_timeout, stats_interval=up.stats_interval,
    )
    sys.exit(Daemon(cfg).run())


@upload.command("status")
@click.option("--spool", "spool_dir", required=True, type=InputPath(file_okay=False, path_type=Path),
              help="Spool directory.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Job table (default: <spool>/.queue/jobs.sqlite).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def status(spool_dir: Path, db_path: Optional[Path], as_json: bool) -> None:
    """Print the upload job table counts, the oldest pending age and what the spool holds."""
    from edgedepth.fleet.daemon import default_db_path
    from edgedepth.fleet.queue import JobQueue
    from edgedepth.spool import FAILED_DIR, Spool

    if not spool_dir.is_dir():
        raise ConfigError(f"spool directory {spool_dir} does not exist")
    spool = Spool(spool_dir)
    path = db_path or default_db_path(spool_dir)
    report = {"spool": str(spool_dir), "db": str(path), "spool_items": len(spool.item_ids()),
              "spool_bytes": spool.total_bytes()}
    failed_dir = spool_dir / FAILED_DIR
    report["failed_dir_items"] = len(list(failed_dir.glob("*.failed.json"))) if failed_dir.is_dir() else 0
    if path.exists():
        q = JobQueue(path, readonly=True)
        try:
            report["jobs"] = q.counts()
            report["oldest_pending_age_s"] = round(q.oldest_pending_age(), 1)
            report["pending_bytes"] = q.pending_bytes()
            report["recent_failures"] = [{"id": j.id, "reason": j.last_error} for j in q.failed(5)]
        finally:
            q.close()
    else:
        report["jobs"] = None
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    click.echo(f"spool {spool_dir}: {report['spool_items']} items, {report['spool_bytes'] / 2**20:.2f} MiB "
               f"(failed/ included); failed/: {report['failed_dir_items']} items")
    if report["jobs"] is None:
        click.echo(f"no job table at {path} (the daemon has not run on this spool)")
        return
    click.echo("jobs: " + ", ".join(f"{k} {v}" for k, v in report["jobs"].items()))
    click.echo(f"oldest pending: {report['oldest_pending_age_s']:.0f} s, pending "
               f"{report['pending_bytes'] / 1e6:.2f} MB (at {time.strftime('%Y-%m-%d %H:%M:%S')})")
    for f in report["recent_failures"]:
        click.echo(f"failed {f['id'][:12]}: {f['reason']}")
