"""`edgedepth ingest serve --admin-token-file F` mounts the data browser at /browse: an item a device
uploads shows up there; the device's token uploads but does not open the browser, the admin token does
the opposite."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browserkit as bk  # noqa: E402
from uploadkit import env, free_port, stop, wait_http  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "eda_" + "q7" * 20


def test_ingest_server_mounts_the_browser(tmp_path):
    from edgedepth.fleet.auth import DeviceRegistry

    store = tmp_path / "store"
    devices = DeviceRegistry(store / "devices.db")
    device_token = devices.add_device("cam-north")
    devices.close()
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "edgedepth", "ingest", "serve", "--store", str(store),
                             "--port", str(port), "--admin-token-file", str(token_file)],
                            stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=str(ROOT))
    try:
        wait_http(url + "/healthz", proc=proc)
        item_id, files, meta = bk.make_item(0, device="cam-north")
        body = bk.upload_body(item_id, meta, files)
        r = httpx.post(f"{url}/v1/items/{item_id}", content=body, headers={
            "Authorization": f"Bearer {device_token}", "Content-Type": "application/x-tar",
            "X-Edgedepth-Body-Sha256": hashlib.sha256(body).hexdigest()})
        assert r.status_code == 201, r.text
        device = {"Authorization": f"Bearer {device_token}"}
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert httpx.get(url + "/browse/", headers=device).status_code == 401
        assert httpx.get(url + "/browse/").status_code == 401
        page = httpx.get(url + "/browse/", headers=admin)
        assert page.status_code == 200 and f'data-id="{item_id}"' in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        img = httpx.get(f"{url}/browse/img/{item_id}/depth.png?w=96", headers=admin)
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        # the admin token is not an upload token
        assert httpx.head(f"{url}/v1/items/{item_id}", headers=admin).status_code == 401
        assert httpx.head(f"{url}/v1/items/{item_id}", headers=device).status_code == 200
    finally:
        stop(proc)
        log.close()
