"""Device side of the registry: read the index, find the promoted version, download and authenticate it.

Needs only the base install (httpx, cryptography); boto3 only for s3:// registries. A download goes to a
hidden temp directory beside its destination; the signature is checked before any model file is
fetched, every file is hashed while it streams (and cut off if it grows past its manifest size), and
only a fully verified bundle is renamed into place. A rejected bundle leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgedepth.bundle import MANIFEST, SIGNATURE
from edgedepth.fsutil import fsync_dir as _fsync_dir
from edgedepth.registry.index import (
    INDEX,
    VERSIONS_DIR,
    RegistryError,
    check_version,
    find_entry,
    parse_index,
    version_key,
)
from edgedepth.registry.keys import as_public_key
from edgedepth.registry.signing import (
    BundleRejected,
    check_relative_path,
    manifest_sha256,
    manifest_version,
    verify_manifest_bytes,
    verify_signed_bundle,
)
from edgedepth.registry.storage import RegistryUnavailable, open_store

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
# Engines a device builds inside its cached bundle are not part of the signed file set.
LOCAL_EXTRAS = ("engines/*",)


class RegistryClient:
    """Read-only access to a registry at a directory, file://, http(s):// or s3:// URL."""

    def __init__(self, url: str, timeout: float = 30.0, endpoint_url: Optional[str] = None):
        self.url = str(url)
        self.store = open_store(self.url, endpoint_url=endpoint_url, timeout=timeout)

    def index(self) -> Dict[str, Any]:
        data = self.store.read(INDEX)
        if data is None:
            raise RegistryUnavailable(f"no {INDEX} at {self.store.url}: nothing published yet, or a wrong "
                                      "registry URL")
        return parse_index(data, f"{self.store.url}/{INDEX}")

    def versions(self) -> List[Dict[str, Any]]:
        return list(self.index()["versions"])

    def latest_promoted(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """(version, index entry) of the highest promoted version, or None when none is promoted."""
        promoted = self.promoted()
        return promoted[0] if promoted else None

    def promoted(self) -> List[Tuple[str, Dict[str, Any]]]:
        """Every promoted version, newest first."""
        entries = [e for e in self.index()["versions"] if e.get("promoted")]
        entries.sort(key=lambda e: version_key(e["version"]), reverse=True)
        return [(e["version"], e) for e in entries]

    def download(self, version: str, dest_dir: PathLike,
                 public_key: Union[Ed25519PublicKey, PathLike]) -> Path:
        """Fetch and authenticate `version` into DEST_DIR/<version>; returns that directory.

        An already present copy that still verifies is reused. Raises BundleRejected (logged, nothing
        left behind) for an unsigned, wrongly signed or tampered bundle; RegistryUnavailable when the
        registry cannot be read (retry later).
        """
        v = check_version(version)
        key = as_public_key(public_key)
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        final = dest / v
        if final.exists():
            try:
                verify_signed_bundle(final, key, ignore_extra=LOCAL_EXTRAS, expect_version=v)
                return final
            except BundleRejected as exc:
                log.warning("cached bundle %s no longer verifies (%s); downloading it again", final, exc)
                shutil.rmtree(final)
        entry = find_entry(self.index(), v)
        if entry is None:
            raise RegistryError(f"version {v} is not in {self.store.url}/{INDEX}")
        tmp = Path(tempfile.mkdtemp(prefix=f".download-{v}-", dir=str(dest)))
        try:
            self._fetch_verified(v, entry, tmp, key)
            os.rename(tmp, final)
            _fsync_dir(dest)
        except BundleRejected as exc:
            log.warning("rejected version %s from %s: %s", v, self.store.url, exc)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("downloaded and verified version %s into %s", v, final)
        return final

    def _fetch_verified(self, version: str, entry: Dict[str, Any], tmp: Path, key: Ed25519PublicKey) -> None:
        prefix = f"{VERSIONS_DIR}/{version}"
        source = f"{self.store.url}/{prefix}"
        manifest_bytes = self.store.read(f"{prefix}/{MANIFEST}")
        if manifest_bytes is None:
            raise RegistryUnavailable(f"{source}/{MANIFEST} is missing; the registry is incomplete")
        sig = self.store.read(f"{prefix}/{SIGNATURE}")
        manifest = verify_manifest_bytes(manifest_bytes, sig, key, source)  # before any model file
        if manifest_version(manifest) != version:
            raise BundleRejected(f"{source}: signed manifest is for version {manifest_version(manifest)!r}, "
                                 f"not {version!r}; the registry's files were swapped")
        want = entry.get("manifest_sha256")
        if want and manifest_sha256(manifest_bytes) != want:
            raise BundleRejected(f"{source}/{MANIFEST} does not match the SHA-256 in {INDEX}; "
                                 "the index or the version was modified after publishing")
        for rel in sorted(manifest["files"]):
            meta = manifest["files"][rel]
            self._fetch_file(f"{prefix}/{check_relative_path(rel, source)}", rel, meta, tmp, source)
        for name, data in ((MANIFEST, manifest_bytes), (SIGNATURE, sig)):
            _write_synced(tmp / name, data)
        verify_signed_bundle(tmp, key, expect_version=version)  # the bytes as they landed on disk

    def _fetch_file(self, key: str, rel: str, meta: Dict[str, Any], tmp: Path, source: str) -> None:
        size = int(meta.get("size", -1))
        path = tmp.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        n = 0
        with open(path, "wb") as f:
            for chunk in self.store.iter_chunks(key):
                n += len(chunk)
                if n > size:
                    raise BundleRejected(f"{source}: '{rel}' is larger than the {size} bytes its signed "
                                         "manifest lists; the file was modified")
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if n != size:
            raise BundleRejected(f"{source}: '{rel}' has {n} bytes, its signed manifest lists {size}; "
                                 "the file was modified or truncated")
        if h.hexdigest() != meta.get("sha256"):
            raise BundleRejected(f"{source}: '{rel}' does not match the SHA-256 in its signed manifest; "
                                 "the file was modified")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
