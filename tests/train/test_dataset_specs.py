"""`train`, `eval` and `data info` take the same dataset specs: an NYU Depth v2 labelled .mat made here
(with and without the nyu: prefix), trained on from the command line, then scored with the protocols."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgedepth.data.dataset import resolve_spec
from edgedepth.errors import DataError
from edgedepth.train.config import TrainConfig

from .conftest import make_scene

h5py = pytest.importorskip("h5py")
REPO = Path(__file__).resolve().parents[2]


def nyu_mat(path: Path, n: int = 16, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    """The labelled .mat layout as h5py sees MATLAB v7.3: images (N,3,W,H) uint8, depths (N,W,H) metres."""
    rng = np.random.default_rng(seed)
    scenes = [make_scene(rng, h, w) for _ in range(n)]
    with h5py.File(path, "w") as f:
        f["images"] = np.stack([s[0] for s in scenes]).transpose(0, 3, 2, 1)
        f["depths"] = np.stack([s[1] for s in scenes]).transpose(0, 2, 1)
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgedepth", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_train_eval_info_on_an_nyu_mat(tmp_path):
    mat = nyu_mat(tmp_path / "nyu_depth_v2_labeled.mat")
    val = nyu_mat(tmp_path / "val.mat", n=4, seed=1)
    out = tmp_path / "run"
    res = cli("train", "--data", f"nyu:{mat}", "--val", val, "--model", "tiny", "--size", "32x64",
              "--epochs", "1", "--batch-size", "8", "--workers", "1", "--out", out, "--no-progress",
              "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "best.pt").is_file() and "best epoch 1" in res.stdout
    res = cli("eval", out / "best.pt", "--data", f"nyu:{val}", "--crop", "eigen", "--median-scaling",
              "--json", tmp_path / "eval.json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"protocol nyu:{val}: crop eigen, median scaling on, depth 0.001..10 m" in res.stdout
    rep = json.loads((tmp_path / "eval.json").read_text())
    assert len(rep["frames"]) == 4 and 0 < rep["overall"]["abs_rel"] < 10
    res = cli("data", "info", f"{mat},nyu:{val}", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["count"] == 20


def test_specs_resolve_the_same_everywhere(tmp_path):
    mat = nyu_mat(tmp_path / "x.mat", n=2)
    assert resolve_spec(str(mat)) == ("nyu", mat) == resolve_spec(f"nyu:{mat}")
    TrainConfig(data=[f"nyu:{mat}"], val=[str(mat)], out=str(tmp_path / "o"), epochs=1).validate()
    with pytest.raises(DataError, match="does not exist; give a folder with rgb/"):
        TrainConfig(data=[f"nyu:{tmp_path / 'gone.mat'}"], out=str(tmp_path / "o"), epochs=1).validate()
    with pytest.raises(DataError, match="must be the labelled .mat"):
        resolve_spec(f"nyu:{tmp_path}")
    with pytest.raises(DataError, match="must be a folder"):
        resolve_spec(f"kitti:{mat}")
