"""Where a registry lives: a local directory (or file://), an http(s):// static server, or s3://bucket/prefix.

A registry is plain static files, so every transport only needs "read an object" (and, for publishing,
"write an object"). Keys are POSIX relative paths such as "index.json" or "versions/3/model.onnx".
boto3 is imported only for s3:// URLs; httpx only for http(s)://.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional, Tuple
from urllib.parse import unquote, urlparse

from edgedepth.errors import ConfigError, EdgeDepthError, require
from edgedepth.fsutil import write_bytes_atomic

CHUNK = 1 << 20


class RegistryUnavailable(EdgeDepthError):
    """The registry could not be reached or an object is missing; retrying later may succeed."""


class DirStore:
    """A registry in a local (or network-mounted) directory."""

    scheme = "dir"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def read(self, key: str) -> Optional[bytes]:
        p = self.path(key)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryUnavailable(f"cannot read {p}: {exc}") from exc

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        p = self.path(key)
        try:
            f = open(p, "rb")
        except FileNotFoundError:
            raise RegistryUnavailable(f"registry object {p} is missing") from None
        except OSError as exc:
            raise RegistryUnavailable(f"cannot read {p}: {exc}") from exc
        with f:
            yield from iter(lambda: f.read(CHUNK), b"")

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def write(self, key: str, data: bytes) -> None:
        write_bytes_atomic(self.path(key), data)


class HttpStore:
    """A read-only registry behind any static HTTP(S) server (nginx, `python -m http.server`, a CDN)."""

    scheme = "http"

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.url = base_url.rstrip("/")
        self.timeout = timeout
        self._client = None

    def _http(self):
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout, follow_redirects=True)
        return self._client

    def _url(self, key: str) -> str:
        return f"{self.url}/{key}"

    def read(self, key: str) -> Optional[bytes]:
        import httpx

        try:
            resp = self._http().get(self._url(key))
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"GET {self._url(key)} failed: {exc}") from exc
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RegistryUnavailable(f"GET {self._url(key)} returned HTTP {resp.status_code}")
        return resp.content

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        import httpx

        try:
            with self._http().stream("GET", self._url(key)) as resp:
                if resp.status_code != 200:
                    raise RegistryUnavailable(f"GET {self._url(key)} returned HTTP {resp.status_code}")
                yield from resp.iter_bytes(CHUNK)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"GET {self._url(key)} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self.read(key) is not None

    def write(self, key: str, data: bytes) -> None:
        raise ConfigError(f"{self.url} is an HTTP registry (read-only); publish to its directory or "
                          "S3 bucket and let the web server serve it")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class S3Store:
    """A registry under s3://bucket/prefix (AWS or any S3-compatible endpoint)."""

    scheme = "s3"

    def __init__(self, bucket: str, prefix: str, endpoint_url: Optional[str] = None):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url = endpoint_url or os.environ.get("EDGEDEPTH_S3_ENDPOINT_URL") or None
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._s3 = None

    def _client(self):
        if self._s3 is None:
            boto3 = require("boto3", "server")
            self._s3 = boto3.client("s3", endpoint_url=self.endpoint_url)
        return self._s3

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @staticmethod
    def _missing(exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    def _get(self, key: str):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client().get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise RegistryUnavailable(f"GET {self.url}/{key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise RegistryUnavailable(f"GET {self.url}/{key} failed: {exc}") from exc

    def read(self, key: str) -> Optional[bytes]:
        from botocore.exceptions import BotoCoreError

        obj = self._get(key)
        if obj is None:
            return None
        try:
            return obj["Body"].read()
        except BotoCoreError as exc:
            raise RegistryUnavailable(f"reading {self.url}/{key} failed: {exc}") from exc

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError

        obj = self._get(key)
        if obj is None:
            raise RegistryUnavailable(f"registry object {self.url}/{key} is missing")
        try:
            yield from obj["Body"].iter_chunks(CHUNK)
        except BotoCoreError as exc:
            raise RegistryUnavailable(f"reading {self.url}/{key} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if self._missing(exc):
                return False
            raise RegistryUnavailable(f"HEAD {self.url}/{key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise RegistryUnavailable(f"HEAD {self.url}/{key} failed: {exc}") from exc

    def write(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        ctype = "application/json" if key.endswith(".json") else "application/octet-stream"
        try:
            self._client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=ctype)
        except (BotoCoreError, ClientError) as exc:
            raise RegistryUnavailable(f"PUT {self.url}/{key} failed: {exc}") from exc

    def write_file(self, key: str, path: Path) -> None:
        """Upload a local file (boto3 switches to multipart for large ones)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().upload_file(str(path), self.bucket, self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise RegistryUnavailable(f"upload of {path} to {self.url}/{key} failed: {exc}") from exc


def parse_registry_url(url: str) -> Tuple[str, str]:
    """(scheme, location): ("dir", path) | ("http", url) | ("s3", "bucket/prefix")."""
    text = str(url)
    parsed = urlparse(text)
    if parsed.scheme in ("http", "https"):
        return "http", text
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"{text}: an S3 registry URL is s3://BUCKET[/PREFIX]")
        return "s3", f"{parsed.netloc}/{parsed.path.strip('/')}"
    if parsed.scheme == "file":
        return "dir", unquote(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        raise ConfigError(f"unsupported registry URL {text!r}: use a directory, file://, http(s):// or s3://")
    return "dir", text


def open_store(url: str, endpoint_url: Optional[str] = None, timeout: float = 30.0):
    """The transport for a registry URL."""
    scheme, location = parse_registry_url(url)
    if scheme == "http":
        return HttpStore(location, timeout=timeout)
    if scheme == "s3":
        bucket, _, prefix = location.partition("/")
        return S3Store(bucket, prefix, endpoint_url=endpoint_url)
    return DirStore(Path(location).expanduser())
