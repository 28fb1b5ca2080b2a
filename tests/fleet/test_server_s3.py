"""Two ingest servers (subprocesses) on one S3 prefix served by moto: both accept items, a duplicate
sent to the other server is recognised, and iter_items sees every item once, before and after the
servers write their manifests."""

from __future__ import annotations

import importlib.util
import os
import signal
import uuid
from pathlib import Path

import pytest

from edgedepth.fleet.auth import DeviceRegistry
from edgedepth.fleet.store.s3 import S3Store

HERE = Path(__file__).resolve().parent


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"_edgedepth_fleet_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kit = _sibling("test_server")  # item builders and the Server wrapper
s3kit = _sibling("test_store_s3")  # moto launcher


@pytest.fixture(scope="module")
def moto_url():
    saved = {k: os.environ.get(k) for k in s3kit.FAKE_AWS}
    os.environ.update(s3kit.FAKE_AWS)  # fake credentials for the local fake endpoint only
    proc, url = s3kit.start_moto()
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_two_servers_share_one_prefix(tmp_path, moto_url):
    import boto3

    bucket = f"edgedepth-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/fleet"
    auth_db = tmp_path / "devices.db"
    reg = DeviceRegistry(auth_db)
    tok = {"cam-1": reg.add_device("cam-1"), "cam-2": reg.add_device("cam-2")}
    reg.close()
    env = dict(os.environ, **s3kit.FAKE_AWS)
    common = ["--endpoint-url", moto_url, "--min-free-mb", "0"]
    a = kit.Server(
        tmp_path, uri, [*common, "--server-name", "ingest-a", "--manifest-every", "60"], auth_db, env=env
    )
    b = kit.Server(
        tmp_path, uri, [*common, "--server-name", "ingest-b", "--manifest-every", "0.3"], auth_db, env=env
    )
    try:
        a.wait_ready()
        b.wait_ready()
        items_a = [kit.make_item(200 + n, device="cam-1") for n in range(3)]
        items_b = [kit.make_item(300 + n, device="cam-2") for n in range(3)]
        for it in items_a:
            assert a.post(it[0], kit.item_body(*it), tok["cam-1"]).status_code == 201
        for it in items_b:
            assert b.post(it[0], kit.item_body(*it), tok["cam-2"]).status_code == 201
        # The same item at the other server: already in the shared store.
        r = b.post(items_a[0][0], kit.item_body(*items_a[0]), tok["cam-1"])
        assert r.status_code == 200 and r.json()["duplicate"] is True
        assert a.head(items_b[1][0], tok["cam-2"]) == 200  # b's item, seen by a, for its own device
        assert a.head(items_b[1][0], tok["cam-1"]) == 404  # not for another device
        bad = kit.make_item(400, device="cam-1")
        assert a.post(
            bad[0], kit.item_body(bad[0], bad[1], {**bad[2], "rgb.png": b"x"}), tok["cam-1"]
        ).status_code in (
            400,
            422,
        )

        expected = {it[0] for it in items_a + items_b}
        reader = S3Store(bucket, "fleet", endpoint_url=moto_url, server_name="reader", manifest_every_s=0)
        got = [m["id"] for m in reader.iter_items()]
        assert sorted(got) == sorted(expected)  # each once: a's still pending, b's maybe in manifests
        meta = reader.get_meta(items_b[0][0])
        assert meta["received_by"] == "cam-2" and meta["device_id"] == "cam-2"
        assert reader.read_file(items_a[1][0], "rgb.png") == items_a[1][2]["rgb.png"]

        # A stops (SIGTERM -> graceful shutdown -> its manifest is written); b's timer wrote its own.
        a.proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after its graceful shutdown, so the exit is -SIGTERM.
        assert a.proc.wait(timeout=20) in (0, -signal.SIGTERM)
        listed = [
            o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="fleet/").get("Contents", [])
        ]
        manifests = [k for k in listed if k.startswith("fleet/manifests/")]
        assert any("-ingest-a-" in k for k in manifests) and any("-ingest-b-" in k for k in manifests)
        assert [k for k in listed if k.startswith("fleet/pending/")] == []
        got = [m["id"] for m in reader.iter_items()]
        assert sorted(got) == sorted(expected)
        assert bad[0] not in got and not reader.has(bad[0])
        reader.close()
    finally:
        a.stop()
        b.stop()
