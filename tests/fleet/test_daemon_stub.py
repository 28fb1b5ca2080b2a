"""Upload daemon against a scripted server (answers on demand): rejections, 429/503/401, shutdown, cap."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import uploadkit as uk  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path):
    spool, store, tok = tmp_path / "spool", tmp_path / "store", tmp_path / "token"
    tok.write_text("secret\n")
    tok.chmod(0o600)
    port = uk.free_port()
    procs = []
    yield {"spool": spool, "store": store, "tok": tok, "port": port, "procs": procs, "tmp": tmp_path}
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def run_once(e, *extra, timeout=60):
    return subprocess.run(uk.daemon_cmd(e["spool"], e["port"], e["tok"], "--once", *extra),
                          capture_output=True, text=True, env=uk.env(), cwd=uk.REPO, timeout=timeout)


def stored(store: Path) -> dict:
    out = {}
    for d in store.iterdir():
        if d.is_dir() and (d / "done").exists():
            out[d.name] = {p.name[65:]: hashlib.sha256(p.read_bytes()).hexdigest()
                           for p in d.iterdir() if p.name != "done" and not p.name.endswith(".json")}
    return out


def set_mode(e, mode):
    (e["store"] / ".mode").write_text(mode)


def test_once_delivers_everything_byte_identical(env):
    frames = uk.make_frames(env["spool"], 12)
    env["procs"].append(uk.start_stub(env["store"], env["port"]))
    r = run_once(env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert stored(env["store"]) == frames
    assert uk.spool_item_count(env["spool"]) == 0
    assert "the spool is drained" in r.stderr
    st = subprocess.run([uk.PY, "-m", "edgedepth", "upload", "status", "--spool", str(env["spool"]),
                         "--json"], capture_output=True, text=True, env=uk.env(), cwd=uk.REPO)
    report = json.loads(st.stdout)
    assert report["jobs"]["done"] == 12 and report["jobs"]["queued"] == 0 and report["spool_items"] == 0


def test_permanent_rejection_goes_to_failed_dir(env):
    frames = uk.make_frames(env["spool"], 3)
    env["procs"].append(uk.start_stub(env["store"], env["port"], mode="reject"))
    r = run_once(env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rejected permanently (415)" in r.stderr
    failed = env["spool"] / "failed"
    for item_id in frames:
        reason = json.loads((failed / f"{item_id}.failed.json").read_text())
        assert reason["status"] == 415 and "not an image" in reason["reason"]
        assert (failed / f"{item_id}.rgb.png").exists() and (failed / f"{item_id}.json").exists()
    assert uk.spool_item_count(env["spool"]) == 0


def test_local_corruption_is_caught_before_sending(env):
    frames = uk.make_frames(env["spool"], 2)
    bad = sorted(frames)[0]
    p = env["spool"] / f"{bad}.rgb.png"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    env["procs"].append(uk.start_stub(env["store"], env["port"]))
    r = run_once(env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert set(stored(env["store"])) == set(frames) - {bad}
    reason = json.loads((env["spool"] / "failed" / f"{bad}.failed.json").read_text())["reason"]
    assert "local file corrupt" in reason


@pytest.mark.parametrize("mode", ["busy", "unavailable", "auth"])
def test_transient_answers_keep_the_data_and_retry(env, mode):
    frames = uk.make_frames(env["spool"], 4)
    env["procs"].append(uk.start_stub(env["store"], env["port"], mode=mode))
    d = uk.start_daemon(env["spool"], env["port"], env["tok"], env["tmp"] / "daemon.log", "--once",
                        "--once-timeout", "40")
    env["procs"].append(d)
    t0 = time.time()
    while httpx.get(f"http://127.0.0.1:{env['port']}/counts").json()["post"] < 2:  # refused twice
        assert d.poll() is None and time.time() - t0 < 30, "the daemon stopped trying"
        time.sleep(0.05)
    assert d.poll() is None and uk.spool_item_count(env["spool"]) == 4  # nothing dropped
    set_mode(env, "normal")
    assert d.wait(40) == 0
    assert stored(env["store"]) == frames and uk.spool_item_count(env["spool"]) == 0


def test_once_timeout_exits_nonzero_when_items_remain(env):
    uk.make_frames(env["spool"], 2)  # no server at all
    r = run_once(env, "--once-timeout", "2")
    assert r.returncode == 3, r.stderr[-2000:]
    assert uk.spool_item_count(env["spool"]) == 2 and "2 items still queued" in r.stderr


def test_highest_score_first(env):
    frames = uk.make_frames(env["spool"], 8)
    from edgedepth.spool import Spool

    scores = {it.id: it.score for it in Spool(env["spool"]).items()}
    env["procs"].append(uk.start_stub(env["store"], env["port"]))
    r = run_once(env, "--log-level", "DEBUG")
    assert r.returncode == 0
    order = [line.split("delivered ")[1][:12] for line in r.stderr.splitlines() if "delivered " in line]
    got = [max(s for i, s in scores.items() if i.startswith(p)) for p in order]
    assert len(got) == len(frames) and got == sorted(got, reverse=True)


def wait_uploading(spool: Path, proc, timeout: float = 20.0) -> None:
    """Until the daemon holds an item's upload lock (it does exactly while sending that item)."""
    t0 = time.time()
    while not list((spool / ".locks").glob("*.lock")):
        assert proc.poll() is None and time.time() - t0 < timeout, "the daemon never started uploading"
        time.sleep(0.02)


def test_first_sigterm_finishes_the_upload_second_exits_at_once(env):
    from edgedepth.spool import Spool, captured_at

    sp = Spool(env["spool"])
    big = uk.png_bytes(1, 8, 8) + b"\0" * 400_000  # PNG signature and a long tail: fine for the stub
    sp.put({"rgb.png": (big, "rgb")}, dict(device_id="d", captured_at=captured_at(), score=1.0, width=8,
                                           height=8))
    sp.put({"rgb.png": (big[:-1], "rgb")}, dict(device_id="d", captured_at=captured_at(), score=0.5, width=8,
                                                height=8))
    env["procs"].append(uk.start_stub(env["store"], env["port"]))
    # first SIGTERM: the in-flight 400 kB at 200 kB/s finishes, the second item is not started, exit 0
    d = uk.start_daemon(env["spool"], env["port"], env["tok"], env["tmp"] / "d1.log", "--max-bandwidth",
                        "200KB/s")
    env["procs"].append(d)
    wait_uploading(env["spool"], d)  # mid-upload of the first (higher-score) item
    d.send_signal(signal.SIGTERM)
    assert d.wait(20) == 0
    assert len(stored(env["store"])) == 1 and uk.spool_item_count(env["spool"]) == 1
    assert "finishing the current upload" in (env["tmp"] / "d1.log").read_text()
    # second SIGTERM: exits at once, mid-upload, and the item stays queued for the next start
    d = uk.start_daemon(env["spool"], env["port"], env["tok"], env["tmp"] / "d2.log", "--max-bandwidth",
                        "50KB/s")
    env["procs"].append(d)
    wait_uploading(env["spool"], d)
    d.send_signal(signal.SIGTERM)
    uk.wait_log(env["tmp"] / "d2.log", "finishing the current upload", d)
    assert d.poll() is None  # still finishing (400 kB at 50 kB/s takes 8 s)
    d.send_signal(signal.SIGTERM)
    assert d.wait(5) == 128 + signal.SIGTERM  # at once: well before the 8 s upload could end
    assert len(stored(env["store"])) == 1 and uk.spool_item_count(env["spool"]) == 1
    r = run_once(env)  # restart: recovered from 'uploading', delivered
    assert r.returncode == 0 and "1 interrupted uploads back in the queue" in r.stderr
    assert len(stored(env["store"])) == 2 and uk.spool_item_count(env["spool"]) == 0


def test_restart_after_crash_resends_and_the_duplicate_answer_confirms(env):
    from edgedepth.fleet.queue import JobQueue
    from edgedepth.spool import Spool

    frames = uk.make_frames(env["spool"], 3)
    env["procs"].append(uk.start_stub(env["store"], env["port"]))
    # simulate: the server stored one item, then the daemon died before deleting it locally
    sp = Spool(env["spool"])
    first = sorted(frames)[0]
    item = sp.get(first)
    from edgedepth.fleet.wire import encode_item

    body, sha = encode_item(item)
    resp = httpx.post(f"http://127.0.0.1:{env['port']}/v1/items/{first}", content=body,
                      headers={"Authorization": "Bearer secret", "X-Edgedepth-Body-Sha256": sha,
                               "Content-Type": "application/x-tar"})
    assert resp.status_code == 201
    q = JobQueue(env["spool"] / ".queue" / "jobs.sqlite")
    q.add(first, item.score, item.nbytes, item.meta.captured_at)
    q.mark_uploading(first)
    q.close()
    r = run_once(env, "--log-level", "DEBUG")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 interrupted uploads back in the queue" in r.stderr and "[duplicate]" in r.stderr
    counts = httpx.get(f"http://127.0.0.1:{env['port']}/counts").json()
    # 1 direct + 3 by the daemon: a HEAD 200 proves nothing about who answered, so the recovered item is
    # sent again and the server's duplicate answer, naming its id, is what confirms it
    assert counts == {"post": 4, "head": 0}
    assert stored(env["store"]) == frames and uk.spool_item_count(env["spool"]) == 0


def test_bandwidth_cap_loose_bound(env):
    from edgedepth.spool import Spool, captured_at

    sp = Spool(env["spool"])
    for i in range(3):
        sp.put({"rgb.png": (uk.png_bytes(i, 8, 8) + bytes([i]) * 200_000, "rgb")},
               dict(device_id="d", captured_at=captured_at(), score=0.5, width=8, height=8))
    env["procs"].append(uk.start_stub(env["store"], env["port"]))
    t0 = time.time()
    r = run_once(env, "--max-bandwidth", "300KB/s")
    dt = time.time() - t0
    assert r.returncode == 0
    # 600 kB at 300 kB/s: >= ~1.9 s of pacing (the first burst is 30 kB). Only a lower bound: a slow or
    # busy machine makes the run longer, never shorter (the pacing itself is tested on a simulated clock
    # in test_daemon_units.py)
    assert dt > 1.8, dt


def test_metrics_and_healthz(env):
    uk.make_frames(env["spool"], 3)
    env["procs"].append(uk.start_stub(env["store"], env["port"]))
    mport = uk.free_port()
    d = uk.start_daemon(env["spool"], env["port"], env["tok"], env["tmp"] / "d.log", "--metrics-port",
                        str(mport))
    env["procs"].append(d)
    uk.wait_http(f"http://127.0.0.1:{mport}/healthz", proc=d)
    t0 = time.time()
    while uk.spool_item_count(env["spool"]) and time.time() - t0 < 20:
        time.sleep(0.1)
    time.sleep(1.2)  # gauges refresh once a second
    text = httpx.get(f"http://127.0.0.1:{mport}/metrics").text
    assert "edgedepth_upload_uploaded_total 3.0" in text
    assert 'edgedepth_upload_jobs{state="done"} 3.0' in text
    assert "edgedepth_upload_queue_depth 0.0" in text
    assert httpx.get(f"http://127.0.0.1:{mport}/nothing").status_code == 404
    assert uk.stop(d) == 0


def test_daemon_spool_cap_evicts_lowest_scores(env):
    from edgedepth.spool import Spool

    uk.make_frames(env["spool"], 10)
    items = Spool(env["spool"]).items()
    keep_bytes = sum(it.nbytes for it in items[:4])  # room for the 4 best
    # no server: the daemon only enforces the cap, then times out with the rest queued. The cap is in
    # MiB, as for `edgedepth run --spool-max-mb` (read as MB it would keep 3 items, not 4)
    r = run_once(env, "--spool-max-mb", f"{(keep_bytes + 10) / 2**20}", "--once-timeout", "1.5")
    assert r.returncode == 3
    left = {it.id for it in Spool(env["spool"]).items()}
    assert left == {it.id for it in items[:4]}


def test_missing_token_is_a_clear_error(env):
    env["spool"].mkdir(parents=True, exist_ok=True)
    r = subprocess.run([uk.PY, "-m", "edgedepth", "upload", "--spool", str(env["spool"]), "--server",
                        "http://127.0.0.1:1"], capture_output=True, text=True, env=uk.env(), cwd=uk.REPO)
    assert r.returncode == 2 and "EDGEDEPTH_TOKEN" in r.stderr


def test_token_from_the_environment_never_appears_in_logs(env):
    frames = uk.make_frames(env["spool"], 2)
    env["procs"].append(uk.start_stub(env["store"], env["port"], token="s3cr3t-token-value"))
    argv = uk.daemon_cmd(env["spool"], env["port"], env["tok"], "--once", "--log-level", "DEBUG")
    i = argv.index("--token-file")
    del argv[i:i + 2]
    e = uk.env()
    e["EDGEDEPTH_TOKEN"] = "s3cr3t-token-value"
    r = subprocess.run(argv, capture_output=True, text=True, env=e, cwd=uk.REPO, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert stored(env["store"]) == frames
    assert "s3cr3t" not in r.stderr and "s3cr3t" not in r.stdout


def test_a_delete_cut_short_by_a_crash_is_finished_on_restart(env):
    import os

    frames = uk.make_frames(env["spool"], 2)
    first = sorted(frames)[0]
    saved = {p.name: p.read_bytes() for p in env["spool"].glob(f"{first}.*") if not p.name.endswith(".json")}
    env["procs"].append(uk.start_stub(env["store"], env["port"]))
    assert run_once(env).returncode == 0
    # as if the daemon died between deleting the metadata and the files: data files, no metadata
    old = time.time() - 60
    for name, data in saved.items():
        (env["spool"] / name).write_bytes(data)
        os.utime(env["spool"] / name, (old, old))
    fresh = env["spool"] / f"{'a' * 64}.rgb.png"  # an unrelated put in progress: left alone
    fresh.write_bytes(b"x")
    r = run_once(env)
    assert r.returncode == 0 and "removed the leftover files of delivered item" in r.stderr, r.stderr[-2000:]
    assert not any(env["spool"].glob(f"{first}.*")) and fresh.exists()


@pytest.mark.parametrize("mode", ["html", "nocontent", "otherid", "notstored"])
def test_an_unconfirmed_2xx_keeps_the_data_and_is_retried(env, mode):
    """Something else on the server's address answering 2xx (a portal page, a 204, JSON naming another
    id, stored: false) must not delete a single item; once the real answer comes, all are delivered."""
    frames = uk.make_frames(env["spool"], 4)
    env["procs"].append(uk.start_stub(env["store"], env["port"], mode=mode))
    log_path = env["tmp"] / "daemon.log"
    d = uk.start_daemon(env["spool"], env["port"], env["tok"], log_path, "--once", "--once-timeout", "40")
    env["procs"].append(d)
    t0 = time.time()
    while httpx.get(f"http://127.0.0.1:{env['port']}/counts").json()["post"] < 3:
        assert d.poll() is None and time.time() - t0 < 30, "the daemon stopped trying"
        time.sleep(0.05)
    assert uk.spool_item_count(env["spool"]) == 4 and not stored(env["store"])  # nothing deleted
    set_mode(env, "normal")
    assert d.wait(40) == 0
    assert stored(env["store"]) == frames and uk.spool_item_count(env["spool"]) == 0
    log = log_path.read_text()
    assert log.count("does not confirm it") == 1, log[-3000:]  # said once, clearly
    assert "keeping all data" in log and "is --server the ingest server?" in log
