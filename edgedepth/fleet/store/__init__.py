"""Storage of ingested items: a local directory (default) or S3-compatible object storage.

`open_store(uri)` picks the backend from the URI: `s3://BUCKET/PREFIX` -> S3Store (boto3, the `server`
extra, imported only then), anything else (`DIR` or `file://DIR`) -> LocalStore.
"""

from __future__ import annotations

from typing import Optional

from edgedepth.fleet.store.base import Store, StoreUnavailable


def open_store(uri: str, endpoint_url: Optional[str] = None, *, min_free_bytes: int = 256 << 20,
               server_name: Optional[str] = None, manifest_every_s: float = 60.0,
               region: Optional[str] = None, adopt_orphans: bool = False, must_exist: bool = False) -> Store:
    """Open the store named by `uri`; `endpoint_url` selects an S3-compatible service (MinIO, ...).

    `must_exist`: a local store is read, not created (a mistyped path is an error, not an empty store).
    """
    from pathlib import Path

    from edgedepth.errors import ConfigError, DataError

    uri = str(uri)
    if uri.startswith("s3://"):
        from edgedepth.fleet.store.s3 import S3Store, parse_s3_uri

        bucket, prefix = parse_s3_uri(uri)
        return S3Store(bucket, prefix, endpoint_url=endpoint_url, server_name=server_name,
                       manifest_every_s=manifest_every_s, region=region, adopt_orphans=adopt_orphans)
    if "://" in uri and not uri.startswith("file://"):
        raise ConfigError(f"unsupported store URI {uri!r}: use a directory, file://DIR or s3://BUCKET/PREFIX")
    if endpoint_url:
        raise ConfigError("--endpoint-url applies to s3:// stores only")
    from edgedepth.fleet.store.local import LocalStore

    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if must_exist and not (Path(path).expanduser() / "items").is_dir():
        raise DataError(f"no ingest store at {path} (no items/ folder in it): check the path, or point it at "
                        "the --store of `edgedepth ingest serve`")
    return LocalStore(path, min_free_bytes=min_free_bytes)


__all__ = ["Store", "StoreUnavailable", "open_store"]
