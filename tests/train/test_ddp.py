"""Two-process DistributedDataParallel run on CPU (gloo) through torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from edgedepth.checkpoint import load_checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_gloo(tmp_path, folder_dataset):
    data = folder_dataset("train", n=16, h=64, w=96, seed=1)
    val = folder_dataset("val", n=4, h=64, w=96, seed=2)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "edgedepth", "train", "--data", str(data), "--val", str(val),
           "--model", "tiny", "--size", "64x96", "--epochs", "2", "--batch-size", "4", "--out", str(out),
           "--device", "cpu", "--no-progress", "--workers", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "terminate called" not in res.stderr
    summary = json.loads((out / "run.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_completed"] == 2
    # 16 frames / 2 ranks / batch 4 = 2 steps per epoch on each rank
    assert summary["steps"] == 4
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 1 and ck["train_state"]["world_size"] == 2
    assert res.stdout.count("best epoch") == 1  # only rank 0 reports


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_devices() < 2, reason="the NCCL path needs 2 CUDA devices (NCCL refuses two ranks "
                    f"on one GPU); this machine has {_cuda_devices()}")
def test_torchrun_two_processes_nccl(tmp_path, folder_dataset):
    """The same run on CUDA: one rank per GPU, NCCL (edgedepth.train.distributed picks it with CUDA)."""
    data = folder_dataset("train", n=32, h=64, w=96, seed=1)
    val = folder_dataset("val", n=4, h=64, w=96, seed=2)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1", NCCL_DEBUG="INFO")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "edgedepth", "train", "--data", str(data), "--val", str(val),
           "--model", "tiny", "--size", "64x96", "--epochs", "2", "--batch-size", "4", "--out", str(out),
           "--device", "cuda", "--no-progress", "--workers", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "NCCL" in res.stdout + res.stderr  # the process group ran on NCCL
    summary = json.loads((out / "run.json").read_text())
    assert summary["world_size"] == 2 and summary["device"].startswith("cuda")
    assert summary["steps"] == 8  # 32 frames / 2 ranks / batch 4 = 4 steps per epoch on each rank
