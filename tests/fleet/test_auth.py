"""Device tokens: issued once, stored only as salted hashes, revocable; the CLI around them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgedepth.cli.main import cli
from edgedepth.errors import ConfigError
from edgedepth.fleet.auth import DeviceRegistry, bearer_token, default_auth_db
from edgedepth.fleet.ratelimit_server import DeviceRateLimiter


def test_tokens_authenticate_and_are_stored_only_as_hashes(tmp_path):
    db = tmp_path / "devices.db"
    reg = DeviceRegistry(db)
    tok_a = reg.add_device("cam-a")
    tok_b = reg.add_device("cam-b")
    assert tok_a != tok_b and len(tok_a) > 40
    assert reg.authenticate(tok_a) == "cam-a"
    assert reg.authenticate(tok_b) == "cam-b"
    assert reg.authenticate(tok_a + "x") is None
    assert reg.authenticate("") is None and reg.authenticate(None) is None
    reg.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert tok_a.encode() not in raw and tok_b.encode() not in raw
    assert (db.stat().st_mode & 0o077) == 0  # owner-only file

    # The salt lives in the database: a second registry on the same file accepts the same token.
    again = DeviceRegistry(db)
    assert again.authenticate(tok_a) == "cam-a"
    # ... and a different database (different salt) does not.
    other = DeviceRegistry(tmp_path / "other.db")
    other.add_device("cam-a")
    assert other.authenticate(tok_a) is None


def test_revoke_replace_and_bad_names(tmp_path):
    reg = DeviceRegistry(tmp_path / "d.db")
    tok = reg.add_device("cam-1")
    with pytest.raises(ConfigError, match="already has a token"):
        reg.add_device("cam-1")
    reg.revoke_device("cam-1")
    assert reg.authenticate(tok) is None
    assert reg.list_devices()[0]["revoked_at"] is not None
    tok2 = reg.add_device("cam-1")  # a revoked name may be added again, with a new token
    assert reg.authenticate(tok2) == "cam-1" and reg.authenticate(tok) is None
    tok3 = reg.add_device("cam-1", replace=True)
    assert reg.authenticate(tok3) == "cam-1" and reg.authenticate(tok2) is None
    with pytest.raises(ConfigError, match="no device named"):
        reg.revoke_device("nobody")
    for bad in ("", "a/b", "../x", "x" * 129, "sp ace"):
        with pytest.raises(ConfigError, match="bad device name"):
            reg.add_device(bad)


def test_bearer_header_and_default_db(tmp_path):
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert (
        bearer_token("Basic abc") is None and bearer_token("Bearer ") is None and bearer_token(None) is None
    )
    assert default_auth_db(str(tmp_path), None) == tmp_path / "devices.db"
    assert default_auth_db("file://" + str(tmp_path), None) == tmp_path / "devices.db"
    assert default_auth_db("s3://b/p", str(tmp_path / "x.db")) == tmp_path / "x.db"
    with pytest.raises(ConfigError, match="--auth-db"):
        default_auth_db("s3://b/p", None)


def test_cli_prints_token_once_and_lists_without_it(tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "store")
    res = runner.invoke(cli, ["ingest", "add-device", "cam-7", "--store", store])
    assert res.exit_code == 0, res.output
    token = res.stdout.strip().splitlines()[0]
    assert token.startswith("edt_")
    reg = DeviceRegistry(tmp_path / "store" / "devices.db", create=False)
    assert reg.authenticate(token) == "cam-7"
    listed = runner.invoke(cli, ["ingest", "list-devices", "--store", store])
    assert listed.exit_code == 0 and "cam-7" in listed.output and "active" in listed.output
    assert token not in listed.output
    res = runner.invoke(cli, ["ingest", "revoke-device", "cam-7", "--store", store])
    assert res.exit_code == 0, res.output
    assert reg.authenticate(token) is None  # the same open registry sees the revocation
    res = runner.invoke(cli, ["ingest", "revoke-device", "ghost", "--store", store])
    assert res.exit_code == 2 and "no device named" in res.output
    res = runner.invoke(cli, ["ingest", "add-device", "cam-8", "--store", "s3://bucket/prefix"])
    assert res.exit_code == 2 and "--auth-db" in res.output


def test_token_bucket_refills_at_the_rate():
    now = [0.0]
    lim = DeviceRateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [lim.take("a")[0] for _ in range(4)] == [True, True, True, False]
    assert lim.take("b")[0]  # buckets are per device
    ok, retry = lim.take("a")
    assert not ok and retry == 1
    now[0] += 0.5  # one token at 2/s
    assert lim.take("a") == (True, 0)
    assert not lim.take("a")[0]
    now[0] += 100.0  # refill caps at the burst
    assert [lim.take("a")[0] for _ in range(4)] == [True, True, True, False]
