"""`edgedepth data synth` and `edgedepth data info` end to end through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from edgedepth.cli.main import cli
from edgedepth.data.dataset import open_dataset


def _out(result) -> str:
    text = result.output
    try:
        text += result.stderr
    except ValueError:  # older click: stderr mixed into output
        pass
    return text


def test_synth_then_info(tmp_path):
    out = tmp_path / "ds"
    r = CliRunner().invoke(
        cli,
        [
            "data",
            "synth",
            "--domain",
            "fog",
            "--frames",
            "3",
            "--size",
            "32x48",
            "--seed",
            "7",
            "--out",
            str(out),
            "--sequence",
        ],
    )
    assert r.exit_code == 0, _out(r)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"] == "synthetic" and meta["domain"] == "fog" and meta["sequence"] is True
    assert np.array(meta["intrinsics"]).shape == (3, 3)
    assert sorted(meta["frames"]) == ["000000", "000001", "000002"]
    assert all(f["domain"] == "fog" and np.array(f["pose"]).shape == (4, 4) for f in meta["frames"].values())
    ds = open_dataset(str(out))
    assert len(ds) == 3 and ds[0].rgb.shape == (32, 48, 3) and ds.domains == ["fog"] * 3
    assert ds[1].pose is not None and ds[1].valid.any()
    r = CliRunner().invoke(cli, ["data", "info", str(out)])
    assert r.exit_code == 0, _out(r)
    assert "count:       3" in r.output and "fog (3)" in r.output and "32x48" in r.output
    r = CliRunner().invoke(cli, ["data", "info", "--json", str(out)])
    assert json.loads(r.output)["count"] == 3


def test_synth_is_deterministic(tmp_path):
    for name in ("a", "b"):
        r = CliRunner().invoke(
            cli,
            [
                "data",
                "synth",
                "--frames",
                "2",
                "--size",
                "24x32",
                "--seed",
                "3",
                "--out",
                str(tmp_path / name),
                "--no-progress",
            ],
        )
        assert r.exit_code == 0, _out(r)
    for f in ("rgb/000001.png", "depth/000001.png"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_synth_rejects_bad_input(tmp_path):
    r = CliRunner().invoke(cli, ["data", "synth", "--domain", "mars", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "indoor, outdoor, night, fog, clutter" in _out(r)
    r = CliRunner().invoke(cli, ["data", "synth", "--size", "96by128", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "HEIGHTxWIDTH" in _out(r)
    r = CliRunner().invoke(cli, ["data", "info", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "does not exist" in _out(r)
