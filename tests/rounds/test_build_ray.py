"""`round build --ray`: the embedding and labelling steps on a local Ray instance give the same round as
the single-process build (same frames, splits, labels, lineage)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'edgedepth[scale]')")

from edgedepth.fleet.store.local import LocalStore  # noqa: E402
from edgedepth.rounds.build import RoundConfig, build_round  # noqa: E402

HERE = Path(__file__).resolve().parent


def _kit():
    spec = importlib.util.spec_from_file_location("_edgedepth_rounds_test_build", HERE / "test_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield "auto"
    ray.shutdown()


def _frames(root: Path):
    from edgedepth.data.dataset import open_dataset

    ds = open_dataset(str(root))
    return {ds[i].name: (ds[i].rgb, ds[i].depth) for i in range(len(ds))}


def test_ray_build_matches_the_single_process_build(tmp_path, local_ray):
    kit = _kit()
    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    rgb0 = None
    for i in range(14):
        dev = "dev-a" if i < 7 else "dev-b"
        rgb = rgb0 if i == 5 else None  # one exact copy of frame 0: a near-duplicate
        _, made, _ = kit.make_item(store, i, device=dev, t=f"2026-11-24T18:{i:02d}:00.000Z", depth=i != 13,
                                   domain="fog" if i % 2 else "indoor", score=i / 10, rgb=rgb)
        rgb0 = made if i == 0 else rgb0
    store.close()
    common = dict(store=str(tmp_path / "store"), val_fraction=0.3, time_block_s=120.0, seed=3)
    one = build_round(RoundConfig(out=str(tmp_path / "one"), **common))
    from edgedepth.rounds.raysteps import build_round_ray

    rep = build_round_ray(RoundConfig(out=str(tmp_path / "ray"), **common), local_ray, workers=1)
    assert rep.duplicates == one.duplicates == 1 and rep.unlabelled == one.unlabelled == 1
    assert (rep.train, rep.val, rep.labelled) == (one.train, one.val, one.labelled)
    for split in ("", "val"):
        a, b = _frames(tmp_path / "one" / split), _frames(tmp_path / "ray" / split)
        assert sorted(a) == sorted(b) and a
        for name in a:
            np.testing.assert_array_equal(a[name][0], b[name][0])
            np.testing.assert_array_equal(a[name][1], b[name][1])
    la = json.loads((tmp_path / "one" / "lineage.json").read_text())
    lb = json.loads((tmp_path / "ray" / "lineage.json").read_text())
    keys = ("name", "split", "item", "label", "domain", "device_id", "captured_at", "replay_of")
    assert [{k: f[k] for k in keys} for f in la["frames"]] == [{k: f[k] for k in keys} for f in lb["frames"]]
    assert lb["engine"]["ray"] == "auto"
