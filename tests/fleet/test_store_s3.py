"""S3 store against moto's standalone server (a real HTTP S3 endpoint on 127.0.0.1).

Covers: create-only commit (meta.json last), manifests + pending markers as the index, several
stores ("servers") on one prefix, adoption of a dead server's items, and transient failures.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from edgedepth.fleet.store import StoreUnavailable, open_store
from edgedepth.fleet.store.s3 import S3Store
from edgedepth.spool import compute_item_id

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    """(process, endpoint URL) of a moto S3 server on a free loopback port, or skip the tests."""
    port = free_port()
    env = dict(os.environ, **FAKE_AWS)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except OSError as exc:
        pytest.skip(f"cannot start moto server: {exc}")
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"moto server exited with {proc.returncode} (is moto[server] installed?)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.skip("moto server did not start within 30 s")


@pytest.fixture(scope="module")
def moto_url():
    saved = {k: os.environ.get(k) for k in FAKE_AWS}
    os.environ.update(FAKE_AWS)  # never real credentials: the endpoint is a local fake
    proc, url = start_moto()
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(moto_url):
    import boto3

    name = f"edgedepth-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name, client


def item(seed: int, device: str = "cam-1"):
    files = {"rgb.png": b"rgb-%d" % seed, "depth.png": b"depth-%d" % seed * 2}
    entries = {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in files.items()}
    item_id = compute_item_id(entries)
    meta = {"id": item_id, "device_id": device, "captured_at": "2026-11-24T18:00:00.000Z", "files": entries}
    return item_id, files, meta


def keys(client, bucket, prefix=""):
    out = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in out)


def test_put_is_create_only_and_meta_commits(moto_url, bucket):
    name, client = bucket
    store = open_store(f"s3://{name}/fleet/a", endpoint_url=moto_url, server_name="srv1", manifest_every_s=0)
    assert isinstance(store, S3Store)
    iid, files, meta = item(1)
    assert store.put_item(iid, files, meta) is True
    assert store.has(iid) and store.read_file(iid, "depth.png") == files["depth.png"]
    assert store.get_meta(iid)["device_id"] == "cam-1"
    assert store.put_item(iid, {"rgb.png": b"x"}, meta) is False
    # The commit itself is create-only (If-None-Match: *), even past the HEAD check: a racing server loses.
    assert store._put(f"fleet/a/items/{iid}/meta.json", b"{}", create_only=True) is False
    assert store.get_meta(iid)["id"] == iid
    assert store.read_file(iid, "rgb.png") == files["rgb.png"]
    assert f"fleet/a/items/{iid}/meta.json" in keys(client, name, "fleet/a/items/")
    # Files without the commit marker are not an item.
    jid, jfiles, _ = item(2)
    client.put_object(Bucket=name, Key=f"fleet/a/items/{jid}/rgb.png", Body=jfiles["rgb.png"])
    client.put_object(Bucket=name, Key=f"fleet/a/pending/{jid}", Body=b"dead")
    assert not store.has(jid)
    assert [m["id"] for m in store.iter_items()] == [iid]
    store.close()  # flushes a manifest with the one committed item
    manifests = keys(client, name, "fleet/a/manifests/")
    assert len(manifests) == 1 and manifests[0].endswith(".jsonl") and "-srv1-" in manifests[0]
    assert keys(client, name, "fleet/a/pending/") == [f"fleet/a/pending/{jid}"]  # uncommitted one stays


def test_two_servers_on_one_prefix_and_since(moto_url, bucket):
    name, client = bucket
    uri = f"s3://{name}/shared"
    a = open_store(uri, endpoint_url=moto_url, server_name="a", manifest_every_s=0)
    b = open_store(uri, endpoint_url=moto_url, server_name="b", manifest_every_s=0)
    ids_a = [item(n)[0] for n in range(0, 4)]
    ids_b = [item(n)[0] for n in range(4, 7)]
    for n in range(0, 4):
        assert a.put_item(*item(n)) is True
    for n in range(4, 7):
        assert b.put_item(*item(n)) is True
    assert b.put_item(*item(0)) is False  # already committed by server a
    reader = open_store(uri, endpoint_url=moto_url, server_name="reader", manifest_every_s=0)
    everything = set(ids_a + ids_b)
    assert {m["id"] for m in reader.iter_items()} == everything  # all still pending
    assert a.flush_manifest() == 4
    got = [m["id"] for m in reader.iter_items()]
    assert sorted(got) == sorted(everything) and len(got) == len(everything)
    assert len(keys(client, name, "shared/pending/")) == 3
    cut = max(m["received_at"] for m in reader.iter_items())
    c = open_store(uri, endpoint_url=moto_url, server_name="c", manifest_every_s=0)
    late = item(50)
    time.sleep(0.002)
    c.put_item(*late)
    assert [m["id"] for m in reader.iter_items(since=cut)] == [late[0]]
    for s in (b, c):
        s.close()
    assert keys(client, name, "shared/pending/") == []
    assert len(keys(client, name, "shared/manifests/")) == 3
    got = [m["id"] for m in reader.iter_items()]
    assert sorted(got) == sorted(everything | {late[0]})
    assert [m["id"] for m in reader.iter_items(since=cut)] == [late[0]]
    a.close()
    reader.close()


def test_dead_server_items_are_adopted(moto_url, bucket):
    name, client = bucket
    uri = f"s3://{name}/p"
    dead = open_store(uri, endpoint_url=moto_url, server_name="dead", manifest_every_s=0)
    iid = item(3)[0]
    dead.put_item(*item(3))  # never flushed: the process "died"
    heir = S3Store(name, "p", endpoint_url=moto_url, server_name="heir", manifest_every_s=0)
    assert heir.adopt_orphans(older_than_s=0) == 1
    heir.close()
    assert keys(client, name, "p/pending/") == []
    assert [m["id"] for m in heir.iter_items()] == [iid]


def test_transient_failure_raises_unavailable_and_writes_nothing(moto_url, bucket):
    import boto3
    from botocore.config import Config

    name, client = bucket
    store = S3Store(name, "t", endpoint_url=moto_url, server_name="x", manifest_every_s=0)
    dead = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    good_client, store._client = store._client, dead
    iid, files, meta = item(8)
    with pytest.raises(StoreUnavailable, match="retry later"):
        store.put_item(iid, files, meta)
    store._client = good_client
    assert not store.has(iid) and keys(client, name, "t/") == []
    # Stores without If-None-Match fall back to HEAD-then-PUT and stay create-only.
    store._conditional_writes = False
    assert store.put_item(iid, files, meta) is True
    assert store.put_item(iid, files, meta) is False
    store.close()
