"""`edgedepth baseline classical` on rendered synthetic sequences (edgedepth.data.synth)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgedepth.cli.main import cli
from edgedepth.data import synth


@pytest.fixture(scope="module")
def sequence_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("seq")
    # Seed 5 renders a textured room (seed 3, e.g., is a bare room where every pair lacks matches).
    synth.write_synth_dataset(out, "indoor", 16, 144, 192, 5, sequence=True, progress=False)
    return out


def test_cli_scores_a_sequence_and_writes_json(sequence_dir, tmp_path):
    report = tmp_path / "classical.json"
    res = CliRunner().invoke(cli, ["baseline", "classical", "--data", str(sequence_dir), "--gap", "6",
                                   "--json", str(report)])
    assert res.exit_code == 0, res.output
    assert "headline" in res.output and "covered" in res.output
    rep = json.loads(report.read_text())
    assert rep["frames"] == 16 and sum(rep["status_counts"].values()) == 16
    assert rep["headline"] == "filled" and len(rep["per_frame"]) == 16
    assert rep["pairs_ok"] >= 8, rep["status_counts"]
    assert 0.2 < rep["coverage"] <= 1.0
    assert rep["covered"]["abs_rel"] < 0.2 and rep["filled"]["d1"] > 0.6
    # The synthetic poses follow the documented convention: RANSAC agrees with them.
    assert rep["match_stats"]["median_known_motion_agreement"] > 0.8


def test_cli_refuses_frames_without_poses(sequence_dir, tmp_path):
    import shutil

    bad = tmp_path / "noposes"
    shutil.copytree(sequence_dir, bad)
    meta = json.loads((bad / "meta.json").read_text())
    for fm in meta["frames"].values():
        fm.pop("pose", None)
    (bad / "meta.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(cli, ["baseline", "classical", "--data", str(bad)])
    assert res.exit_code == 2
    assert "no pose" in res.output and "meta.json" in res.output


def test_cli_refuses_independent_frames(tmp_path):
    synth.write_synth_dataset(tmp_path / "frames", "indoor", 2, 64, 96, 1, sequence=False, progress=False)
    res = CliRunner().invoke(cli, ["baseline", "classical", "--data", str(tmp_path / "frames")])
    assert res.exit_code == 2 and "sequence" in res.output
