"""Publish -> registry (DIR, http://, s3://) -> download round trips, immutability and rejections."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from edgedepth.bundle import MANIFEST, SIGNATURE
from edgedepth.cli.main import cli
from edgedepth.registry.client import RegistryClient
from edgedepth.registry.index import RegistryError
from edgedepth.registry.keys import generate_keypair
from edgedepth.registry.publish import publish_bundle, set_promoted
from edgedepth.registry.signing import BundleRejected, verify_signed_bundle
from edgedepth.registry.storage import RegistryUnavailable


def same_files(a, b, names):
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


PUBLISHED = ["model.onnx", "model.int8.cpu.onnx", "model.int8.trt.onnx", "calibration.json",
             "metrics.json", "lineage.json"]


def test_publish_layout_index_and_dir_round_trip(bundle, keys, tmp_path):
    reg = tmp_path / "registry"
    e1 = publish_bundle(bundle, str(reg), keys[0], notes="first")
    e2 = publish_bundle(bundle, str(reg), keys[0], promote=True)
    assert (e1["version"], e2["version"]) == ("1", "2")
    index = json.loads((reg / "index.json").read_text())
    assert [v["version"] for v in index["versions"]] == ["1", "2"]
    assert index["latest_promoted"] == "2"
    entry = index["versions"][1]
    assert entry["promoted"] is True and entry["metrics"]["abs_rel"] == pytest.approx(0.123)
    assert entry["model"]["name"] == "edgedepth-test" and len(entry["manifest_sha256"]) == 64
    vdir = reg / "versions" / "2"
    assert sorted(p.name for p in vdir.iterdir()) == sorted(PUBLISHED + [MANIFEST, SIGNATURE])
    assert not (vdir / "engines").exists(), "engines are device-specific and must not be published"
    manifest = verify_signed_bundle(vdir, keys[1], expect_version="2")
    assert manifest["registry"]["version"] == "2" and manifest["export"] == {"tool": "test"}
    assert not [p for p in (reg / "versions").iterdir() if p.name.startswith(".")], "staging left behind"

    client = RegistryClient(str(reg), keys[1])
    assert client.latest_promoted()[0] == "2"
    got = client.download("2", tmp_path / "cache", keys[1])
    assert got == tmp_path / "cache" / "2"
    same_files(bundle, got, PUBLISHED)
    assert (got / SIGNATURE).exists() and not [p for p in got.parent.iterdir() if p.name.startswith(".")]
    # file:// URLs read the same registry
    assert RegistryClient(reg.as_uri(), keys[1]).latest_promoted()[0] == "2"


def test_versions_are_immutable_and_monotonic(bundle, keys, tmp_path):
    reg = str(tmp_path / "registry")
    publish_bundle(bundle, reg, keys[0], version="5")
    with pytest.raises(RegistryError, match="immutable"):
        publish_bundle(bundle, reg, keys[0], version="5")
    with pytest.raises(RegistryError, match="not newer"):
        publish_bundle(bundle, reg, keys[0], version="4")
    assert publish_bundle(bundle, reg, keys[0])["version"] == "6"
    assert publish_bundle(bundle, reg, keys[0], version="6.1")["version"] == "6.1"


def test_promote_only_and_demote(bundle, keys, tmp_path):
    reg = str(tmp_path / "registry")
    runner = CliRunner()
    for _ in range(2):
        res = runner.invoke(cli, ["publish", str(bundle), "--registry", reg, "--key", str(keys[0])])
        assert res.exit_code == 0, res.output
    client = RegistryClient(reg, keys[1])
    assert client.latest_promoted() is None
    key = ["--key", str(keys[0])]
    res = runner.invoke(cli, ["publish", "--registry", reg, "--promote-only", "1"] + key)
    assert res.exit_code == 0, res.output
    assert client.latest_promoted()[0] == "1"
    assert set_promoted(reg, "2", private_key=keys[0])["latest_promoted"] == "2"
    res = runner.invoke(cli, ["publish", "--registry", reg, "--demote", "2"] + key)
    assert res.exit_code == 0, res.output
    assert client.latest_promoted()[0] == "1"
    res = runner.invoke(cli, ["publish", "--registry", reg, "--promote-only", "9"] + key)
    assert res.exit_code == 2 and "not published" in res.output
    res = runner.invoke(cli, ["publish", str(bundle), "--registry", reg])
    assert res.exit_code == 2 and "--key" in res.output
    res = runner.invoke(cli, ["publish", "--registry", reg, "--demote", "1"])
    assert res.exit_code == 2 and "--key" in res.output, "a promotion change must be signed"


def test_publishing_a_corrupt_bundle_is_refused(bundle, keys, tmp_path):
    (bundle / "metrics.json").write_text("{}")  # no longer matches the manifest
    with pytest.raises(Exception, match="metrics.json"):
        publish_bundle(bundle, str(tmp_path / "registry"), keys[0])
    assert not (tmp_path / "registry" / "index.json").exists()


def _tamper(reg, version, name):
    path = reg / "versions" / version / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_download_rejects_tampered_file_and_leaves_nothing(bundle, keys, tmp_path, caplog):
    reg = tmp_path / "registry"
    publish_bundle(bundle, str(reg), keys[0], promote=True)
    _tamper(reg, "1", "model.int8.trt.onnx")
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="edgedepth.registry.client"):
        with pytest.raises(BundleRejected, match=r"model\.int8\.trt\.onnx"):
            RegistryClient(str(reg), keys[1]).download("1", cache, keys[1])
    assert "rejected version 1" in caplog.text
    assert list(cache.iterdir()) == [], "a rejected download must leave nothing behind"


def test_download_rejects_wrong_key_unsigned_and_swapped_versions(bundle, keys, tmp_path):
    reg = tmp_path / "registry"
    publish_bundle(bundle, str(reg), keys[0])
    publish_bundle(bundle, str(reg), keys[0])
    client = RegistryClient(str(reg), keys[1])
    client.state()
    _, other_pub = generate_keypair(tmp_path / "other")
    with pytest.raises(BundleRejected, match="another key"):
        client.download("1", tmp_path / "c1", other_pub)
    # replay: version 1's signed files served as version 2
    v1, v2 = reg / "versions" / "1", reg / "versions" / "2"
    for name in (MANIFEST, SIGNATURE):
        (v2 / name).write_bytes((v1 / name).read_bytes())
    with pytest.raises(BundleRejected, match="does not match the SHA-256 the signed registry state"):
        client.download("2", tmp_path / "c2", keys[1])
    (v1 / SIGNATURE).unlink()  # a version the signed state lists but whose signature is gone: retried
    with pytest.raises(RegistryUnavailable, match="manifest.sig is missing"):
        client.download("1", tmp_path / "c3", keys[1])
    for c in ("c1", "c2", "c3"):
        assert list((tmp_path / c).iterdir()) == []


def test_missing_registry_is_unavailable_not_rejected(tmp_path, keys):
    client = RegistryClient(str(tmp_path / "nowhere"), keys[1])
    with pytest.raises(RegistryUnavailable, match="state.json"):
        client.latest_promoted()


def test_http_registry_round_trip(bundle, keys, http_registry, tmp_path):
    root, url = http_registry
    publish_bundle(bundle, str(root), keys[0], promote=True)
    client = RegistryClient(url, keys[1])
    version, entry = client.latest_promoted()
    assert version == "1" and entry["promoted"]
    got = client.download(version, tmp_path / "cache", keys[1])
    same_files(bundle, got, PUBLISHED)
    verify_signed_bundle(got, keys[1], expect_version="1")
    # already present and valid: reused, no second download needed
    assert client.download(version, tmp_path / "cache", keys[1]) == got
    _tamper(root, "1", "model.onnx")
    with pytest.raises(BundleRejected, match=r"model\.onnx"):
        client.download(version, tmp_path / "cache2", keys[1])
    with pytest.raises(Exception, match="read-only"):
        publish_bundle(bundle, url, keys[0])


def test_s3_registry_round_trip(bundle, keys, moto_server, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="models")
    url = "s3://models/edgedepth/registry"
    runner = CliRunner()
    res = runner.invoke(cli, ["publish", str(bundle), "--registry", url, "--key", str(keys[0]),
                              "--endpoint-url", moto_server, "--promote", "--notes", "s3 test"])
    assert res.exit_code == 0, res.output
    e2 = publish_bundle(bundle, url, keys[0], endpoint_url=moto_server)
    assert e2["version"] == "2"
    with pytest.raises(RegistryError, match="immutable"):
        publish_bundle(bundle, url, keys[0], version="2", endpoint_url=moto_server)
    keys_listed = [o["Key"] for o in boto3.client("s3", endpoint_url=moto_server)
                   .list_objects_v2(Bucket="models", Prefix="edgedepth/registry/")["Contents"]]
    assert "edgedepth/registry/index.json" in keys_listed
    assert not any("engines" in k for k in keys_listed)
    client = RegistryClient(url, keys[1], endpoint_url=moto_server)
    version, entry = client.latest_promoted()
    assert version == "1" and entry["promoted"] and client.index()["versions"][0]["notes"] == "s3 test"
    got = client.download(version, tmp_path / "cache", keys[1])
    same_files(bundle, got, PUBLISHED)
    s3 = boto3.client("s3", endpoint_url=moto_server)
    s3.put_object(Bucket="models", Key="edgedepth/registry/versions/2/lineage.json", Body=b'{"evil": 1}')
    with pytest.raises(BundleRejected, match="lineage.json"):
        client.download("2", tmp_path / "cache", keys[1])
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["1"]
    # the S3 transport caps whole reads like the others
    from edgedepth.registry.storage import ObjectTooLarge

    s3.put_object(Bucket="models", Key="edgedepth/registry/index.json", Body=b" " * (9 << 20))
    with pytest.raises(ObjectTooLarge, match="index.json"):
        client.index()
    assert client.latest_promoted()[0] == "1"  # the signed state decides, not the index
