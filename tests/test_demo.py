"""`edgedepth demo --quick` end to end, as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_quick_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    work = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "edgedepth", "demo", "--quick", "--workdir", str(work)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "edgedepth demo summary" in out
    for label in ("AbsRel (shifted domains)", "δ1 (shifted domains)", "AbsRel (original domain)",
                  "δ1 (original domain)"):
        assert label in out
    assert "fps per device" in out and "uploaded" in out and "total time:" in out
    stages = res.stderr
    for stage in ("train the round-0 model", "calibrate INT8", "run the live loop", "build the next round",
                  "fine-tune", "gate the candidate", "swap the new model in"):
        assert stage in stages, stage
    summary = json.loads((work / "demo.json").read_text())["summary"]
    assert summary["frames"] > 0 and summary["uploaded"] >= 1
    assert summary["uploaded"] <= summary["selected"]
    assert f"{summary['uploaded']} uploaded" in out
    assert (work / "demo.png").is_file() and f"plot: {work / 'demo.png'}" in out
    bundle = next((work / "shared").glob("model-*/base_bundle_int8"))
    assert (bundle / "model.int8.cpu.onnx").is_file() or "INT8" in (bundle / "calibration.json").read_text()
    if summary["promoted"]:
        assert all(d["version"] == "2" for d in summary["devices_after"])
