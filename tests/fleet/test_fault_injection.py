"""Fault injection: SIGKILL the upload daemon and the ingest server at random moments, plus an outage.

The long run (500 frames, >= 20 kills of each) is scripts/fault_inject.py; this is the same harness at
N=60 with a few kills of each process.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import uploadkit as uk  # noqa: E402

pytestmark = [pytest.mark.timeout(180)]


def load_script():
    spec = importlib.util.spec_from_file_location("fault_inject", uk.REPO / "scripts" / "fault_inject.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sixty_frames_survive_kills_of_both_processes_and_an_outage(tmp_path):
    fi = load_script()
    res = fi.run(frames=60, daemon_kills=3, server_kills=3, outage_s=1.5, workdir=tmp_path, seed=1,
                 quiet=True)
    assert res["daemon_kills"] == 3 and res["server_kills"] == 3, res
    assert res["stored"] == 60 and res["delivered_intact"] == 60, res
    assert res["lost"] == 0 and res["corrupt"] == 0 and res["extra"] == 0, res
    assert res["spool_leftover_files"] == 0 and res["failed_items"] == 0, res
    assert res["ok"] and res["daemon_exit"] == 0, res


def test_server_killed_with_an_item_half_stored_loses_nothing(tmp_path):
    """The kill lands mid-write on purpose: the server stops (a fault point, edgedepth.faults) with the
    second stored file (an image of the first item) half written and gets SIGKILL; a restarted server
    and the same daemon finish."""
    import os
    import signal
    import subprocess

    fi = load_script()
    store, spool, flag = tmp_path / "store", tmp_path / "spool", tmp_path / "paused"
    token_file = tmp_path / "token"
    token_file.write_text(uk.add_device(store))
    os.chmod(token_file, 0o600)
    frames = uk.make_frames(spool, 4)
    port = uk.free_port()
    paused = subprocess.Popen([uk.PY, "-m", "edgedepth", "ingest", "serve", "--store", str(store), "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=uk.REPO,
                              env={**uk.env(), "EDGEDEPTH_PAUSE_AT": f"store-write:2:{flag}"})
    daemon = uk.start_daemon(spool, port, token_file, tmp_path / "daemon.log", "--once",
                             "--once-timeout", "150")
    server = None
    try:
        while not flag.exists():  # waits on the server's writer, not on a clock
            assert paused.poll() is None and daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            time.sleep(0.05)
        half_written = Path(flag.read_text())
        assert half_written.exists() and "tmp" in half_written.parts  # the kill lands mid-write
        paused.send_signal(signal.SIGKILL)
        paused.wait(30)
        server = uk.start_real_server(store, port, tmp_path / "server.log")
        assert daemon.wait(150) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    finally:
        for proc in (paused, daemon):
            if proc.poll() is None:
                proc.kill()
        uk.stop(server)
    assert fi.store_contents(store) == frames  # every item complete and intact, no extra one
    # the half-written copy stays in the store's tmp/ (cleared when stale), never among the items
    assert half_written.parent.parent == store.resolve() / "tmp"
    assert fi.leftover_files(spool) == []
def test_a_spool_disk_that_fills_up_still_delivers_every_frame_once(tmp_path):
    """The spool on a 2 MiB tmpfs, full to the last byte while the daemon and the server are killed."""
    import os

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    fi = load_script()
    res = fi.run(frames=60, daemon_kills=3, server_kills=3, outage_s=1.5, workdir=tmp_path, seed=2,
                 quiet=True, fill_mib=2)
    assert res["free_bytes_after_ballast"] == 0 and res["writer_waits_disk_full"] > 0, res
    assert res["stored"] == 60 and res["delivered_intact"] == 60, res
    assert res["lost"] == 0 and res["corrupt"] == 0 and res["extra"] == 0, res
    assert res["ok"] and res["daemon_exit"] == 0, res
