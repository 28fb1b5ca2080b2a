"""Several ingest server processes behind one address: `edgedepth ingest serve --workers N`.

uvicorn's own multi-process mode: the parent binds the port once and N worker processes accept on the
shared socket (the kernel spreads connections), each building its own app from the same settings
(passed in an environment variable, since a worker imports the app by name). Every worker opens the
store itself, so what sharing needs is the store's:
- S3: no database; each worker writes its own manifests (named by host and pid, or --server-name plus
  the pid), and create-only commits make a duplicate upload to two workers land once
  (edgedepth.fleet.store.s3);
- local directory: items are renamed into place atomically and indexed in SQLite in WAL mode with a
  30 s busy timeout (edgedepth.fleet.index), so concurrent writers wait for each other instead of failing;
  INSERT OR IGNORE keeps one row per item.
Per-device rate limits and the concurrent-upload cap are per worker (in memory): with N workers a
device may reach N times --rate.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Optional

from edgedepth.errors import ConfigError, require
from edgedepth.fleet.server import IngestConfig, create_app

CONFIG_ENV = "EDGEDEPTH_INGEST_CONFIG"


def app_from_env():
    """The app of one worker process (uvicorn factory): settings from CONFIG_ENV."""
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise ConfigError(f"{CONFIG_ENV} is not set; start workers with `edgedepth ingest serve --workers N`")
    config = IngestConfig(**json.loads(raw))
    if config.server_name:  # one manifest series per process
        config.server_name = f"{config.server_name}-{os.getpid()}"
    return create_app(config)


def serve_workers(config: IngestConfig, workers: int, host: str = "127.0.0.1", port: int = 8080,
                  certfile: Optional[str] = None, keyfile: Optional[str] = None,
                  log_level: str = "info") -> None:
    """Run `workers` ingest processes on one host:port under uvicorn until stopped."""
    uvicorn = require("uvicorn", "server")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    os.environ[CONFIG_ENV] = json.dumps(asdict(config))
    uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, host=host, port=port,
                ssl_certfile=certfile, ssl_keyfile=keyfile, log_level=log_level, timeout_keep_alive=30,
                timeout_graceful_shutdown=10, server_header=False, h11_max_incomplete_event_size=64 << 10)
