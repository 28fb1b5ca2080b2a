"""ModelUpdater: newest promoted only, poll interval, bad versions remembered, never raises."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgedepth.registry.publish import publish_bundle, set_promoted
from edgedepth.registry.updater import ModelUpdater


@pytest.fixture
def registry(bundle, keys, tmp_path):
    """Versions 1, 2 promoted; 3 published but not promoted."""
    reg = str(tmp_path / "registry")
    publish_bundle(bundle, reg, keys[0], promote=True)
    publish_bundle(bundle, reg, keys[0], promote=True)
    publish_bundle(bundle, reg, keys[0])
    return reg


def make(registry, keys, tmp_path, current="1", every=60.0):
    return ModelUpdater(registry, keys[1], tmp_path / "device", current_version=current, poll_every_s=every)


def test_poll_picks_newest_promoted_version_only(registry, keys, tmp_path):
    up = make(registry, keys, tmp_path)
    path = up.poll(now=0.0)
    assert path is not None and path.name == "2" and up.pending_version == "2"
    assert json.loads((path / "manifest.json").read_text())["registry"]["version"] == "2"
    assert up.poll(now=1000.0) is None  # pending: waits for confirm / mark_bad
    up.confirm("2")
    assert up.current_version == "2" and up.previous_version == "1"
    assert up.poll(now=2000.0) is None  # 3 is not promoted
    set_promoted(registry, "3", private_key=keys[0])
    assert up.poll(now=2010.0) is None  # not due yet (every 60 s)
    path = up.poll(now=2060.0)
    assert path is not None and path.name == "3"


def test_version_marked_bad_is_skipped_and_remembered(registry, keys, tmp_path):
    up = make(registry, keys, tmp_path)
    assert up.poll(now=0.0).name == "2"
    up.mark_bad("2", "health check: NaN depth")
    assert not (tmp_path / "device" / "versions" / "2").exists()
    assert up.poll(now=100.0) is None  # 2 is bad; 1 is current: nothing to do
    set_promoted(registry, "3", private_key=keys[0])
    restarted = make(registry, keys, tmp_path)  # bad versions survive a restart
    assert "2" in restarted.bad_versions
    assert restarted.poll(now=0.0).name == "3"
    restarted.mark_bad("3", "slow")
    assert restarted.poll(now=100.0) is None


def test_rejected_download_is_marked_bad_and_older_promoted_used(registry, keys, tmp_path):
    set_promoted(registry, "3", private_key=keys[0])
    model = tmp_path / "registry" / "versions" / "3" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    up = make(registry, keys, tmp_path)
    path = up.poll(now=0.0)
    assert path is not None and path.name == "2"
    assert "3" in up.bad_versions and "model.onnx" in up.bad_versions["3"]["reason"]


def test_rollback_after_confirm_restores_previous(registry, keys, tmp_path):
    up = make(registry, keys, tmp_path)
    up.confirm(up.poll(now=0.0).name)
    up.mark_bad("2", "rolled back after swap")
    assert up.current_version == "1"


def test_unreachable_registry_never_raises(keys, tmp_path, caplog):
    up = ModelUpdater("http://127.0.0.1:9", keys[1], tmp_path / "dev", current_version=None, poll_every_s=5)
    assert up.poll(now=0.0) is None
    assert "retrying" in caplog.text
    assert up.poll(now=1.0) is None and not up.due(now=4.0) and up.due(now=5.0)


def test_first_install_takes_latest_promoted_and_prunes_old(registry, keys, tmp_path):
    up = make(registry, keys, tmp_path, current=None)
    assert up.poll(now=0.0).name == "2"
    up.confirm("2")
    set_promoted(registry, "3", private_key=keys[0])
    up.confirm(up.poll(now=100.0).name)
    cached = sorted(p.name for p in (tmp_path / "device" / "versions").iterdir())
    assert cached == ["2", "3"]  # current + previous kept for rollback


def test_verdict_handler_confirms_or_marks_bad(registry, keys, tmp_path):
    from edgedepth.registry.health import assess

    up = make(registry, keys, tmp_path)
    v = up.poll(now=0.0).name
    nan = np.full((8, 8), np.nan, np.float32)
    up.verdict_handler(v)(assess([nan], [1.0]))
    assert v in up.bad_versions and "NaN" in up.bad_versions[v]["reason"] and up.current_version == "1"
    set_promoted(registry, "3", private_key=keys[0])
    v = up.poll(now=100.0).name
    up.verdict_handler(v)(assess([np.ones((8, 8), np.float32) * np.arange(8)] * 3, [1.0] * 3))
    assert up.current_version == "3" and up.pending_version is None


def test_installed_version_reads_the_published_manifest(registry, bundle, tmp_path):
    from edgedepth.registry.updater import installed_version

    assert installed_version(tmp_path / "registry" / "versions" / "2") == "2"
    assert installed_version(bundle) is None  # never published
    assert installed_version(tmp_path / "nope") is None


def test_version_once_marked_bad_for_a_short_download_is_tried_again(registry, keys, tmp_path):
    device = tmp_path / "device"
    device.mkdir()
    reason = ("rejected: registry/versions/2: 'model.onnx' has 431 bytes, its signed manifest lists 862; "
              "the file was modified or truncated")
    (device / "updater_state.json").write_text(json.dumps({"bad_versions": {
        "2": {"reason": reason, "at": "2026-01-01T00:00:00Z"},
        "3": {"reason": "rolled back: NaN depth", "at": "2026-01-01T00:00:00Z"}}}))
    up = make(registry, keys, tmp_path)
    assert set(up.bad_versions) == {"3"}
    assert up.poll(now=0.0).name == "2"
