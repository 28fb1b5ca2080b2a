"""Checkpoint format: weights + model config + preprocessing + metrics + lineage + seed + code version.

torch is imported inside the functions; this module itself is light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Tuple, Union

from edgedepth import __version__
from edgedepth.errors import ModelError, require
from edgedepth.fsutil import file_sha256  # noqa: F401 - re-exported for callers of the checkpoint API
from edgedepth.modelmeta import ModelInfo
from edgedepth.preprocess import Preprocessing

CHECKPOINT_FORMAT = "edgedepth-checkpoint/1"
PathLike = Union[str, "os.PathLike[str]"]


def save_checkpoint(path: PathLike, model, model_config: Dict[str, Any], preprocessing: Preprocessing,
                    **fields: Any) -> Path:
    """Write a checkpoint atomically (temp file, fsync, rename). Extra fields: metrics, lineage, seed,
    epoch, optimizer, scheduler, name, version, training_round, ..."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "code_version": __version__,
        "model_config": dict(model_config),
        "preprocessing": preprocessing.to_dict(),
        "state_dict": state,
        **fields,
    }
    return write_checkpoint(path, payload)


def write_checkpoint(path: PathLike, payload: Dict[str, Any]) -> Path:
    """torch.save a checkpoint dict atomically: temp file, fsync, rename."""
    torch = require("torch", "train")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: PathLike, map_location: str = "cpu") -> Dict[str, Any]:
    """Read a checkpoint dict; raises ModelError with what to do if it is missing or not ours."""
    torch = require("torch", "train")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist; train one with `edgedepth train`")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise ModelError(f"checkpoint {path} is unreadable ({exc}); re-train or re-download it") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not an edgedepth checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return payload


def model_from_checkpoint(path: PathLike, map_location: str = "cpu") -> Tuple[Any, Dict[str, Any]]:
    """(model in eval mode, checkpoint dict)."""
    from edgedepth.models import build_model

    ckpt = load_checkpoint(path, map_location)
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def checkpoint_info(ckpt: Dict[str, Any], checkpoint_sha256: str = "") -> ModelInfo:
    """The ModelInfo (identity + preprocessing) a checkpoint carries, for export metadata."""
    return ModelInfo(
        preprocessing=Preprocessing.from_dict(ckpt["preprocessing"]),
        name=str(ckpt.get("name", "edgedepth")),
        version=str(ckpt.get("version", ckpt.get("code_version", "0"))),
        size=str(ckpt["model_config"].get("size", "")),
        checkpoint_sha256=checkpoint_sha256,
        training_round=int(ckpt.get("training_round", 0)),
        depth_units=str(ckpt.get("depth_units", "metres")),
    )
