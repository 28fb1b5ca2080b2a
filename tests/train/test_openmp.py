"""The OpenMP wait policy is chosen from how busy the CPUs are, before torch loads libgomp."""

import os
import subprocess
import sys

import pytest

from edgedepth.train import openmp


def test_a_policy_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setattr(openmp, "cpu_busy_share", lambda sample_s=0.3: 1.0)
    assert openmp.choose_wait_policy() == "ACTIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.parametrize("busy, expected", [(0.9, "PASSIVE"), (0.05, "default"), (None, "default")])
def test_busy_cpus_make_openmp_wait_passively(monkeypatch, busy, expected):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(openmp, "cpu_busy_share", lambda sample_s=0.3: busy)
    assert openmp.choose_wait_policy() == expected
    assert os.environ.get("OMP_WAIT_POLICY") == ("PASSIVE" if expected == "PASSIVE" else None)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")
def test_busy_share_sees_processes_that_hold_every_core():
    n = len(os.sched_getaffinity(0))
    spin = "import time\nt = time.time()\nwhile time.time() - t < 3: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]
    try:
        share = openmp.cpu_busy_share(sample_s=1.0)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert share is not None and share > 0.6, share
