"""The model bundle: a directory of artifacts plus `manifest.json` listing every file with its SHA-256.

Written by export / calibrate / build / publish, read by the runtime and the registry. Light on purpose:
model info is read straight from the ONNX protobuf bytes (no `onnx` or `onnxruntime` import).

Layout::

    BUNDLE/ model.onnx                 FP32 network with edgedepth metadata
            model.int8.trt.onnx        symmetric INT8 Q/DQ for TensorRT
            model.int8.cpu.onnx        INT8 layout fastest on onnxruntime CPU
            calibration.json           calibration report; calibration.cache: TensorRT implicit-INT8 cache
            engines/model.<board>.<precision>.trt<ver>.engine (+ .json engine manifest)
            metrics.json, lineage.json (optional)
            manifest.json              {"format", "files": {path: {sha256, size}}, "model": {...}, ...}
            manifest.sig               detached Ed25519 signature over manifest.json (added by publish)
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from edgedepth.errors import ModelError
from edgedepth.fsutil import file_sha256
from edgedepth.onnxproto import _fields, onnx_header  # noqa: F401  (re-exported: bundle.onnx_header)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MODEL_FP32 = "model.onnx"
MODEL_INT8_TRT = "model.int8.trt.onnx"
MODEL_INT8_CPU = "model.int8.cpu.onnx"
CALIB_REPORT = "calibration.json"
CALIB_CACHE = "calibration.cache"
ENGINES_DIR = "engines"
METRICS = "metrics.json"
LINEAGE = "lineage.json"
BUNDLE_FORMAT = "edgedepth-bundle/1"

# Keys of manifest.json that write_manifest owns; every other key is carried over between rewrites.
_CORE_KEYS = ("format", "created", "files", "model")
_NEVER_LISTED = (MANIFEST, SIGNATURE)

PathLike = Union[str, "os.PathLike[str]"]


def _is_temp(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.startswith(".") or name.endswith((".tmp", ".partial"))


def _bundle_files(root: Path) -> List[str]:
    """Relative POSIX paths of every regular file in the bundle, sorted, minus manifest/signature/temp."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel in _NEVER_LISTED or _is_temp(rel):
                continue
            out.append(rel)
    return sorted(out)


def model_info_dict(onnx_path: PathLike) -> Dict[str, Any]:
    """The `model` section of a manifest: identity, preprocessing and opset read from model.onnx."""
    head = onnx_header(onnx_path)
    meta = head["metadata"]
    out: Dict[str, Any] = {"opset": head["opset"].get("ai.onnx"), "ir_version": head["ir_version"]}
    for key, name in (("edgedepth.model", None), ("edgedepth.preprocessing", "preprocessing"),
                      ("edgedepth.outputs", "outputs")):
        if key not in meta:
            continue
        try:
            value = json.loads(meta[key])
        except ValueError as exc:
            raise ModelError(f"{onnx_path}: metadata {key} is not JSON ({exc}); re-export it") from exc
        if name is None and isinstance(value, dict):
            out.update(value)
        else:
            out[name] = value
    for key, value in meta.items():
        if key.startswith("edgedepth.") and key not in ("edgedepth.model", "edgedepth.preprocessing",
                                                         "edgedepth.outputs"):
            out.setdefault("metadata", {})[key] = value
    return out


# ---------------------------------------------------------------- manifest read / write / verify
def _write_json_atomic(path: Path, payload: Dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(str(path.parent), os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: PathLike, payload: Dict[str, Any]) -> Path:
    """Write JSON via temp file + fsync + rename (used for reports and engine manifests too)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(path, payload)
    return path


def write_manifest(bundle_dir: PathLike, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """(Re)write BUNDLE/manifest.json listing every file (sha256 + size) plus model info and `extra`.

    Keys of an existing manifest other than format/created/files/model are kept unless `extra`
    replaces them (a None value in `extra` deletes the key). An existing manifest.sig is removed, since
    it no longer signs the new manifest.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise ModelError(f"bundle directory {root} does not exist; create it with `edgedepth export`")
    previous: Dict[str, Any] = {}
    if (root / MANIFEST).is_file():
        try:
            previous = read_manifest(root)
        except ModelError:
            previous = {}
    manifest: Dict[str, Any] = {k: v for k, v in previous.items() if k not in _CORE_KEYS}
    for key, value in (extra or {}).items():
        if key in _CORE_KEYS:
            raise ModelError(f"manifest key '{key}' is computed by write_manifest and cannot be set")
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    files = {}
    for rel in _bundle_files(root):
        p = root / rel
        files[rel] = {"sha256": file_sha256(p), "size": p.stat().st_size}
    manifest.update({
        "format": BUNDLE_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
        "model": model_info_dict(root / MODEL_FP32) if (root / MODEL_FP32).is_file() else {},
    })
    sig = root / SIGNATURE
    if sig.exists():  # it signed the previous manifest bytes; publish signs the new one
        sig.unlink()
    _write_json_atomic(root / MANIFEST, manifest)
    return manifest


def read_manifest(bundle_dir: PathLike) -> Dict[str, Any]:
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise ModelError(f"{path} is missing: not a bundle, or written by an interrupted export; "
                         "re-run `edgedepth export`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is unreadable ({exc}); re-export or re-download the bundle") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise ModelError(f"{path} is not an edgedepth bundle manifest ({BUNDLE_FORMAT} expected)")
    return manifest


def verify_bundle(bundle_dir: PathLike, ignore_extra: Sequence[str] = ()) -> Dict[str, Any]:
    """Check every listed file exists with its size and SHA-256, and no unlisted file is present.

    `ignore_extra`: glob patterns of unlisted files to tolerate (e.g. "engines/*" for engines built on
    the device after download). Returns the manifest; raises ModelError naming the first problem.
    """
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    listed = manifest["files"]
    for rel in sorted(listed):
        entry = listed[rel]
        p = root / rel
        if not p.is_file():
            raise ModelError(f"bundle {root}: file '{rel}' listed in the manifest is missing; "
                             "re-download the bundle")
        if p.stat().st_size != entry.get("size"):
            raise ModelError(f"bundle {root}: '{rel}' has size {p.stat().st_size}, manifest says "
                             f"{entry.get('size')}; the file was modified or truncated, re-download it")
        if file_sha256(p) != entry.get("sha256"):
            raise ModelError(f"bundle {root}: '{rel}' does not match its manifest SHA-256; "
                             "the file was modified, re-download the bundle")
    for rel in _bundle_files(root):
        if rel not in listed and not any(fnmatch.fnmatch(rel, pat) for pat in ignore_extra):
            raise ModelError(f"bundle {root}: file '{rel}' is not listed in the manifest; remove it or "
                             "refresh the manifest (edgedepth export/calibrate/build rewrite it)")
    return manifest


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")  # no dots: readers split the file name on "."
_SAFE_VERSION = re.compile(r"[^0-9A-Za-z.]+")


def engine_file_name(board: str, precision: str, trt_version: str) -> str:
    """model.<board>.<precision>.trt<version>.engine (engines are tied to TensorRT version + GPU)."""
    parts = [_SAFE_NAME.sub("-", str(board)).strip("-"), _SAFE_NAME.sub("-", str(precision)).strip("-"),
             _SAFE_VERSION.sub("-", str(trt_version)).strip("-.")]
    if not all(parts):
        raise ModelError(f"engine name needs a board, precision and TensorRT version, got {parts}")
    return f"model.{parts[0]}.{parts[1]}.trt{parts[2]}.engine"


def engine_manifest_name(board: str, precision: str, trt_version: str) -> str:
    """The JSON engine manifest that sits beside the engine file."""
    return engine_file_name(board, precision, trt_version)[: -len(".engine")] + ".json"
