"""The engine manifest (engines/<engine>.json): what an engine was built from and with, checked before use.

`edgedepth build` writes it; the runtime refuses an engine built for another TensorRT version, GPU
architecture, board or ONNX file, or whose bytes changed. Versions compare as integer tuples.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from edgedepth.errors import ModelError
from edgedepth.fsutil import file_sha256
from edgedepth.modelmeta import KEY_PREPROCESSING, ModelInfo, read_onnx_info
from edgedepth.preprocess import Preprocessing

ENGINE_FORMAT = "edgedepth-engine/1"


def version_tuple(version: Any) -> Tuple[int, ...]:
    """'8.6.2.3' -> (8, 6, 2, 3); '10.3.0.post1' -> (10, 3, 0). Never compare version strings."""
    out = []
    for part in str(version).split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def read_manifest(engine_path: Path) -> dict:
    manifest_path = Path(engine_path).with_suffix(".json")
    if not manifest_path.is_file():
        raise ModelError(
            f"{Path(engine_path).name} has no manifest {manifest_path.name} beside it; rebuild it with "
            "`edgedepth build` so its TensorRT version, board and model hash are recorded"
        )
    try:
        return json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"engine manifest {manifest_path} is unreadable ({exc}); rebuild the engine"
        ) from exc


def check_engine_manifest(
    manifest: Dict[str, Any], trt_version: str, gpu_sm: Optional[str], onnx_sha256: Optional[str] = None
) -> None:
    """Refuse an engine built for another TensorRT version, GPU architecture or ONNX file."""
    if manifest.get("format") != ENGINE_FORMAT:
        raise ModelError(
            f"engine manifest format {manifest.get('format')!r} is not {ENGINE_FORMAT}; rebuild "
            "the engine with `edgedepth build`"
        )
    name = manifest.get("engine", "engine")
    built = str(manifest.get("tensorrt", ""))
    if version_tuple(built)[:3] != version_tuple(trt_version)[:3]:
        raise ModelError(
            f"{name} was built with TensorRT {built} but this device has {trt_version}: engines "
            f"are not portable across versions; rebuild it here with `edgedepth build`"
        )
    check_gpu(manifest, gpu_sm)
    if onnx_sha256 and manifest.get("onnx_sha256") and manifest["onnx_sha256"] != onnx_sha256:
        raise ModelError(
            f"{name} was built from a different ONNX file than the bundle's; rebuild it with "
            "`edgedepth build`"
        )


def check_gpu(manifest: Dict[str, Any], gpu_sm: Optional[str]) -> None:
    """Refuse an engine built for another GPU architecture (SM) than `gpu_sm` (None: not known yet)."""
    if gpu_sm and manifest.get("gpu_sm") and str(manifest["gpu_sm"]) != str(gpu_sm):
        raise ModelError(
            f"{manifest.get('engine', 'engine')} was built for SM {manifest['gpu_sm']} but this GPU is SM "
            f"{gpu_sm}; rebuild it on this device with `edgedepth build`"
        )


def check_manifest(
    engine_path: Path, manifest: dict, trt_version: str, board: Optional[str], gpu_sm: Optional[str] = None
) -> None:
    """check_engine_manifest plus the board, the source ONNX's hash and the engine file's own hash."""
    engine_path = Path(engine_path)
    onnx_path = source_onnx(engine_path, manifest)
    onnx_sha = file_sha256(onnx_path) if onnx_path is not None else None
    check_engine_manifest(
        dict(manifest, engine=manifest.get("engine", engine_path.name)), trt_version, gpu_sm, onnx_sha
    )
    built_for = manifest.get("board")
    if board and built_for and built_for != board:
        raise ModelError(
            f"{engine_path.name} was built for board {built_for}, not {board}; build one for this "
            f"board with `edgedepth build BUNDLE/model.onnx --device {board}`"
        )
    want = manifest.get("engine_sha256")
    if want and file_sha256(engine_path) != want:
        raise ModelError(
            f"{engine_path.name}: its sha256 does not match its manifest; the file is corrupt or "
            "was replaced - rebuild it with `edgedepth build`"
        )


def source_onnx(engine_path: Path, manifest: dict) -> Optional[Path]:
    """The bundle's ONNX file the engine was built from (BUNDLE/engines/x.engine -> BUNDLE/<onnx>)."""
    name = manifest.get("onnx")
    if not name:
        return None
    for folder in (engine_path.parent.parent, engine_path.parent):
        if (folder / name).is_file():
            return folder / name
    return None


def info_from_manifest(manifest: dict, engine_path: Path) -> ModelInfo:
    """Preprocessing and identity: from the manifest when it carries them, else from the source ONNX."""
    props = manifest.get("metadata_props") or manifest.get("metadata")
    if isinstance(props, dict) and KEY_PREPROCESSING in props:
        return ModelInfo.from_metadata_props(
            {str(k): str(v) for k, v in props.items()}, source=str(engine_path)
        )
    pre = manifest.get("preprocessing")
    if isinstance(pre, dict):
        model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
        return ModelInfo(
            preprocessing=Preprocessing.from_dict(pre),
            name=str(model.get("name", "edgedepth")),
            version=str(model.get("version", "0")),
            size=str(model.get("size", "")),
            checkpoint_sha256=str(model.get("checkpoint_sha256", "")),
        )
    onnx_path = source_onnx(engine_path, manifest)
    if onnx_path is not None:
        return read_onnx_info(str(onnx_path))
    raise ModelError(
        f"{engine_path.name}: neither its manifest nor the bundle ({manifest.get('onnx')!r} missing) "
        "says how to preprocess frames; keep the engine inside its bundle's engines/ folder"
    )
