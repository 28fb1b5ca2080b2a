"""The scaling study end to end with the real renderer and training library, at toy sizes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")


def test_quick_study_trains_scores_and_plots(tmp_path, repo_root):
    out = tmp_path / "quick"
    proc = subprocess.run([sys.executable, str(repo_root / "scripts" / "scaling_study.py"), "--quick",
                           "--out", str(out), "--sizes", "4,8", "--render-workers", "1"],
                          capture_output=True, text=True, timeout=240, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "crossover" in proc.stdout and "wall time" in proc.stdout
    result = json.loads((out / "scaling.json").read_text())
    assert [s["frames"] for s in result["summary"]] == [4, 8]
    assert all(r["steps"] >= 8 for r in result["runs"])  # the compute rule reached the trainer
    assert (out / "runs" / "n00004_s0" / "best.pt").is_file()
    assert result["test_frames"] == 24 and result["classical"]["frames"] == 24
    rows = list(csv.DictReader(open(out / "scaling.csv")))
    assert [r["method"] for r in rows] == ["learned", "learned", "classical"]
    assert (out / "scaling.png").stat().st_size > 10000
    # Nested subsets: the 4-frame set is the start of the 8-frame set.
    small = json.loads((out / "data" / "train_n00004" / "meta.json").read_text())["frames"]
    big = json.loads((out / "data" / "train_n00008" / "meta.json").read_text())["frames"]
    assert len(small) == 4 and len(big) == 8
    assert [small[k]["source"] for k in sorted(small)] == [big[k]["source"] for k in sorted(big)][:4]
