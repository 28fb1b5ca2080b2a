"""Key generation, file modes, loading formats and the `keys gen` command."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgedepth.cli.main import cli
from edgedepth.errors import ConfigError
from edgedepth.registry.keys import generate_keypair, key_id, load_private_key, load_public_key


def test_gen_writes_private_key_0600_and_public_key(tmp_path):
    key_path, pub_path = generate_keypair(tmp_path / "k")
    assert key_path.name == "signing.key" and pub_path.name == "signing.pub"
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8 PEM
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    private, public = load_private_key(key_path), load_public_key(pub_path)
    sig = private.sign(b"hello")
    public.verify(sig, b"hello")  # raises if the pair does not match
    assert key_id(private) == key_id(public) and len(key_id(public)) == 16
    assert not list((tmp_path / "k").glob(".*tmp*")), "temp files left behind"


def test_gen_refuses_to_overwrite_without_force(tmp_path):
    key_path, pub_path = generate_keypair(tmp_path)
    before = key_path.read_bytes()
    with pytest.raises(ConfigError, match="--force"):
        generate_keypair(tmp_path)
    assert key_path.read_bytes() == before
    generate_keypair(tmp_path, force=True)
    assert key_path.read_bytes() != before
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600


def test_public_key_loads_from_raw_base64_and_hex(tmp_path):
    _, pub_path = generate_keypair(tmp_path)
    raw = load_public_key(pub_path).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    want = key_id(load_public_key(pub_path))
    for name, data in (("raw", raw), ("b64", base64.b64encode(raw) + b"\n"), ("hex", raw.hex().encode())):
        (tmp_path / name).write_bytes(data)
        assert key_id(load_public_key(tmp_path / name)) == want


def test_raw_key_that_begins_or_ends_with_a_whitespace_byte_loads(tmp_path):
    """About 1 key in 20 has a raw form that starts or ends with a whitespace byte (6 of 256 values)."""
    for i in range(1, 2000):
        pub = Ed25519PrivateKey.from_private_bytes(i.to_bytes(32, "big")).public_key()
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if raw[:1].isspace() or raw[-1:].isspace():
            break
    else:
        pytest.fail("no key with a whitespace byte at either end among 2000")
    (tmp_path / "raw").write_bytes(raw)
    assert key_id(load_public_key(tmp_path / "raw")) == key_id(pub)


def test_bad_key_files_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_public_key(tmp_path / "missing.pub")
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="not a readable Ed25519 public key"):
        load_public_key(tmp_path / "junk.pub")
    key_path, pub_path = generate_keypair(tmp_path / "k")
    with pytest.raises(ConfigError):
        load_private_key(pub_path)  # a public key is not a private key


def test_keys_gen_command(tmp_path):
    runner = CliRunner()
    out = tmp_path / "keys"
    res = runner.invoke(cli, ["keys", "gen", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "key id" in res.output
    assert stat.S_IMODE(os.stat(out / "signing.key").st_mode) == 0o600
    res = runner.invoke(cli, ["keys", "gen", "--out", str(out)])
    assert res.exit_code == 2 and "--force" in res.output
    assert runner.invoke(cli, ["keys", "gen", "--out", str(out), "--force"]).exit_code == 0
