"""The data browser in a real browser: `edgedepth dashboard` as a process on 127.0.0.1, driven by headless
Chromium (Debian's chromium + chromium-driver, through selenium; scripts/setup.sh installs them).

Checks: sign-in with the admin token, no console errors, every thumbnail decodes, a filter narrows the
list, the detail view shows the frame's metadata, the rounds and models pages; the main page's screenshot
is written to $EDGEDEPTH_ARTIFACTS (default out/test-artifacts/browser-main.png).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browserkit as bk  # noqa: E402
from uploadkit import env, free_port, stop, wait_http  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "eda_" + "k3" * 20
N_ITEMS = 12


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    metas = bk.make_store(root / "store", N_ITEMS, corrupt=N_ITEMS - 1)
    bk.make_rounds(root / "rounds", metas)
    bk.make_registry(root / "registry")
    token_file = root / "admin.token"
    token_file.write_text(ADMIN + "\n")
    token_file.chmod(0o600)
    from edgedepth.fleet.auth import DeviceRegistry

    devices = DeviceRegistry(root / "store" / "devices.db")
    device_token = devices.add_device("cam-north")
    devices.close()
    port = free_port()
    log = open(root / "dashboard.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "edgedepth", "dashboard", "--store", str(root / "store"),
                             "--admin-token-file", str(token_file), "--rounds", str(root / "rounds"),
                             "--registry", str(root / "registry"), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=str(ROOT))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield {"url": f"http://127.0.0.1:{port}/browse", "metas": metas, "device_token": device_token,
               "log": root / "dashboard.log"}
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="module")
def driver(site):
    browser = _chromium()
    chromedriver = shutil.which("chromedriver")
    if browser is None or chromedriver is None:
        pytest.skip("headless Chromium is not installed (scripts/setup.sh installs Debian's chromium and "
                    "chromium-driver when run as root)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extra) is not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1000", "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _artifacts() -> Path:
    out = Path(os.environ.get("EDGEDEPTH_ARTIFACTS", ROOT / "out" / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _errors(drv) -> list:
    errors = [e for e in drv.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
    for e in errors:
        print(e)
    return errors


def _sign_in(drv, site) -> None:
    from selenium.webdriver.common.by import By

    drv.get(site["url"] + "/")
    if drv.find_elements(By.ID, "token"):
        drv.find_element(By.ID, "token").send_keys(ADMIN)
        drv.find_element(By.ID, "signin").click()
    _wait(drv, lambda d: d.find_elements(By.ID, "frames"))


def _wait(drv, cond, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout).until(cond)


def _images_loaded(drv) -> bool:
    return drv.execute_script("return Array.from(document.images).every(i => i.complete);")


def test_refused_without_the_admin_token(site):
    url = site["url"]
    first = site["metas"][0]["id"]
    for path in ("/", "/devices", "/rounds", f"/frame/{first}", f"/img/{first}/rgb.png?w=160"):
        assert httpx.get(url + path).status_code == 401
        r = httpx.get(url + path, headers={"Authorization": f"Bearer {site['device_token']}"})
        assert r.status_code == 401, path  # a device's upload token does not open the browser
        assert httpx.get(url + path, cookies={"edgedepth_admin": "0" * 64}).status_code == 401
        assert httpx.get(url + path, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert httpx.get(f"{url}/frame/{'0' * 64}", headers=admin).status_code == 404
    assert httpx.get(f"{url}/?after=garbage", headers=admin).status_code == 400
    assert httpx.get(f"{url}/?sort=nonsense", headers=admin).status_code == 400
    assert httpx.get(f"{url}/img/{first}/rgb.png?w=5000", headers=admin).status_code == 400
    assert httpx.get(f"{url}/img/{first}/nothere.png?w=160", headers=admin).status_code == 404
    assert httpx.get(f"{url}/img/{first}/..%2Fmeta.json?w=160", headers=admin).status_code == 404
    bad = httpx.post(url + "/login", data={"token": site["device_token"]})
    assert bad.status_code == 401 and "edgedepth_admin" not in bad.cookies
    # a file that does not decode is served as a placeholder image, and logged
    broken = site["metas"][-1]["id"]
    r = httpx.get(f"{url}/img/{broken}/rgb.png?w=160", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.headers["x-edgedepth-preview"] == "placeholder"
    assert r.headers["content-type"] == "image/jpeg"
    assert "has no preview" in site["log"].read_text()


def test_main_page_lists_frames_with_decoded_thumbnails(site, driver):
    from selenium.webdriver.common.by import By

    driver.get(site["url"] + "/")
    assert driver.find_elements(By.ID, "token"), "an unauthenticated browser gets the sign-in form"
    _sign_in(driver, site)
    _wait(driver, _images_loaded)
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.frame")
    assert len(rows) == N_ITEMS
    images = driver.find_elements(By.CSS_SELECTOR, "img.thumb")
    # every frame has an image and a depth map; three in four also a prediction and an uncertainty map
    assert len(images) == N_ITEMS * 2 + 2 * sum(1 for i in range(N_ITEMS) if i % 4 != 3)
    widths = driver.execute_script("return Array.from(document.images).map(i => i.naturalWidth);")
    assert all(w > 0 for w in widths), widths
    # the list is sorted by selection score, highest first
    scores = [float(e.text) for e in driver.find_elements(By.CSS_SELECTOR, "td.scores .score")]
    assert scores == sorted(scores, reverse=True)
    legend = driver.find_element(By.CSS_SELECTOR, "figure.legend figcaption").text
    assert legend.startswith("depth: near 0.5 m")
    assert _errors(driver) == []
    assert driver.save_screenshot(str(_artifacts() / "browser-main.png"))


def test_a_filter_narrows_the_list(site, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _sign_in(driver, site)
    Select(driver.find_element(By.ID, "f-device")).select_by_value("cam-south")
    Select(driver.find_element(By.ID, "f-sort")).select_by_value("captured")
    driver.find_element(By.ID, "apply").click()
    _wait(driver, lambda d: "device=cam-south" in d.current_url)
    _wait(driver, _images_loaded)
    devices = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "tr.frame td.device")]
    expected = [m for m in site["metas"] if m["device_id"] == "cam-south"]
    assert 0 < len(devices) == len(expected) < N_ITEMS
    assert set(devices) == {"cam-south"}
    shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "tr.frame td.when")]
    assert shown == sorted(shown, reverse=True)
    assert driver.find_element(By.ID, "count").text.startswith(f"{len(expected)} of {N_ITEMS}")
    # a round filter: only the frames that went into round 1
    driver.get(site["url"] + "/?round=1")
    ids = {e.get_attribute("data-id") for e in driver.find_elements(By.CSS_SELECTOR, "tr.frame")}
    assert ids == {m["id"] for m in site["metas"][N_ITEMS // 2:]}
    assert _errors(driver) == []


def test_detail_view_shows_the_frames_metadata(site, driver):
    from selenium.webdriver.common.by import By

    _sign_in(driver, site)
    first = driver.find_element(By.CSS_SELECTOR, "tr.frame")
    item_id = first.get_attribute("data-id")
    first.find_element(By.CSS_SELECTOR, "td a").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "frame-id"))
    _wait(driver, _images_loaded)
    meta = next(m for m in site["metas"] if m["id"] == item_id)
    assert driver.find_element(By.ID, "frame-id").text == item_id
    assert driver.find_element(By.ID, "m-device").text == meta["device_id"]
    assert driver.find_element(By.ID, "m-captured").text == meta["captured_at"]
    assert driver.find_element(By.ID, "m-domain").text == meta["domain"]
    assert driver.find_element(By.ID, "m-score").text == f"{meta['score']:.3g}"
    scores = driver.find_element(By.ID, "m-scores").text
    assert f"novelty {meta['scores']['novelty']:.3g}" in scores
    rounds = driver.find_element(By.ID, "m-rounds").text
    assert rounds.startswith("0 ·" if site["metas"].index(meta) < N_ITEMS // 2 else "1 ·")
    widths = driver.execute_script("return Array.from(document.images).map(i => i.naturalWidth);")
    assert widths and all(w == 320 for w in widths)
    assert "m, median" in driver.find_element(By.CSS_SELECTOR, ".images").text  # depth figures in metres
    assert _errors(driver) == []
    driver.save_screenshot(str(_artifacts() / "browser-frame.png"))


def test_rounds_models_and_devices_pages(site, driver):
    from selenium.webdriver.common.by import By

    _sign_in(driver, site)
    driver.get(site["url"] + "/rounds")
    assert "verdict: PROMOTE" in driver.find_element(By.ID, "round-0").text
    assert "4 (promoted)" in driver.find_element(By.ID, "round-0").text
    assert "No gate result" in driver.find_element(By.ID, "round-1").text
    driver.save_screenshot(str(_artifacts() / "browser-rounds.png"))
    driver.get(site["url"] + "/models")
    assert driver.find_element(By.ID, "latest").text == "4"
    driver.save_screenshot(str(_artifacts() / "browser-models.png"))
    driver.get(site["url"] + "/devices")
    rows = [r.text.split() for r in driver.find_elements(By.CSS_SELECTOR, "#devices tbody tr")]
    counts = {dev: sum(m["device_id"] == dev for m in site["metas"]) for dev in bk.DEVICES}
    assert {r[0]: int(r[1]) for r in rows} == counts
    assert driver.find_elements(By.CSS_SELECTOR, "svg.chart rect")
    driver.save_screenshot(str(_artifacts() / "browser-devices.png"))
    assert _errors(driver) == []
    # signing out ends the session: the next page is the sign-in form again
    driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "token"))
    driver.get(site["url"] + "/devices")
    assert driver.find_elements(By.ID, "token") and not driver.find_elements(By.ID, "devices")
