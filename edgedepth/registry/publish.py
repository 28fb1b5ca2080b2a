"""Publish a bundle into a registry (directory or S3) as a new, signed, immutable version.

Registry layout (static files; any static HTTP server or S3 bucket serves it)::

    REGISTRY/state.json                      the signed state: versions, manifest hashes, promoted flags,
                                             sequence number, expiry (what devices act on)
    REGISTRY/index.json                      versions, promoted flags, manifest hashes, model, metrics
                                             (informational, unsigned)
    REGISTRY/versions/<V>/model.onnx         FP32
    REGISTRY/versions/<V>/model.int8.*.onnx  INT8 variants (when the bundle has them)
    REGISTRY/versions/<V>/calibration.*, metrics.json, lineage.json
    REGISTRY/versions/<V>/manifest.json      rewritten for the published file set + {"registry": {...}}
    REGISTRY/versions/<V>/manifest.sig       base64 Ed25519 signature over manifest.json

Engines (engines/*) are never published: they are specific to a GPU and TensorRT version, so each
device builds its own from the ONNX files. Write order makes readers safe without locks: a version's
files first (DIR: staged in a hidden directory and renamed into place in one step; S3: data objects,
then manifest.json, then manifest.sig), then index.json, and state.json last (DIR: temp file + rename):
a version exists for devices once the signed state lists it.

Every operation (publish, promote, withdraw, re-sign) writes a new state with the next sequence number,
built from the previous *signed* state (verified with the publisher's key), never from the unsigned
index.json: an edited index on the registry host cannot smuggle a version into what the publisher
signs. A version found in index.json but not in the signed state (an interrupted publish, or a registry
written before states were signed) is taken in only when its manifest verifies with the publisher's
key, and unpromoted unless the registry has no signed state yet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgedepth.bundle import MANIFEST, METRICS, MODEL_FP32, SIGNATURE, verify_bundle, write_manifest
from edgedepth.errors import ConfigError, ModelError
from edgedepth.fsutil import fsync_dir as _fsync_dir
from edgedepth.registry.index import (
    INDEX,
    VERSIONS_DIR,
    RegistryError,
    check_version,
    dump_index,
    find_entry,
    next_version,
    parse_index,
    utc_now,
    version_key,
)
from edgedepth.registry.keys import as_public_key, key_id, load_private_key
from edgedepth.registry.signing import BundleRejected, manifest_sha256, sign_bundle, verify_manifest_bytes
from edgedepth.registry.state import (
    DEFAULT_EXPIRES_S,
    MAX_STATE_BYTES,
    STATE,
    SignedState,
    StateRejected,
    VersionRecord,
    parse_state,
    sign_state,
)
from edgedepth.registry.storage import DirStore, HttpStore, RegistryUnavailable, S3Store, open_store

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
# Files a device builds for itself and that are therefore never published.
DEVICE_SPECIFIC = ("engines/*",)
LOCK_FILE = ".publish.lock"


def _writable_store(registry: str, endpoint_url: Optional[str]):
    store = open_store(registry, endpoint_url=endpoint_url)
    if isinstance(store, HttpStore):
        raise ConfigError(f"{registry} is an HTTP URL and HTTP registries are read-only; publish to the "
                          "directory or s3:// bucket that the web server serves")
    return store


@contextlib.contextmanager
def _publish_lock(store) -> Iterator[None]:
    """Serialise publishers on a DIR registry (flock). S3 registries assume one publisher at a time."""
    if not isinstance(store, DirStore):
        yield
        return
    import fcntl

    store.root.mkdir(parents=True, exist_ok=True)
    with open(store.root / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _version_taken(store, version: str) -> bool:
    if isinstance(store, DirStore):
        return (store.root / VERSIONS_DIR / version).exists()
    return store.exists(f"{VERSIONS_DIR}/{version}/{MANIFEST}") or \
        store.exists(f"{VERSIONS_DIR}/{version}/{SIGNATURE}")


def _choose_version(store, index: Dict[str, Any], version: Optional[str], signed: Iterable[str] = ()) -> str:
    existing = sorted({e["version"] for e in index["versions"]} | set(signed), key=version_key)
    if version is None:
        v = next_version(existing)
        while _version_taken(store, v):  # left by an interrupted publish: never reuse the number
            v = next_version(existing + [v])
        return v
    v = check_version(version)
    if v in existing or _version_taken(store, v):
        raise RegistryError(f"version {v} already exists in {store.url}; published versions are immutable, "
                            f"publish as {next_version(existing + [v])} instead")
    if existing and version_key(v) <= version_key(max(existing, key=version_key)):
        top = max(existing, key=version_key)
        raise RegistryError(f"version {v} is not newer than the latest version {top} in {store.url}; "
                            "versions must increase (leave --version out to take the next one)")
    return v


def _stage(bundle_dir: Path, stage: Path, source_manifest: Dict[str, Any], version: str,
           private_key: Ed25519PrivateKey, notes: str) -> Dict[str, Any]:
    """Copy the publishable files into `stage`, rewrite the manifest for them, and sign it."""
    import fnmatch

    for rel in source_manifest["files"]:
        if any(fnmatch.fnmatch(rel, pat) for pat in DEVICE_SPECIFIC):
            continue
        dst = stage.joinpath(*rel.split("/"))
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle_dir / rel, dst)
    shutil.copyfile(bundle_dir / MANIFEST, stage / MANIFEST)  # write_manifest keeps its extra keys
    registry_info = {"version": version, "published_at": utc_now(), "key_id": key_id(private_key)}
    if notes:
        registry_info["notes"] = notes
    manifest = write_manifest(stage, extra={"registry": registry_info})
    sign_bundle(stage, private_key)
    return manifest


def _read_metrics(bundle_dir: Path) -> Dict[str, Any]:
    path = bundle_dir / METRICS
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not JSON ({exc}); fix or remove it, then re-run export") from exc
    return metrics if isinstance(metrics, dict) else {"value": metrics}


PrivateKeyLike = Union[Ed25519PrivateKey, PathLike]
PublicKeyLike = Union[Ed25519PublicKey, PathLike, None]


def _private(key: PrivateKeyLike) -> Ed25519PrivateKey:
    return key if isinstance(key, Ed25519PrivateKey) else load_private_key(key)


def _load_state(store, key: Ed25519PrivateKey, previous_key: PublicKeyLike) -> Optional[SignedState]:
    """The registry's current signed state, verified with the publisher's (or the previous) key."""
    data = store.read(STATE, max_bytes=MAX_STATE_BYTES)
    if data is None:
        return None
    source = f"{store.url}/{STATE}"
    try:
        return parse_state(data, key.public_key(), source)
    except StateRejected as exc:
        if previous_key is None:
            raise RegistryError(
                f"{exc}. The publisher signs only on top of a state it can verify: restore {STATE} from a "
                "backup, or, after a key rotation, pass the old public key (--previous-key); without a "
                "backup, `--resign --rebuild` rebuilds it from index.json") from None
    return parse_state(data, as_public_key(previous_key), source)


def _signed_manifest_sha(store, version: str, key: Ed25519PrivateKey) -> str:
    """SHA-256 of a published version's manifest, after checking its signature with `key`."""
    prefix = f"{VERSIONS_DIR}/{version}"
    manifest_bytes = store.read(f"{prefix}/{MANIFEST}")
    if manifest_bytes is None:
        raise RegistryUnavailable(f"{store.url}/{prefix}/{MANIFEST} is missing")
    manifest = verify_manifest_bytes(manifest_bytes, store.read(f"{prefix}/{SIGNATURE}"), key.public_key(),
                                     f"{store.url}/{prefix}")
    reg = manifest.get("registry")
    if not isinstance(reg, dict) or str(reg.get("version")) != version:
        raise BundleRejected(f"{store.url}/{prefix}: signed manifest is not for version {version}")
    return manifest_sha256(manifest_bytes)


def _unverified_sequence(store) -> int:
    """The sequence number state.json claims, unchecked (0 when unreadable): only for --rebuild."""
    try:
        envelope = json.loads((store.read(STATE, max_bytes=MAX_STATE_BYTES) or b"{}").decode("utf-8"))
        sequence = json.loads(envelope["signed"])["sequence"]
        return sequence if isinstance(sequence, int) and sequence > 0 else 0
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return 0


def _current_records(store, index: Dict[str, Any], key: Ed25519PrivateKey,
                     previous_key: PublicKeyLike = None, rebuild: bool = False
                     ) -> Tuple[Dict[str, VersionRecord], int]:
    """(version -> record, next sequence number) to build the next signed state on."""
    prev = None if rebuild else _load_state(store, key, previous_key)
    records = {r.version: r for r in prev.versions} if prev is not None else {}
    for entry in index["versions"]:
        v = entry["version"]
        if v in records:
            continue
        try:
            sha = _signed_manifest_sha(store, v, key)
        except (BundleRejected, RegistryUnavailable) as exc:
            log.warning("version %s is in %s but not signed into the registry state, and its files do not "
                        "verify with this key (%s); leaving it out", v, INDEX, exc)
            continue
        promoted = bool(entry.get("promoted")) if prev is None else False
        records[v] = VersionRecord(v, sha, promoted)
        log.warning("version %s was not in the signed registry state; its signed manifest verifies, so it is "
                    "added%s", v, " (promoted as index.json says: first signed state)" if promoted else
                    " unpromoted (promote it explicitly if it should be)")
    if rebuild:
        promoted = sorted((r.version for r in records.values() if r.promoted), key=version_key)
        log.warning("rebuilding the signed state from %s: every version's signature was checked, but the "
                    "promotions are taken from the unsigned index: %s; check them", INDEX,
                    ", ".join(promoted) or "none promoted")
        return records, _unverified_sequence(store) + 1
    return records, (prev.sequence + 1 if prev is not None else 1)


def _commit(store, index: Dict[str, Any], records: Dict[str, VersionRecord], sequence: int,
            key: Ed25519PrivateKey, expires_s: float) -> SignedState:
    """Write index.json (promoted flags as signed) and then the new signed state.json."""
    for entry in index["versions"]:
        rec = records.get(entry["version"])
        if rec is not None:
            entry["promoted"] = rec.promoted
    state = sign_state(list(records.values()), sequence, key, expires_s=expires_s)
    store.write(INDEX, dump_index(index))
    store.write(STATE, state.raw)
    return state


def publish_bundle(bundle_dir: PathLike, registry: str, private_key: PrivateKeyLike,
                   version: Optional[str] = None, promote: bool = False, notes: str = "",
                   endpoint_url: Optional[str] = None, expires_s: float = DEFAULT_EXPIRES_S,
                   previous_key: PublicKeyLike = None) -> Dict[str, Any]:
    """Publish `bundle_dir` as a new version of `registry`; returns the new index entry.

    The bundle must verify against its own manifest first (publishing never hides a corrupt file).
    `version` defaults to one more than the newest; a given version must be newer than all published
    ones and unused. With `promote`, devices polling the registry will pick it up. The registry's new
    signed state expires `expires_s` seconds from now (re-sign before then: `resign_state`).
    """
    src = Path(bundle_dir)
    key = _private(private_key)
    source_manifest = verify_bundle(src, ignore_extra=DEVICE_SPECIFIC)
    if MODEL_FP32 not in source_manifest["files"]:
        raise ModelError(f"bundle {src} has no {MODEL_FP32}; devices need the FP32 ONNX to run and to "
                         "build engines (run `edgedepth export` into it)")
    store = _writable_store(registry, endpoint_url)
    metrics = _read_metrics(src)
    with _publish_lock(store):
        index = parse_index(store.read(INDEX), f"{store.url}/{INDEX}")
        records, sequence = _current_records(store, index, key, previous_key)
        v = _choose_version(store, index, version, signed=records)
        if v in records:
            raise RegistryError(f"version {v} is already in the signed state of {store.url}; versions are "
                                "immutable, publish a newer one")
        with tempfile.TemporaryDirectory(prefix=f".staging-{v}-", dir=_staging_parent(store)) as tmp:
            stage = Path(tmp) / "bundle"
            stage.mkdir()
            manifest = _stage(src, stage, source_manifest, v, key, notes)
            manifest_bytes = (stage / MANIFEST).read_bytes()
            _store_version(store, stage, v, manifest)
        entry = {
            "version": v,
            "created_at": manifest["registry"]["published_at"],
            "promoted": bool(promote),
            "manifest_sha256": manifest_sha256(manifest_bytes),
            "key_id": key_id(key),
            "files": len(manifest["files"]) + 2,
            "size_bytes": sum(int(f["size"]) for f in manifest["files"].values()),
            "model": manifest.get("model", {}),
            "metrics": metrics,
        }
        if notes:
            entry["notes"] = notes
        index["versions"].append(entry)
        records[v] = VersionRecord(v, entry["manifest_sha256"], bool(promote))
        state = _commit(store, index, records, sequence, key, expires_s)
    log.info("published %s as version %s to %s%s (state sequence %d, expires %s)", src, v, store.url,
             " (promoted)" if promote else "", state.sequence, state.expires)
    return entry


def _staging_parent(store) -> Optional[str]:
    """DIR registries stage beside the final place (same filesystem, so the rename is atomic)."""
    if isinstance(store, DirStore):
        parent = store.root / VERSIONS_DIR
        parent.mkdir(parents=True, exist_ok=True)
        return str(parent)
    return None


def _store_version(store, stage: Path, version: str, manifest: Dict[str, Any]) -> None:
    prefix = f"{VERSIONS_DIR}/{version}"
    if isinstance(store, DirStore):
        final = store.root / VERSIONS_DIR / version
        if final.exists():  # checked under the lock already; a last guard against a racing non-locker
            raise RegistryError(f"{final} appeared while publishing; versions are immutable, retry")
        os.rename(stage, final)
        _fsync_dir(final.parent)
        return
    if not isinstance(store, S3Store):  # pragma: no cover - open_store returns one of the three
        raise ConfigError(f"cannot publish to {store.url}")
    # Data first, then the manifest, then the signature: a reader never sees a signed, incomplete version.
    for rel in sorted(manifest["files"]):
        store.write_file(f"{prefix}/{rel}", stage / rel)
    store.write(f"{prefix}/{MANIFEST}", (stage / MANIFEST).read_bytes())
    store.write(f"{prefix}/{SIGNATURE}", (stage / SIGNATURE).read_bytes())


def set_promoted(registry: str, version: str, promoted: bool = True, endpoint_url: Optional[str] = None,
                 *, private_key: PrivateKeyLike, expires_s: float = DEFAULT_EXPIRES_S,
                 previous_key: PublicKeyLike = None) -> Dict[str, Any]:
    """Promote a published version, or withdraw its promotion, in a newly signed state; returns the index."""
    store = _writable_store(registry, endpoint_url)
    key = _private(private_key)
    v = check_version(version)
    with _publish_lock(store):
        index = parse_index(store.read(INDEX), f"{store.url}/{INDEX}")
        records, sequence = _current_records(store, index, key, previous_key)
        if v not in records:
            known = ", ".join(sorted(records, key=version_key)) or "none"
            raise RegistryError(f"version {v} is not published in {store.url} "
                                f"(published and signed: {known})")
        records[v] = replace(records[v], promoted=bool(promoted))
        entry = find_entry(index, v)
        if entry is None:
            log.warning("version %s is in the signed state but not in %s (edited or lost); the signed "
                        "state decides, the index only describes", v, INDEX)
        else:
            entry["promoted_at" if promoted else "demoted_at"] = utc_now()
        state = _commit(store, index, records, sequence, key, expires_s)
    log.info("version %s %s in %s (state sequence %d, expires %s)", v,
             "promoted" if promoted else "withdrawn", store.url, state.sequence, state.expires)
    return parse_index(dump_index(index))


def resign_state(registry: str, private_key: PrivateKeyLike, expires_s: float = DEFAULT_EXPIRES_S,
                 endpoint_url: Optional[str] = None, previous_key: PublicKeyLike = None,
                 rebuild: bool = False) -> SignedState:
    """Sign the registry's current state again with a new expiry and the next sequence number.

    Nothing else changes. Run it regularly (a timer, well inside the expiry): devices refuse an expired
    state, which is what protects them from a registry frozen in time. `rebuild` is the recovery when
    state.json was damaged and no backup exists: the state is rebuilt from index.json (each version
    checked against its signed manifest; promotions as the index says) and numbered after the sequence
    the damaged file claims, so devices that saw it accept the new one.
    """
    store = _writable_store(registry, endpoint_url)
    key = _private(private_key)
    with _publish_lock(store):
        index = parse_index(store.read(INDEX), f"{store.url}/{INDEX}")
        records, sequence = _current_records(store, index, key, previous_key, rebuild=rebuild)
        if not records:
            raise RegistryError(f"{store.url} has no published versions to sign; publish one first")
        state = _commit(store, index, records, sequence, key, expires_s)
    log.info("re-signed %s: state sequence %d, expires %s", store.url, state.sequence, state.expires)
    return state


def read_state(registry: str, public_key: PublicKeyLike, endpoint_url: Optional[str] = None
               ) -> Optional[SignedState]:
    """The registry's signed state, verified with `public_key` (None when it has none yet)."""
    store = open_store(registry, endpoint_url=endpoint_url)
    data = store.read(STATE, max_bytes=MAX_STATE_BYTES)
    return None if data is None else parse_state(data, as_public_key(public_key), f"{store.url}/{STATE}")
