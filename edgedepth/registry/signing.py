"""Detached Ed25519 signatures over a bundle's manifest.json, and the full check a device runs.

`manifest.sig` holds the 64-byte Ed25519 signature over the *exact bytes* of manifest.json, written
as one line of standard base64 (a raw 64-byte file is accepted too). The manifest lists every file
with its SHA-256 and size, so a valid signature plus matching hashes authenticates the whole bundle.
Publish also writes `registry.version` into the manifest before signing, so a signed bundle cannot be
replayed under another version number.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Optional, Sequence, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgedepth.bundle import MANIFEST, SIGNATURE, verify_bundle
from edgedepth.errors import ModelError
from edgedepth.registry.keys import as_public_key, key_id

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
SIGNATURE_LEN = 64


class BundleRejected(ModelError):
    """A bundle failed authentication: unsigned, signed by another key, or a file does not match."""


def encode_signature(sig: bytes) -> bytes:
    return base64.b64encode(sig) + b"\n"


def decode_signature(data: bytes, source: str = SIGNATURE) -> bytes:
    """The raw 64-byte signature from a manifest.sig payload (base64 text or raw bytes)."""
    if len(data) == SIGNATURE_LEN:
        return data
    try:
        sig = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleRejected(f"{source} is not a base64 Ed25519 signature ({exc}); "
                             "re-publish the bundle") from exc
    if len(sig) != SIGNATURE_LEN:
        raise BundleRejected(f"{source} holds {len(sig)} bytes, an Ed25519 signature has {SIGNATURE_LEN}; "
                             "re-publish the bundle")
    return sig


def sign_bytes(data: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The manifest.sig payload (base64 line) for `data`."""
    return encode_signature(private_key.sign(data))


def sign_bundle(bundle_dir: PathLike, private_key: Ed25519PrivateKey) -> Path:
    """Write BUNDLE/manifest.sig over the current manifest.json bytes (atomically)."""
    root = Path(bundle_dir)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"{manifest_path} is missing; write the manifest (edgedepth export) before signing")
    payload = sign_bytes(manifest_path.read_bytes(), private_key)
    sig_path = root / SIGNATURE
    tmp = sig_path.with_name(f".{SIGNATURE}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, sig_path)
    return sig_path


def verify_manifest_bytes(manifest_bytes: bytes, sig_payload: Optional[bytes],
                          public_key: Ed25519PublicKey, source: str = "bundle") -> Dict[str, Any]:
    """Check the signature over the manifest bytes and parse them; raises BundleRejected with the reason."""
    if sig_payload is None:
        raise BundleRejected(f"{source} is unsigned (no {SIGNATURE}); only bundles published with "
                             "`edgedepth publish --key` are accepted")
    sig = decode_signature(sig_payload, f"{source}/{SIGNATURE}")
    try:
        public_key.verify(sig, manifest_bytes)
    except InvalidSignature:
        raise BundleRejected(
            f"{source}: {SIGNATURE} does not verify against public key {key_id(public_key)}: the manifest "
            "was modified or signed with another key; check the device's public key or re-publish"
        ) from None
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # signed but unreadable: a publisher bug
        raise BundleRejected(f"{source}: signed {MANIFEST} is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleRejected(f"{source}: signed {MANIFEST} lists no files")
    for rel in manifest["files"]:
        check_relative_path(rel, source)
    return manifest


def check_relative_path(rel: str, source: str = "bundle") -> str:
    """Refuse manifest paths that could escape the bundle directory (absolute, '..', backslashes)."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or rel in (MANIFEST, SIGNATURE) \
            or any(part in ("", ".") for part in rel.split("/")):
        raise BundleRejected(f"{source}: manifest lists an unsafe file path {rel!r}")
    return rel


def manifest_version(manifest: Dict[str, Any]) -> Optional[str]:
    reg = manifest.get("registry")
    return str(reg["version"]) if isinstance(reg, dict) and "version" in reg else None


def verify_signed_bundle(bundle_dir: PathLike, public_key: Union[Ed25519PublicKey, PathLike],
                         ignore_extra: Sequence[str] = (), expect_version: Optional[str] = None
                         ) -> Dict[str, Any]:
    """Authenticate a bundle directory and return its manifest.

    Checks, in order: manifest.sig exists and verifies over the exact manifest.json bytes; the manifest
    is for `expect_version` (when given); every listed file exists with its size and SHA-256; no
    unlisted file is present (except those matching the `ignore_extra` globs, e.g. "engines/*" for
    engines the device built itself). Raises BundleRejected naming the reason (and the file).
    """
    root = Path(bundle_dir)
    key = as_public_key(public_key)
    manifest_path, sig_path = root / MANIFEST, root / SIGNATURE
    if not manifest_path.is_file():
        raise BundleRejected(f"{root} has no {MANIFEST}: not a bundle or an interrupted download")
    manifest_bytes = manifest_path.read_bytes()
    sig_payload = sig_path.read_bytes() if sig_path.is_file() else None
    manifest = verify_manifest_bytes(manifest_bytes, sig_payload, key, str(root))
    if expect_version is not None and manifest_version(manifest) != str(expect_version):
        raise BundleRejected(f"{root}: signed manifest is for version {manifest_version(manifest)!r}, "
                             f"not {expect_version!r}; the registry index or files were swapped")
    try:
        verify_bundle(root, ignore_extra=ignore_extra)
    except BundleRejected:
        raise
    except ModelError as exc:
        raise BundleRejected(str(exc)) from exc
    return manifest


def manifest_sha256(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()
