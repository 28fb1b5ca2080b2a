"""The fleet simulation with teacher labels instead of the uploaded ground truth (--quick scale)."""

from __future__ import annotations

import json

import pytest

from edgedepth.errors import ConfigError
from edgedepth.sim.config import SimConfig, quick_config


def test_label_source_needs_a_teacher():
    with pytest.raises(ConfigError, match="teacher"):
        SimConfig(label_source="teacher").validate()
    with pytest.raises(ConfigError, match="label source"):
        SimConfig(label_source="sensor").validate()


def test_rounds_are_labelled_by_the_teacher(tmp_path, tiny_ckpt):
    from edgedepth.sim.simulate import run_simulation

    cfg = quick_config(workdir=str(tmp_path), progress=False, strategies=["hard"], label_source="teacher",
                       teacher=str(tiny_ckpt))
    run_simulation(cfg, say=lambda _line: None)
    lineage = json.loads((tmp_path / "runs" / "seed0" / "hard" / "rounds" / "1" / "lineage.json").read_text())
    new = [f for f in lineage["frames"] if f["item"]]  # uploaded frames (not replay)
    assert new and {f["label_kind"] for f in new} == {"teacher-metric"}
    assert lineage["teacher"]["path"] == str(tiny_ckpt)
    assert lineage["report"]["label_kinds"] == {"teacher-metric": len(new)}
