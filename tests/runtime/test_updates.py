"""Over-the-air updates in the live loop: a verified newer version swaps in between frames; a broken one
(NaN output) is rolled back by the health check and marked bad; a bundle that cannot load is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgedepth.bundle import write_manifest
from edgedepth.errors import ConfigError
from edgedepth.modelmeta import ModelInfo
from edgedepth.preprocess import Preprocessing


def tiny_bundle(root: Path, scale: float) -> Path:
    """A bundle whose model.onnx maps an image to depth = softplus(scale * mean(rgb)); NaN scale -> NaNs."""
    import onnx
    from onnx import TensorProto, helper

    root.mkdir(parents=True)
    w = np.full((1, 3, 1, 1), scale / 3.0, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["raw"]),
         helper.make_node("Softplus", ["raw"], ["depth"]),
         helper.make_node("Mul", ["raw", "zero"], ["uncertainty"])],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, 32, 32]),
         helper.make_tensor_value_info("uncertainty", TensorProto.FLOAT, [1, 1, 32, 32])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
         helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    info = ModelInfo(preprocessing=Preprocessing(32, 32), name="upd", version=str(scale), size="tiny")
    for k, v in info.to_metadata_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(root / "model.onnx"))
    write_manifest(root)
    return root


@pytest.fixture
def registry(tmp_path):
    from edgedepth.registry.keys import generate_keypair
    from edgedepth.registry.publish import publish_bundle

    key, pub = generate_keypair(tmp_path / "keys")
    reg = tmp_path / "registry"

    def publish(scale: float) -> str:
        name = f"b{len(list(tmp_path.glob('b*')))}"
        entry = publish_bundle(tiny_bundle(tmp_path / name, scale), str(reg), key, promote=True)
        return entry["version"]

    return reg, pub, publish


def run_frames(loop_backend, watcher_factory, frames: int = 30):
    from edgedepth.runtime.capture import open_source
    from edgedepth.runtime.loop import DepthLoop

    source = open_source("synthetic://indoor?seed=3&size=32x32", default_size=(32, 32))
    loop = DepthLoop(source, loop_backend, max_frames=frames)
    watcher = watcher_factory(loop)
    version = watcher.check_once()
    try:
        summary = loop.run()
    finally:
        source.close()
    return loop, watcher, version, summary


def test_newer_version_swaps_in_and_a_broken_one_rolls_back(registry, tmp_path):
    from edgedepth.registry.updater import ModelUpdater
    from edgedepth.runtime.backends import load_backend
    from edgedepth.runtime.updates import RegistryWatcher

    reg, pub, publish = registry
    v1 = publish(1.0)
    updater = ModelUpdater(str(reg), pub, tmp_path / "cache", current_version=None, poll_every_s=0.0)
    first = updater.poll()
    assert first is not None
    updater.confirm(updater.pending_version)
    backend = load_backend(first, backend="ort-cpu", threads=1)

    def factory(loop):
        return RegistryWatcher(loop, updater, lambda p: load_backend(p, backend="ort-cpu", threads=1),
                               health_frames=5)

    # Nothing newer: no swap, the model keeps running.
    loop, watcher, version, summary = run_frames(backend, factory, frames=10)
    assert version is None and summary.frames == 10 and updater.current_version == v1

    v2 = publish(2.0)
    loop, watcher, version, summary = run_frames(loop.backend, factory)
    assert version == v2 and updater.current_version == v2 and summary.errors == 0
    good = loop.backend
    assert good is not backend and good.info.version == "2.0"

    v3 = publish(float("nan"))
    loop, watcher, version, summary = run_frames(good, factory)
    assert version == v3
    assert loop.backend is good, "the NaN model must be rolled back to the previous one"
    assert updater.current_version == v2 and v3 in updater.bad_versions
    assert summary.frames == 30  # the loop never stopped
    # A version marked bad is not offered again.
    assert RegistryWatcher(loop, updater, lambda p: None).check_once() is None


def test_a_bundle_that_cannot_load_is_marked_bad_and_nothing_swaps(registry, tmp_path):
    from edgedepth.errors import ModelError
    from edgedepth.registry.updater import ModelUpdater
    from edgedepth.runtime.updates import RegistryWatcher

    reg, pub, publish = registry
    v1 = publish(1.0)
    updater = ModelUpdater(str(reg), pub, tmp_path / "cache", current_version=None, poll_every_s=0.0)

    class FakeLoop:
        swapped = []

        def swap_backend(self, *a, **k):
            self.swapped.append(a)

    def refuse(path):
        raise ModelError("engine manifest says another TensorRT version; rebuild")

    watcher = RegistryWatcher(FakeLoop(), updater, refuse)
    assert watcher.check_once() is None
    assert FakeLoop.swapped == [] and v1 in updater.bad_versions and watcher.load_failures == 1


def test_duration_parsing_and_registry_needs_a_key(tmp_path):
    from edgedepth.cli.main import cli
    from edgedepth.durations import parse_duration

    assert parse_duration("10m") == 600 and parse_duration("30s") == 30 and parse_duration("2") == 2
    assert parse_duration("1h") == 3600 and parse_duration("7d") == 7 * 86400
    assert parse_duration("500ms") == 0.5
    with pytest.raises(ConfigError, match="positive"):
        parse_duration("0")
    with pytest.raises(ConfigError):
        parse_duration("soon")
    bundle = tiny_bundle(tmp_path / "b", 1.0)
    res = CliRunner().invoke(cli, ["run", str(bundle), "--input", "synthetic://indoor?size=32x32",
                                   "--headless", "--max-frames", "2", "--registry", str(tmp_path)])
    assert res.exit_code == 2 and "--public-key" in res.output
