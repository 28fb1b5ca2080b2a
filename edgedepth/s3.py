"""The one S3 access layer (boto3; AWS S3, MinIO, Ceph RGW, moto): client set-up, keys under a prefix,
checksummed and create-only writes, reads, listings, and the mapping of S3 failures to errors.

Used by the fleet's item store (edgedepth.fleet.store.s3) and the model registry's S3 transport
(edgedepth.registry.storage). boto3 is imported only when a client is made.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Type

from edgedepth.errors import ConfigError, EdgeDepthError, require

log = logging.getLogger(__name__)


def make_client(endpoint_url: Optional[str] = None, region: Optional[str] = None):
    """A boto3 S3 client with bounded retries and timeouts (path-style addressing for custom endpoints)."""
    boto3 = require("boto3", "server")
    from botocore.config import Config

    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30,
                    max_pool_connections=64, s3={"addressing_style": "path"} if endpoint_url else None)
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class S3Objects:
    """Objects under s3://bucket/prefix. Subclasses set `unavailable_error` (their "retry later" error)."""

    unavailable_error: Type[EdgeDepthError] = EdgeDepthError

    def _init_s3(self, bucket: str, prefix: str = "", endpoint_url: Optional[str] = None,
                 region: Optional[str] = None, client=None) -> None:
        if not bucket:
            raise ConfigError("an S3 location needs a bucket: s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self._client = client if client is not None else make_client(endpoint_url, region)
        # Create-only writes via If-None-Match: * (S3 since 2024, MinIO, moto). Turned off when the
        # store answers NotImplemented; then a HEAD-then-PUT is used, which has a race window between
        # two writers of the same key at the same instant.
        self._conditional_writes = True

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _call(self, what: str, fn: Callable, **kwargs):
        """Run one S3 call; transport failures become `unavailable_error`, S3 errors are re-raised."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError:
            raise  # callers look at the error code (404, 412, NotImplemented) and decide
        except BotoCoreError as exc:
            raise self.unavailable_error(f"{self.describe()}: {what} failed: {exc}; retry later") from exc

    @staticmethod
    def _code(exc) -> str:
        err = getattr(exc, "response", {}).get("Error", {})
        return str(err.get("Code", ""))

    @staticmethod
    def _status(exc) -> int:
        return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)

    def _missing(self, exc) -> bool:
        return self._status(exc) == 404 or self._code(exc) in ("404", "NoSuchKey", "NotFound")

    def _unavailable(self, what: str, exc) -> EdgeDepthError:
        return self.unavailable_error(f"{self.describe()}: {what} failed: {self._code(exc) or exc}; "
                                      "retry later")

    def _check_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("head bucket", self._client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            if self._status(exc) in (403, 404):
                raise ConfigError(f"S3 bucket {self.bucket!r} is not reachable ({self._code(exc)}): "
                                  f"create it or check the credentials and --endpoint-url") from exc
            raise self._unavailable("head bucket", exc) from exc

    def _open(self, key: str) -> Optional[dict]:
        """The get_object response (stream in ["Body"], size in ["ContentLength"]), or None when missing."""
        from botocore.exceptions import ClientError

        try:
            return self._call(f"get {key}", self._client.get_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise self._unavailable(f"get {key}", exc) from exc

    def _iter_body(self, key: str, obj: dict, chunk: int) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError

        try:
            yield from obj["Body"].iter_chunks(chunk)
        except BotoCoreError as exc:
            raise self.unavailable_error(f"{self.describe()}: reading {key} failed: {exc}; retry later") \
                from exc

    def _get(self, key: str) -> Optional[bytes]:
        obj = self._open(key)
        if obj is None:
            return None
        return b"".join(self._iter_body(key, obj, 1 << 20))

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call(f"head {key}", self._client.head_object, Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if self._missing(exc):
                return False
            raise self._unavailable(f"head {key}", exc) from exc

    def _put(self, key: str, data: bytes, create_only: bool, content_type: Optional[str] = None) -> bool:
        """PUT with a SHA-256 checksum the store verifies; False if create_only and the key exists."""
        from botocore.exceptions import ClientError

        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        kwargs = dict(Bucket=self.bucket, Key=key, Body=data, ChecksumSHA256=digest)
        if content_type:
            kwargs["ContentType"] = content_type
        if create_only and self._conditional_writes:
            kwargs["IfNoneMatch"] = "*"
        elif create_only and self._exists(key):
            return False
        try:
            self._call(f"put {key}", self._client.put_object, **kwargs)
            return True
        except ClientError as exc:
            code, status = self._code(exc), self._status(exc)
            if status == 412 or code == "PreconditionFailed":
                return False
            if status == 409 and code == "ConditionalRequestConflict":
                return False  # a concurrent conditional write of the same key is in flight
            if create_only and self._conditional_writes and code == "NotImplemented":
                log.warning("%s does not support If-None-Match writes: falling back to HEAD-then-PUT",
                            self.describe())
                self._conditional_writes = False
                return self._put(key, data, create_only, content_type)
            raise self._unavailable(f"put {key}", exc) from exc

    def _upload_file(self, key: str, path: Path) -> None:
        """Upload a local file (boto3 switches to multipart for large ones)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.upload_file(str(path), self.bucket, key)
        except (BotoCoreError, ClientError) as exc:
            raise self.unavailable_error(f"{self.describe()}: upload of {path} to {key} failed: {exc}; "
                                         "retry later") from exc

    def _list(self, prefix: str) -> Iterator[dict]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                yield from page.get("Contents", [])
        except ClientError as exc:
            raise self._unavailable(f"list {prefix}", exc) from exc
        except BotoCoreError as exc:
            raise self.unavailable_error(f"{self.describe()}: list {prefix} failed: {exc}; retry later") \
                from exc

    def _delete_keys(self, keys: List[str]) -> None:
        """Delete keys in batches of 1000; failures are logged, not raised (callers delete leftovers)."""
        from botocore.exceptions import ClientError

        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start:start + 1000]]
            try:
                self._call("delete objects", self._client.delete_objects, Bucket=self.bucket,
                           Delete={"Objects": chunk, "Quiet": True})
            except (ClientError, self.unavailable_error) as exc:
                log.warning("%s: could not delete %d objects: %s", self.describe(), len(chunk), exc)
