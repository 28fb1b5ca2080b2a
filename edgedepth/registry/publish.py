"""Publish a bundle into a registry (directory or S3) as a new, signed, immutable version.

Registry layout (static files; any static HTTP server or S3 bucket serves it)::

    REGISTRY/index.json                      versions, promoted flags, manifest hashes, model, metrics
    REGISTRY/versions/<V>/model.onnx         FP32
    REGISTRY/versions/<V>/model.int8.*.onnx  INT8 variants (when the bundle has them)
    REGISTRY/versions/<V>/calibration.*, metrics.json, lineage.json
    REGISTRY/versions/<V>/manifest.json      rewritten for the published file set + {"registry": {...}}
    REGISTRY/versions/<V>/manifest.sig       base64 Ed25519 signature over manifest.json

Engines (engines/*) are never published: they are specific to a GPU and TensorRT version, so each
device builds its own from the ONNX files. Write order makes readers safe without locks: a version's
files first (DIR: staged in a hidden directory and renamed into place in one step; S3: data objects,
then manifest.json, then manifest.sig), index.json last (DIR: temp file + rename).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
from edgedepth.registry.keys import key_id, load_private_key
from edgedepth.registry.signing import manifest_sha256, sign_bundle
from edgedepth.registry.storage import DirStore, HttpStore, S3Store, open_store

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


def _choose_version(store, index: Dict[str, Any], version: Optional[str]) -> str:
    existing = [e["version"] for e in index["versions"]]
    if version is None:
        v = next_version(existing)
        while _version_taken(store, v):  # left by an interrupted publish: never reuse the number
            v = next_version(existing + [v])
        return v
    v = check_version(version)
    if find_entry(index, v) is not None or _version_taken(store, v):
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


def publish_bundle(bundle_dir: PathLike, registry: str, private_key: Union[Ed25519PrivateKey, PathLike],
                   version: Optional[str] = None, promote: bool = False, notes: str = "",
                   endpoint_url: Optional[str] = None) -> Dict[str, Any]:
    """Publish `bundle_dir` as a new version of `registry`; returns the new index entry.

    The bundle must verify against its own manifest first (publishing never hides a corrupt file).
    `version` defaults to one more than the newest; a given version must be newer than all published
    ones and unused. With `promote`, devices polling the registry will pick it up.
    """
    src = Path(bundle_dir)
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    source_manifest = verify_bundle(src, ignore_extra=DEVICE_SPECIFIC)
    if MODEL_FP32 not in source_manifest["files"]:
        raise ModelError(f"bundle {src} has no {MODEL_FP32}; devices need the FP32 ONNX to run and to "
                         "build engines (run `edgedepth export` into it)")
    store = _writable_store(registry, endpoint_url)
    metrics = _read_metrics(src)
    with _publish_lock(store):
        index = parse_index(store.read(INDEX), f"{store.url}/{INDEX}")
        v = _choose_version(store, index, version)
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
        store.write(INDEX, dump_index(index))
    log.info("published %s as version %s to %s%s", src, v, store.url, " (promoted)" if promote else "")
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


def set_promoted(registry: str, version: str, promoted: bool = True,
                 endpoint_url: Optional[str] = None) -> Dict[str, Any]:
    """Flip a published version's promoted flag (promote, or withdraw a bad release); returns the index."""
    store = _writable_store(registry, endpoint_url)
    v = check_version(version)
    with _publish_lock(store):
        index = parse_index(store.read(INDEX), f"{store.url}/{INDEX}")
        entry = find_entry(index, v)
        if entry is None:
            known = ", ".join(e["version"] for e in index["versions"]) or "none"
            raise RegistryError(f"version {v} is not published in {store.url} (published: {known})")
        if not store.exists(f"{VERSIONS_DIR}/{v}/{SIGNATURE}"):
            raise RegistryError(f"{store.url}/{VERSIONS_DIR}/{v} has no {SIGNATURE}; re-publish it")
        entry["promoted"] = bool(promoted)
        entry["promoted_at" if promoted else "demoted_at"] = utc_now()
        data = dump_index(index)
        store.write(INDEX, data)
    log.info("version %s %s in %s", v, "promoted" if promoted else "withdrawn", store.url)
    return parse_index(data)
