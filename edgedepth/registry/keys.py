"""Ed25519 signing keys: generate, load, and name them.

Files written by `edgedepth keys gen --out DIR`:
- `signing.key`: the private key, PKCS8 PEM, unencrypted, file mode 0600. Keep it on the publishing
  machine only.
- `signing.pub`: the public key, SubjectPublicKeyInfo PEM. Copy it to every device.

Loading accepts a PEM file, a 32-byte raw key file, or a text file holding the raw key in base64 or hex,
so a key can also be pasted into a config.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import Tuple, Union

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgedepth.errors import ConfigError

log = logging.getLogger(__name__)

PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
PathLike = Union[str, "os.PathLike[str]"]


def generate_keypair(out_dir: PathLike, force: bool = False) -> Tuple[Path, Path]:
    """Write a new key pair into `out_dir`; refuses to overwrite an existing key unless `force`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    if not force:
        for p in (key_path, pub_path):
            if p.exists():
                raise ConfigError(f"{p} already exists; keep it, or pass --force to replace the key pair "
                                  "(devices holding the old public key will then reject new bundles)")
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(key_path, private_pem, 0o600)
    _write_new(pub_path, public_pem, 0o644)
    return key_path, pub_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file created with `mode` from the start (never world-readable), then rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits; set exactly
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_key_bytes(path: PathLike, what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        hint = "create one with `edgedepth keys gen --out DIR`" if what == "private" else \
            "copy signing.pub from the publishing machine"
        raise ConfigError(f"{what} key file {p} does not exist; {hint}")
    return p.read_bytes()


def _raw_from_text(data: bytes) -> bytes:
    if len(data) == 32:  # raw bytes, before any stripping: a key may begin or end with a whitespace byte
        return data
    text = data.strip()
    if len(text) == 32:
        return text
    for decode in (base64.b64decode, binascii.unhexlify):
        try:
            raw = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            return raw
    return b""


def load_private_key(path: PathLike) -> Ed25519PrivateKey:
    """The Ed25519 private key in `path` (PKCS8 PEM, or raw 32 bytes / base64 / hex of them)."""
    data = _read_key_bytes(path, "private")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning("private key %s is readable by other users (mode %o); chmod 600 it", path, mode)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            raw = _raw_from_text(data)
            if not raw:
                raise ValueError("not PEM and not a 32-byte raw key")
            key = Ed25519PrivateKey.from_private_bytes(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not a readable Ed25519 private key ({exc}); "
                          "generate one with `edgedepth keys gen`") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key; "
                          "generate one with `edgedepth keys gen`")
    return key


def load_public_key(path: PathLike) -> Ed25519PublicKey:
    """The Ed25519 public key in `path` (SubjectPublicKeyInfo PEM, or raw 32 bytes / base64 / hex)."""
    data = _read_key_bytes(path, "public")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            raw = _raw_from_text(data)
            if not raw:
                raise ValueError("not PEM and not a 32-byte raw key")
            key = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not a readable Ed25519 public key ({exc}); "
                          "use the signing.pub written by `edgedepth keys gen`") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def as_public_key(key: Union[Ed25519PublicKey, Ed25519PrivateKey, PathLike]) -> Ed25519PublicKey:
    """Accept a key object or a path to a public key file."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key()
    return load_public_key(key)


def key_id(key: Union[Ed25519PublicKey, Ed25519PrivateKey]) -> str:
    """A short, stable name of a key pair: the first 16 hex digits of SHA-256 of the raw public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
