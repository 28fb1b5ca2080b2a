"""The README's quick start, run as written (scripts/tour.py) at a small scale: the same commands, with
the tour's documented scale variables set small. Every command must succeed, the live loop must select
frames, the uploads must be accepted, and the gate's verdict must decide what the device runs."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tour_module():
    spec = importlib.util.spec_from_file_location("edgedepth_tour", REPO / "scripts" / "tour.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# the scale the test runs the tour at (the README documents the variables and their defaults)
SMALL = {"SIZE": "32x64", "FRAMES": "200", "EPOCHS": "10", "LIVE_FRAMES": "1500", "FT_STEPS": "120"}


def test_tour_blocks_use_the_fixed_options():
    script = _tour_module().tour_script()
    for var in SMALL:
        assert "${" + var + ":-" in script, var  # every scale variable the test sets is one the README reads
    # the options whose absence broke the tour before
    assert "--reference-data data/indoor " in script or "--reference-data data/indoor\n" in script
    assert script.count("--device-id cam-01") >= 2 and "add-device cam-01" in script
    assert "edgedepth round train rounds/1 --from runs/r0/best.pt" in script  # the recipe that works
    made = {d for line in script.splitlines() if line.startswith("mkdir -p ") for d in line.split()[2:]}
    for folder in ("data", "runs", "bundles", "store", "registry", "keys", "spool", "rounds"):
        assert folder in made, f"the tour uses {folder}/ without creating it"


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 90 s of CPU time; much longer in wall time on a busy machine
def test_readme_tour_runs_as_written(tmp_path):
    tour = _tour_module()
    work = tmp_path / "tour"
    res = tour.run_tour(work, dict(SMALL, PORT=str(_free_port())), timeout=840)
    out = res.stdout + res.stderr
    (work / "tour.log").write_text(out)
    assert res.returncode == 0, out[-6000:]
    gate = json.loads((work / "runs" / "r1" / "round.json").read_text())["gate"]
    assert gate["verdict"] in ("promote", "refuse"), gate
    selected = [int(m) for m in re.findall(r"^final: frames \d+ .* selected (\d+) ", out, re.M)]
    assert selected and selected[0] > 0, selected  # the device's live loop selected frames to upload
    assert 'HTTP/1.1" 403' not in out  # uploads were accepted under the device's own id
    assert not list((work / "spool").glob("*.json"))  # the spool was drained
    # at this scale the round is a few dozen frames and the gate's verdict can go either way; the tour
    # must follow it: a promoted round is published and installed, a refused one never reaches the device
    if gate["verdict"] == "promote":
        assert "published bundles/r1 as version 2" in out
        assert "update 2: healthy, now running" in out, out[-3000:]
    else:
        assert not (work / "bundles" / "r1").exists() and "update 2" not in out
        assert sorted(p.name for p in (work / "registry" / "versions").iterdir()) == ["1"]
