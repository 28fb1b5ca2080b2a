"""Device side of the registry: verify the signed state, pick the promoted version, download and check it.

Needs only the base install (httpx, cryptography); boto3 only for s3:// registries. What a device may
install comes from the signed state.json alone (edgedepth.registry.state): its signature, expiry and
sequence (never lower than the highest this device accepted) are checked first; index.json is only
informational. A download goes to a hidden temp directory beside its destination; the manifest must
match the SHA-256 the signed state lists for that version and carry a valid signature before any model
file is fetched; every file is hashed while it streams (and cut off if it grows past its signed size),
and only a fully verified bundle is renamed into place. A rejected bundle leaves nothing behind.

Errors say what can be retried: RegistryUnavailable (unreachable, missing object) and its subclass
DownloadIncomplete (a file arrived shorter than signed: a cut connection or a partial copy) are
transient; BundleRejected (bad signature, a complete file with the wrong hash, a file larger than
signed) and StateRejected (forged, replayed or expired state) are not fixed by retrying the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgedepth.bundle import MANIFEST, SIGNATURE
from edgedepth.fsutil import fsync_dir as _fsync_dir
from edgedepth.registry.index import INDEX, VERSIONS_DIR, RegistryError, check_version, parse_index
from edgedepth.registry.keys import as_public_key, key_id
from edgedepth.registry.signing import (
    BundleRejected,
    check_relative_path,
    manifest_sha256,
    manifest_version,
    verify_manifest_bytes,
    verify_signed_bundle,
)
from edgedepth.registry.state import (
    MAX_STATE_BYTES,
    STATE,
    SignedState,
    StateRejected,  # noqa: F401 - re-exported for callers
    TrustStore,
    check_fresh,
    parse_state,
)
from edgedepth.registry.storage import MAX_READ_BYTES, RegistryUnavailable, open_store

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
# Engines a device builds inside its cached bundle are not part of the signed file set.
LOCAL_EXTRAS = ("engines/*",)
MAX_MANIFEST_BYTES = 4 << 20
MAX_SIGNATURE_BYTES = 4096


class DownloadIncomplete(RegistryUnavailable):
    """A file arrived shorter than its signed size (cut connection, partial copy): retry later."""


class RegistryClient:
    """Read-only access to a registry at a directory, file://, http(s):// or s3:// URL.

    `public_key` verifies the signed state (and, by default, bundles); `trust_path` is the file that
    remembers the highest state sequence accepted (None: this object's lifetime only); `clock` is the
    wall clock that expiry is judged by.
    """

    def __init__(self, url: str, public_key: Union[Ed25519PublicKey, PathLike, None] = None,
                 timeout: float = 30.0, endpoint_url: Optional[str] = None,
                 trust_path: Optional[PathLike] = None, clock: Callable[[], float] = time.time,
                 max_metadata_bytes: int = MAX_STATE_BYTES):
        self.url = str(url)
        self.store = open_store(self.url, endpoint_url=endpoint_url, timeout=timeout)
        self.public_key = as_public_key(public_key) if public_key is not None else None
        self.trust = TrustStore(trust_path)
        self.clock = clock
        self.max_metadata_bytes = int(max_metadata_bytes)
        self.last_state: Optional[SignedState] = None

    def _key(self, public_key=None) -> Ed25519PublicKey:
        if public_key is not None:
            return as_public_key(public_key)
        if self.public_key is None:
            raise RegistryError("a public key is needed to verify the registry: pass the signing.pub copied "
                                "from the publishing machine")
        return self.public_key

    def state(self) -> SignedState:
        """Fetch and verify the registry's signed state; refuses forged, expired and replayed states."""
        source = f"{self.store.url}/{STATE}"
        data = self.store.read(STATE, max_bytes=self.max_metadata_bytes)
        if data is None:
            raise RegistryUnavailable(
                f"no {STATE} at {self.store.url}: the registry has no signed state (a registry published "
                "by an older edgedepth, a wrong URL, or the file was deleted); no update is installed until "
                "the publisher runs `edgedepth publish --registry R --key K --resign`")
        key = self._key()
        state = parse_state(data, key, source)
        self.trust.bind_key(key_id(key))
        check_fresh(state, self.clock(), source)
        self.trust.accept(state, self.clock())
        self.last_state = state
        return state

    def index(self) -> Dict[str, Any]:
        """index.json, unverified: release notes, metrics and model details for people, not for decisions."""
        data = self.store.read(INDEX, max_bytes=MAX_READ_BYTES)
        if data is None:
            raise RegistryUnavailable(f"no {INDEX} at {self.store.url}: nothing published yet, or a wrong "
                                      "registry URL")
        return parse_index(data, f"{self.store.url}/{INDEX}")

    def versions(self) -> List[Dict[str, Any]]:
        return [r.to_json() for r in self.state().versions]

    def latest_promoted(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """(version, signed entry) of the highest promoted version, or None when none is promoted."""
        promoted = self.promoted()
        return promoted[0] if promoted else None

    def promoted(self) -> List[Tuple[str, Dict[str, Any]]]:
        """Every promoted version of the verified signed state, newest first."""
        return [(r.version, r.to_json()) for r in self.state().promoted()]

    def download(self, version: str, dest_dir: PathLike,
                 public_key: Union[Ed25519PublicKey, PathLike, None] = None) -> Path:
        """Fetch and authenticate `version` into DEST_DIR/<version>; returns that directory.

        An already present copy that still verifies is reused. Raises BundleRejected (logged, nothing
        left behind) for an unsigned, wrongly signed or tampered bundle; StateRejected when the signed
        state is refused; RegistryUnavailable / DownloadIncomplete when the registry cannot be read or a
        file arrives short (retry later).
        """
        v = check_version(version)
        key = self._key(public_key)
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
        state = self.last_state if self.last_state is not None else self.state()
        record = state.entry(v)
        if record is None:
            state = self.state()  # the cached state may predate the version
            record = state.entry(v)
        if record is None:
            raise RegistryError(f"version {v} is not in the signed state of {self.store.url} "
                                f"(sequence {state.sequence})")
        tmp = Path(tempfile.mkdtemp(prefix=f".download-{v}-", dir=str(dest)))
        try:
            self._fetch_verified(v, record.manifest_sha256, tmp, key)
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

    def _fetch_verified(self, version: str, want_sha256: str, tmp: Path, key: Ed25519PublicKey) -> None:
        prefix = f"{VERSIONS_DIR}/{version}"
        source = f"{self.store.url}/{prefix}"
        manifest_bytes = self.store.read(f"{prefix}/{MANIFEST}", max_bytes=MAX_MANIFEST_BYTES)
        if manifest_bytes is None:
            raise RegistryUnavailable(f"{source}/{MANIFEST} is missing although the signed state lists "
                                      f"version {version}; the registry is incomplete")
        if manifest_sha256(manifest_bytes) != want_sha256:
            raise BundleRejected(f"{source}/{MANIFEST} does not match the SHA-256 the signed registry state "
                                 "lists for it; the version's files were modified or swapped")
        sig = self.store.read(f"{prefix}/{SIGNATURE}", max_bytes=MAX_SIGNATURE_BYTES)
        if sig is None:
            raise DownloadIncomplete(f"{source}/{SIGNATURE} is missing although the signed state lists "
                                     f"version {version}; the registry is incomplete (retrying later)")
        manifest = verify_manifest_bytes(manifest_bytes, sig, key, source)  # before any model file
        if manifest_version(manifest) != version:
            raise BundleRejected(f"{source}: signed manifest is for version {manifest_version(manifest)!r}, "
                                 f"not {version!r}; the registry's files were swapped")
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
        info: Dict[str, int] = {}
        with open(path, "wb") as f:
            for chunk in self.store.iter_chunks(key, info):
                if info.get("length", size) != size:  # the registry holds another file than was signed
                    raise BundleRejected(f"{source}: '{rel}' is {info['length']} bytes on the registry, its "
                                         f"signed manifest lists {size}; the file was modified")
                n += len(chunk)
                if n > size:
                    raise BundleRejected(f"{source}: '{rel}' is larger than the {size} bytes its signed "
                                         "manifest lists; the file was modified")
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if info.get("length", size) != size:  # an empty object yields no chunk
            raise BundleRejected(f"{source}: '{rel}' is {info['length']} bytes on the registry, its signed "
                                 f"manifest lists {size}; the file was modified")
        if n != size:  # the object has the signed size (or did not say), but fewer bytes arrived
            raise DownloadIncomplete(f"{source}: '{rel}' arrived with {n} of the {size} bytes its signed "
                                     "manifest lists (a cut connection or a partial copy); retrying later")
        if h.hexdigest() != meta.get("sha256"):
            raise BundleRejected(f"{source}: '{rel}' does not match the SHA-256 in its signed manifest; "
                                 "the file was modified")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
