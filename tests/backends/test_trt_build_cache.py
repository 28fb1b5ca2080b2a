"""`edgedepth build` keeps an engine whose manifest matches: a second start loads it, no second build."""

from __future__ import annotations

import fake_tensorrt
from click.testing import CliRunner
from trt_fixtures import H, W, write_tiny_onnx

from edgedepth.cli.main import cli


def test_second_build_keeps_the_cached_engine(tmp_path, monkeypatch):
    trt = fake_tensorrt.install(monkeypatch, "10.3.0")
    onnx = write_tiny_onnx(tmp_path / "b" / "model.onnx")
    args = ["build", str(onnx), "--device", "orin-nano-8gb", "--precision", "fp16"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    engine = next((tmp_path / "b" / "engines").glob("*.engine"))
    stamp = engine.stat().st_mtime_ns
    from edgedepth.bench.runtimes import _engine_size

    assert _engine_size(engine) == (H, W)  # `edgedepth bench` reads the engine's input size from its manifest
    builds = [c for c in trt.calls if c[0] == "build_serialized_network"]
    assert len(builds) == 1
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and "engine up to date" in second.output, second.output
    assert len([c for c in trt.calls if c[0] == "build_serialized_network"]) == 1
    assert engine.stat().st_mtime_ns == stamp
    # a changed setting, a changed ONNX or --force builds again
    third = CliRunner().invoke(cli, args + ["--workspace", "512"])
    assert third.exit_code == 0 and "engine up to date" not in third.output
    forced = CliRunner().invoke(cli, args + ["--workspace", "512", "--force"])
    assert forced.exit_code == 0 and len([c for c in trt.calls if c[0] == "build_serialized_network"]) == 3
