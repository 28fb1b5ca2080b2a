"""`--backend auto` chooses by measurement on this machine, caches the choice, and says why."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from edgedepth.runtime import backend_choice
from edgedepth.runtime.backend_choice import choose_backend, load_for_run


@pytest.fixture()
def bundle(tmp_path, tiny_onnx, onnx_factory):
    """model.onnx (tiny 64x96) and an INT8-cpu slot holding a model 20x the pixels, which the
    calibration report calls 1.17x faster (a workstation's figure)."""
    b = tmp_path / "bundle"
    b.mkdir()
    shutil.copy(tiny_onnx, b / "model.onnx")
    onnx_factory(b / "model.int8.cpu.onnx", height=256, width=480, seed=1)
    report = {"targets": {"cpu": {"written": True, "gate_passed": True, "artifact": "model.int8.cpu.onnx",
                                  "chosen_method": "minmax",
                                  "methods": {"minmax": {"speed": {"ratio": 1.17}}}}}}
    (b / "calibration.json").write_text(json.dumps(report))
    return b


def test_auto_takes_the_measured_fastest_not_the_report(bundle, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        be = choose_backend(bundle, threads=1, runs=10, cache=tmp_path / "cache")
    assert be.model_path.endswith("model.onnx") and be.name == "ort-cpu"
    assert "model.int8.cpu.onnx" in be.reason and "model.onnx" in be.reason and " ms" in be.reason
    assert "median of 10 warm runs" in caplog.text
    be.close()
    [cached] = list((tmp_path / "cache").glob("*.json"))
    record = json.loads(cached.read_text())
    assert record["choice"]["model"] == "model.onnx"
    assert {c["model"] for c in record["candidates"]} == {"model.onnx", "model.int8.cpu.onnx"}
    assert record["machine"]["threads"] == 1 and record["runs"] == 10


def test_choice_is_cached_per_bundle_and_machine(bundle, tmp_path, monkeypatch, onnx_factory):
    figures = {"model.onnx": 2.0, "model.int8.cpu.onnx": 1.0}
    calls = []

    def fake_measure(backend, runs=20):
        name = backend.model_path.rsplit("/", 1)[-1]
        calls.append(name)
        return {"median_ms": figures[name], "p90_ms": figures[name], "runs": runs}

    monkeypatch.setattr(backend_choice, "measure", fake_measure)
    cache = tmp_path / "cache"
    be = choose_backend(bundle, threads=1, cache=cache)
    assert be.model_path.endswith("model.int8.cpu.onnx") and len(calls) == 2
    be.close()
    be = choose_backend(bundle, threads=1, cache=cache)  # cached: nothing measured
    assert be.model_path.endswith("model.int8.cpu.onnx") and len(calls) == 2
    assert "cached in" in be.reason and "1.000 ms" in be.reason
    be.close()
    be = choose_backend(bundle, threads=2, cache=cache)  # another machine setting: measured again
    assert len(calls) == 4
    be.close()
    onnx_factory(bundle / "model.onnx", seed=3)  # another model in the bundle: measured again
    be = choose_backend(bundle, threads=1, cache=cache)
    assert len(calls) == 6
    be.close()


def test_int8_that_failed_its_gate_is_not_a_candidate(bundle, tmp_path):
    report = json.loads((bundle / "calibration.json").read_text())
    report["targets"]["cpu"]["gate_passed"] = False
    (bundle / "calibration.json").write_text(json.dumps(report))
    found, notes = backend_choice.candidates(bundle, None)
    assert [p.name for _, p in found] == ["model.onnx"]
    assert any("accuracy gate" in n for n in notes)


def test_explicit_backend_and_single_files_are_loaded_as_given(bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(backend_choice, "choose_backend", lambda *a, **k: pytest.fail("measured"))
    be = load_for_run(bundle / "model.int8.cpu.onnx", backend="auto", threads=1)
    assert be.model_path.endswith("model.int8.cpu.onnx")
    be.close()
    be = load_for_run(bundle, backend="ort-cpu", threads=1)
    be.close()
