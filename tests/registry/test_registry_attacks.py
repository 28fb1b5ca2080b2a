"""Attacks on the update path, against a real registry served by a real HTTP server process on loopback.

A registry host (or anyone between it and the device) that cannot sign: edits index.json to promote a
version the publisher never promoted, replays an older signed state, serves a state past its expiry,
deletes entries, cuts downloads short, serves a huge metadata file. Devices must refuse what was not
signed, say so in the log, never install an older model, retry what was only a transport failure, and
stay within bounded memory.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from edgedepth.registry.publish import publish_bundle, resign_state, set_promoted
from edgedepth.registry.state import STATE
from edgedepth.registry.updater import ModelUpdater

UPDATER_LOG = "edgedepth.registry.updater"


def device(url, keys, tmp_path, name="dev", current=None, **kw):
    return ModelUpdater(url, keys[1], tmp_path / name, current_version=current, poll_every_s=0.0, **kw)


def edit_index(root, change):
    path = root / "index.json"
    index = json.loads(path.read_text())
    change(index)
    path.write_text(json.dumps(index))


def test_edited_index_promoting_another_version_is_refused(bundle, keys, http_registry, tmp_path, caplog):
    root, url = http_registry
    publish_bundle(bundle, str(root), keys[0], promote=True)   # 1: promoted by the gate
    publish_bundle(bundle, str(root), keys[0])                 # 2: published, never promoted

    def promote_2(index):
        for e in index["versions"]:
            e["promoted"] = e["version"] == "2"
        index["latest_promoted"] = "2"

    edit_index(root, promote_2)
    dev = device(url, keys, tmp_path)
    path = dev.poll(now=0.0)
    assert path is not None and path.name == "1", "the device installed a version the gate never promoted"
    dev.confirm("1")
    assert not (tmp_path / "dev" / "versions" / "2").exists()

    # The same edit inside state.json, without the key, breaks its signature: refused and logged.
    state = json.loads((root / STATE).read_text())
    state["signed"] = state["signed"].replace('"promoted":false', '"promoted":true')
    (root / STATE).write_text(json.dumps(state))
    with caplog.at_level(logging.ERROR, logger=UPDATER_LOG):
        assert dev.poll(now=10.0) is None
    assert "signature does not verify" in caplog.text and dev.current_version == "1"
    assert "2" not in dev.bad_versions  # nothing was downloaded: the state was refused first


def test_replayed_older_signed_state_is_refused_even_after_restart(bundle, keys, http_registry, tmp_path,
                                                                   caplog):
    root, url = http_registry
    publish_bundle(bundle, str(root), keys[0], promote=True)
    old_state, old_index = (root / STATE).read_bytes(), (root / "index.json").read_bytes()
    publish_bundle(bundle, str(root), keys[0], promote=True)
    dev = device(url, keys, tmp_path)
    dev.confirm(dev.poll(now=0.0).name)
    assert dev.current_version == "2"
    trust = json.loads((tmp_path / "dev" / "registry_trust.json").read_text())
    assert trust["sequence"] == 2 and trust["latest_promoted"] == "2"

    # The host rolls the registry back to the old, validly signed state (and index).
    (root / STATE).write_bytes(old_state)
    (root / "index.json").write_bytes(old_index)
    restarted = device(url, keys, tmp_path, current="2")  # the highest sequence seen survives a restart
    with caplog.at_level(logging.ERROR, logger=UPDATER_LOG):
        assert restarted.poll(now=0.0) is None
    assert "sequence 1 is older than sequence 2" in caplog.text

    # A different state carrying the sequence already accepted is refused too.
    caplog.clear()
    for _ in range(2):
        publish_bundle(bundle, str(tmp_path / "other"), keys[0], promote=True, notes="other")
    (root / STATE).write_bytes((tmp_path / "other" / STATE).read_bytes())
    with caplog.at_level(logging.ERROR, logger=UPDATER_LOG):
        assert restarted.poll(now=1.0) is None
    assert "a different state carries sequence 2" in caplog.text
    assert restarted.current_version == "2"


def test_expired_state_is_refused_until_resigned(bundle, keys, http_registry, tmp_path, caplog):
    root, url = http_registry
    publish_bundle(bundle, str(root), keys[0], promote=True, expires_s=3600)
    later = {"t": time.time() + 7200}  # the device's wall clock, two hours on
    dev = device(url, keys, tmp_path, wall_clock=lambda: later["t"])
    with caplog.at_level(logging.ERROR, logger=UPDATER_LOG):
        assert dev.poll(now=0.0) is None
    assert "expired at" in caplog.text and "--resign" in caplog.text
    assert not (tmp_path / "dev" / "versions" / "1").exists()

    # The publisher's timer re-signs (no new version): the same device accepts the fresh state.
    state = resign_state(str(root), keys[0], expires_s=7 * 86400)
    assert state.sequence == 2
    path = dev.poll(now=1.0)
    assert path is not None and path.name == "1"


def test_deleted_entries_do_not_freeze_devices_silently(bundle, keys, http_registry, tmp_path, caplog):
    root, url = http_registry
    publish_bundle(bundle, str(root), keys[0], promote=True)
    dev = device(url, keys, tmp_path)
    dev.confirm(dev.poll(now=0.0).name)
    publish_bundle(bundle, str(root), keys[0], promote=True)

    # Deleting version 2 from the unsigned index changes nothing: the signed state promotes it.
    edit_index(root, lambda index: index.update(versions=[e for e in index["versions"]
                                                          if e["version"] != "2"], latest_promoted="1"))
    path = dev.poll(now=1.0)
    assert path is not None and path.name == "2"
    dev.confirm("2")

    # Deleting entries from the signed state breaks it: refused with an error, not a quiet "up to date".
    publish_bundle(bundle, str(root), keys[0], promote=True)
    state = json.loads((root / STATE).read_text())
    payload = json.loads(state["signed"])
    payload["versions"] = [v for v in payload["versions"] if v["version"] != "3"]
    state["signed"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    (root / STATE).write_text(json.dumps(state))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger=UPDATER_LOG):
        assert dev.poll(now=2.0) is None
    assert "model updates refused" in caplog.text and "signature does not verify" in caplog.text

    # Deleting state.json altogether: a clear message naming the missing file and the fix.
    (root / STATE).unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=UPDATER_LOG):
        assert dev.poll(now=3.0) is None
    assert "no state.json" in caplog.text and "--resign" in caplog.text


def test_partial_download_is_retried_with_backoff_then_succeeds(bundle, keys, flaky_registry, tmp_path,
                                                                caplog):
    root, url = flaky_registry("model.onnx", 2)  # the first two downloads of model.onnx are cut short
    publish_bundle(bundle, str(root), keys[0], promote=True)
    dev = device(url, keys, tmp_path, retry_base_s=10.0)
    with caplog.at_level(logging.WARNING, logger=UPDATER_LOG):
        assert dev.poll(now=0.0) is None
    assert "download of version 1 failed (attempt 1)" in caplog.text and "retrying in 10 s" in caplog.text
    assert "1" not in dev.bad_versions, "a cut download is not a verdict on the version"
    assert not [p for p in (tmp_path / "dev" / "versions").iterdir()], "a partial download was left behind"
    assert dev.poll(now=5.0) is None          # backing off: not tried
    assert dev.poll(now=10.0) is None         # second cut: next try 20 s later
    assert "attempt 2" in caplog.text and "retrying in 20 s" in caplog.text
    assert dev.poll(now=29.0) is None
    path = dev.poll(now=30.0)
    assert path is not None and path.name == "1" and not dev.bad_versions
    assert (path / "model.onnx").read_bytes() == (bundle / "model.onnx").read_bytes()


def test_tampered_complete_file_is_still_rejected_for_good(bundle, keys, http_registry, tmp_path):
    root, url = http_registry
    publish_bundle(bundle, str(root), keys[0], promote=True)
    model = root / "versions" / "1" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[10] ^= 0xFF
    model.write_bytes(bytes(data))
    dev = device(url, keys, tmp_path)
    assert dev.poll(now=0.0) is None
    assert "1" in dev.bad_versions and "SHA-256" in dev.bad_versions["1"]["reason"]


READ_AND_MEASURE = """
import json, sys
from edgedepth.bench.memory import peak_rss_mb
from edgedepth.registry.storage import open_store
try:
    data = open_store(sys.argv[1]).read(sys.argv[2])
    outcome = f"read {len(data)} bytes"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
peak_mb = peak_rss_mb()  # VmHWM: ru_maxrss keeps the parent's peak across exec
print(json.dumps({"outcome": outcome, "maxrss_mb": peak_mb}))
"""


def test_oversized_metadata_is_refused_with_bounded_memory(bundle, keys, http_registry, tmp_path):
    root, url = http_registry
    publish_bundle(bundle, str(root), keys[0], promote=True)
    for name in ("index.json", STATE):  # 256 MiB each, sparse: no disk is spent on the zeros
        with open(root / name, "wb") as f:
            f.truncate(256 << 20)
    out = subprocess.run([sys.executable, "-c", READ_AND_MEASURE, url, "index.json"], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["outcome"].startswith("ObjectTooLarge") and "index.json" in result["outcome"], result
    assert result["maxrss_mb"] < 160, f"reading a 256 MiB index took {result['maxrss_mb']:.0f} MiB"

    from edgedepth.registry.client import RegistryClient
    from edgedepth.registry.storage import ObjectTooLarge

    with pytest.raises(ObjectTooLarge, match="state.json"):
        RegistryClient(url, keys[1]).promoted()
    dev = device(url, keys, tmp_path)
    assert dev.poll(now=0.0) is None  # logged, never raised into the live loop


def test_demotion_is_signed_and_never_downgrades_a_device(bundle, keys, http_registry, tmp_path):
    root, url = http_registry
    publish_bundle(bundle, str(root), keys[0], promote=True)
    publish_bundle(bundle, str(root), keys[0], promote=True)
    dev = device(url, keys, tmp_path)
    dev.confirm(dev.poll(now=0.0).name)
    set_promoted(str(root), "2", promoted=False, private_key=keys[0])  # withdrawn: newest promoted is 1
    assert dev.poll(now=1.0) is None and dev.current_version == "2"
    fresh = device(url, keys, tmp_path, name="fresh")
    assert fresh.poll(now=0.0).name == "1"


def test_every_transport_caps_whole_reads(tmp_path):
    from edgedepth.registry.storage import ObjectTooLarge, open_store, read_capped

    (tmp_path / "big.json").write_bytes(b"x" * 5000)
    store = open_store(str(tmp_path))
    assert len(store.read("big.json", max_bytes=5000)) == 5000
    with pytest.raises(ObjectTooLarge, match="big.json"):
        store.read("big.json", max_bytes=4999)
    # a stream that never says its length is cut off as soon as it passes the cap
    endless = (b"y" * 1000 for _ in range(10 ** 9))
    with pytest.raises(ObjectTooLarge, match="endless"):
        read_capped(endless, 10_000, None, "endless")


def test_key_rotation_continues_the_sequence(bundle, keys, http_registry, tmp_path, caplog):
    from edgedepth.registry.index import RegistryError
    from edgedepth.registry.keys import generate_keypair

    root, url = http_registry
    publish_bundle(bundle, str(root), keys[0], promote=True)
    publish_bundle(bundle, str(root), keys[0], promote=True)
    new_key, new_pub = generate_keypair(tmp_path / "new-keys")
    with pytest.raises(RegistryError, match="--previous-key"):  # it cannot verify what it would build on
        resign_state(str(root), new_key)
    state = resign_state(str(root), new_key, previous_key=keys[1])
    assert state.sequence == 3
    old_device = device(url, keys, tmp_path, name="old")
    with caplog.at_level(logging.ERROR, logger=UPDATER_LOG):
        assert old_device.poll(now=0.0) is None
    assert "signature does not verify" in caplog.text
    # A device given the new public key accepts the state, continuing the sequence; bundles signed with
    # the old key are refused, so the first version signed with the new key is what it installs.
    new_device = ModelUpdater(url, new_pub, tmp_path / "old", poll_every_s=0.0)  # same cache, new key
    assert new_device.client.state().sequence == 3
    publish_bundle(bundle, str(root), new_key, promote=True)
    path = new_device.poll(now=0.0)
    assert path is not None and path.name == "3"


def test_damaged_state_blocks_the_publisher_until_rebuilt(bundle, keys, http_registry, tmp_path):
    from click.testing import CliRunner

    from edgedepth.cli.main import cli

    root, url = http_registry
    publish_bundle(bundle, str(root), keys[0], promote=True)
    publish_bundle(bundle, str(root), keys[0])
    dev = device(url, keys, tmp_path)
    dev.confirm(dev.poll(now=0.0).name)  # has seen sequence 2
    state = json.loads((root / STATE).read_text())
    state["signed"] = state["signed"].replace('"promoted":false', '"promoted":true')
    (root / STATE).write_text(json.dumps(state))  # damaged on the host
    runner = CliRunner()
    base = ["publish", "--registry", str(root), "--key", str(keys[0])]
    res = runner.invoke(cli, base + ["--promote-only", "2"])
    assert res.exit_code == 2 and "--rebuild" in res.output  # never signs on top of what it cannot verify
    res = runner.invoke(cli, base + ["--resign", "--rebuild", "--expires", "2d"])
    assert res.exit_code == 0 and "sequence 3" in res.output and "promoted 1" in res.output, res.output
    res = runner.invoke(cli, ["publish", "--registry", str(root), "--public-key", str(keys[1]), "--status"])
    assert res.exit_code == 0 and "version 1  promoted" in res.output, res.output
    assert "version 2  promoted" not in res.output
    assert dev.poll(now=1.0) is None and dev.client.trust.sequence == 3  # accepted; 2 is not promoted
