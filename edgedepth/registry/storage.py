"""Where a registry lives: a local directory (or file://), an http(s):// static server, or s3://bucket/prefix.

A registry is plain static files, so every transport only needs "read an object" (and, for publishing,
"write an object"). Keys are POSIX relative paths such as "index.json" or "versions/3/model.onnx".
boto3 is imported only for s3:// URLs; httpx only for http(s)://.

Every whole-object read takes a size cap (`max_bytes`, default MAX_READ_BYTES): the object is streamed
and refused with ObjectTooLarge as soon as it (or its declared length) passes the cap, so a hostile or
broken registry cannot make a device hold an arbitrarily large file in memory. Model files are never
read whole: they are streamed to disk and cut off at their signed size (edgedepth.registry.client).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Optional, Tuple
from urllib.parse import unquote, urlparse

from edgedepth.errors import ConfigError, EdgeDepthError
from edgedepth.fsutil import write_bytes_atomic
from edgedepth.s3 import S3Objects

CHUNK = 1 << 20
MAX_READ_BYTES = 8 << 20  # metadata (state.json, index.json, manifest.json) is far smaller


class RegistryUnavailable(EdgeDepthError):
    """The registry could not be reached or an object is missing; retrying later may succeed."""


class ObjectTooLarge(EdgeDepthError):
    """A registry object is larger than the reader's cap; it was not read."""


def read_capped(chunks: Iterable[bytes], max_bytes: Optional[int], declared: Optional[int],
                what: str) -> bytes:
    """Join `chunks`, refusing (ObjectTooLarge) once more than `max_bytes` arrive or are announced."""
    cap = MAX_READ_BYTES if max_bytes is None else int(max_bytes)

    def too_large(size: str) -> ObjectTooLarge:
        return ObjectTooLarge(f"{what} is {size}, more than the {cap} bytes allowed; not reading it (a "
                              "broken or hostile registry; check what is served at that address)")

    if declared is not None and int(declared) > cap:
        raise too_large(f"{int(declared)} bytes")
    parts, n = [], 0
    for chunk in chunks:
        n += len(chunk)
        if n > cap:
            raise too_large("larger")
        parts.append(chunk)
    return b"".join(parts)


class DirStore:
    """A registry in a local (or network-mounted) directory."""

    scheme = "dir"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def read(self, key: str, max_bytes: Optional[int] = None) -> Optional[bytes]:
        p = self.path(key)
        try:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                return read_capped(iter(lambda: f.read(CHUNK), b""), max_bytes, size, str(p))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryUnavailable(f"cannot read {p}: {exc}") from exc

    def iter_chunks(self, key: str, info: Optional[dict] = None) -> Iterator[bytes]:
        """The object's bytes in chunks; `info["length"]` is set to its size when the transport says it."""
        p = self.path(key)
        try:
            f = open(p, "rb")
        except FileNotFoundError:
            raise RegistryUnavailable(f"registry object {p} is missing") from None
        except OSError as exc:
            raise RegistryUnavailable(f"cannot read {p}: {exc}") from exc
        with f:
            if info is not None:
                info["length"] = os.fstat(f.fileno()).st_size
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

    def read(self, key: str, max_bytes: Optional[int] = None) -> Optional[bytes]:
        import httpx

        url = self._url(key)
        try:
            with self._http().stream("GET", url) as resp:
                if resp.status_code == 404:
                    return None
                if resp.status_code != 200:
                    raise RegistryUnavailable(f"GET {url} returned HTTP {resp.status_code}")
                length = resp.headers.get("content-length")
                declared = int(length) if length and length.isdigit() else None
                return read_capped(resp.iter_bytes(CHUNK), max_bytes, declared, url)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"GET {url} failed: {exc}") from exc

    def iter_chunks(self, key: str, info: Optional[dict] = None) -> Iterator[bytes]:
        import httpx

        try:
            with self._http().stream("GET", self._url(key)) as resp:
                if resp.status_code != 200:
                    raise RegistryUnavailable(f"GET {self._url(key)} returned HTTP {resp.status_code}")
                length = resp.headers.get("content-length")
                if info is not None and length and length.isdigit() and \
                        "content-encoding" not in resp.headers:
                    info["length"] = int(length)
                yield from resp.iter_bytes(CHUNK)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"GET {self._url(key)} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        import httpx

        try:
            with self._http().stream("GET", self._url(key)) as resp:
                if resp.status_code == 404:
                    return False
                if resp.status_code != 200:
                    raise RegistryUnavailable(f"GET {self._url(key)} returned HTTP {resp.status_code}")
                return True
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"GET {self._url(key)} failed: {exc}") from exc

    def write(self, key: str, data: bytes) -> None:
        raise ConfigError(f"{self.url} is an HTTP registry (read-only); publish to its directory or "
                          "S3 bucket and let the web server serve it")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class S3Store(S3Objects):
    """A registry under s3://bucket/prefix (AWS or any S3-compatible endpoint), via edgedepth.s3."""

    scheme = "s3"
    unavailable_error = RegistryUnavailable

    def __init__(self, bucket: str, prefix: str, endpoint_url: Optional[str] = None, client=None):
        endpoint = endpoint_url or os.environ.get("EDGEDEPTH_S3_ENDPOINT_URL") or None
        self._init_s3(bucket, prefix, endpoint, client=client)
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def read(self, key: str, max_bytes: Optional[int] = None) -> Optional[bytes]:
        obj = self._open(self._key(key))
        if obj is None:
            return None
        body = obj["Body"]
        try:
            return read_capped(self._iter_body(key, obj, CHUNK), max_bytes, obj.get("ContentLength"),
                               f"{self.url}/{key}")
        finally:
            body.close()

    def iter_chunks(self, key: str, info: Optional[dict] = None) -> Iterator[bytes]:
        obj = self._open(self._key(key))
        if obj is None:
            raise RegistryUnavailable(f"registry object {self.url}/{key} is missing")
        if info is not None and obj.get("ContentLength") is not None:
            info["length"] = int(obj["ContentLength"])
        try:
            yield from self._iter_body(key, obj, CHUNK)
        finally:
            obj["Body"].close()

    def exists(self, key: str) -> bool:
        return self._exists(self._key(key))

    def write(self, key: str, data: bytes) -> None:
        ctype = "application/json" if key.endswith(".json") else "application/octet-stream"
        self._put(self._key(key), data, create_only=False, content_type=ctype)

    def write_file(self, key: str, path: Path) -> None:
        """Upload a local file (boto3 switches to multipart for large ones)."""
        self._upload_file(self._key(key), path)


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
