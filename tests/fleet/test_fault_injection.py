"""Fault injection: SIGKILL the upload daemon and the ingest server at random moments, plus an outage.

The long run (500 frames, >= 20 kills of each) is scripts/fault_inject.py; this is the same harness at
N=60 with a few kills of each process.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import uploadkit as uk  # noqa: E402

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not uk.real_server_available(), reason="the ingest server is not built yet")]


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
