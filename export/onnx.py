"""Checkpoint -> FP32 ONNX that TensorRT 8.2+ parses, with edgedepth metadata, checked for parity.

Uses torch's TorchScript exporter (dynamo=False): in torch 2.13 it still exports this network at
opsets 11-17 with BatchNorm folded into the convolutions, while the torch.export-based exporter
targets opset 18+, beyond what TensorRT 8.x (JetPack 4/5) can parse.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from edgedepth import bundle
from edgedepth.errors import ConfigError, ModelError, require
from edgedepth.modelmeta import KEY_SELECTION
from edgedepth.preprocess import (
    INPUT_FLOAT,
    INPUT_NAME,
    OUTPUT_DEPTH,
    OUTPUT_DOC,
    OUTPUT_UNCERTAINTY,
    SELECTION_STRIDE,
    InputSpec,
)

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 13  # per-axis Q/DQ (per-channel INT8 weights) needs 13
DEFAULT_TOLERANCE = 1e-4
# A uint8 graph that resizes differs from the float pipeline, which rounds its resized image to whole grey
# levels, by up to half a level per pixel (see export/input_graph.py); this bounds the depth it may move.
RESIZE_TOLERANCE = 2e-2
KEY_EXPORT = "edgedepth.export"

GRAPH_DOC = (
    "edgedepth monocular depth network. Input '{inp}': {idoc}. Outputs '{d}': {dd}. '{u}': {ud}."
)
FLOAT_INPUT_DOC = "float32 (N,3,H,W) RGB normalised with the mean/std in metadata 'edgedepth.preprocessing'"


def choose_opset(opset: Optional[int], device=None) -> int:
    """The requested opset checked against the target's TensorRT parser, or the highest it accepts."""
    limit = device.max_onnx_opset if device is not None else DEFAULT_OPSET
    if opset is None:
        return min(limit, DEFAULT_OPSET)
    if opset < MIN_OPSET:
        raise ConfigError(f"opset {opset} is too low: per-channel INT8 Q/DQ needs opset >= {MIN_OPSET}; "
                          f"use {MIN_OPSET}")
    if opset > limit:
        where = f"TensorRT {device.tensorrt} on {device.board}" if device is not None else "the default"
        raise ConfigError(f"opset {opset} is above what {where} accepts; use --opset {limit}")
    return opset


def _torch_export(model, dummy, opset: int, dynamic_batch: bool) -> bytes:
    torch = require("torch", "train")
    buf = io.BytesIO()
    axes = {n: {0: "N"} for n in (INPUT_NAME, OUTPUT_DEPTH, OUTPUT_UNCERTAINTY)} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # legacy exporter notice
        torch.onnx.export(model, (dummy,), buf, dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_DEPTH, OUTPUT_UNCERTAINTY],
                          dynamic_axes=axes, training=torch.onnx.TrainingMode.EVAL)
    return buf.getvalue()


def _document(mp, info_props: Dict[str, str], input_doc: str = FLOAT_INPUT_DOC) -> None:
    graph = mp.graph
    graph.name = "edgedepth"
    graph.doc_string = GRAPH_DOC.format(inp=INPUT_NAME, idoc=input_doc, d=OUTPUT_DEPTH,
                                        dd=OUTPUT_DOC[OUTPUT_DEPTH], u=OUTPUT_UNCERTAINTY,
                                        ud=OUTPUT_DOC[OUTPUT_UNCERTAINTY])
    for vi in graph.input:
        if vi.name == INPUT_NAME and not vi.doc_string:
            vi.doc_string = "normalised RGB image, float32 (N,3,H,W); see edgedepth.preprocessing"
    for vi in graph.output:
        vi.doc_string = OUTPUT_DOC.get(vi.name, vi.doc_string)
    mp.producer_name = "edgedepth"
    del mp.metadata_props[:]
    for key, value in sorted(info_props.items()):
        entry = mp.metadata_props.add()
        entry.key, entry.value = key, value


def export_onnx(checkpoint: str, out_dir: str, size: Optional[Tuple[int, int]] = None,
                opset: Optional[int] = None, device: Optional[str] = None, dynamic_batch: bool = False,
                data: Optional[str] = None, parity_frames: int = 32,
                tolerance: float = DEFAULT_TOLERANCE, input_format: str = INPUT_FLOAT,
                input_size: Optional[Tuple[int, int]] = None,
                selection_stride: int = SELECTION_STRIDE) -> Dict[str, Any]:
    """Write OUT_DIR/model.onnx from a checkpoint, check it, compare with PyTorch, refresh the manifest.

    With a uint8 `input_format` the file takes the camera's image (N,H,W,3 uint8 at `input_size`,
    default the model's size) and preprocesses it inside the graph (export/input_graph.py); that graph
    is also compared with the float pipeline on camera-size frames.
    Returns a report dict (opset, ops, parity figures, timings). Raises ModelError when parity exceeds
    `tolerance` (max relative depth error) - the file is then removed, not left half-trusted.
    """
    torch = require("torch", "train")
    onnx = require("onnx", "train")
    from edgedepth.export import graph as graph_passes
    from edgedepth.export.parity import format_parity, torch_parity

    from edgedepth.checkpoint import checkpoint_info, file_sha256, model_from_checkpoint
    from edgedepth.devices import load_device

    t0 = time.perf_counter()
    dev = load_device(device) if device else None
    opset = choose_opset(opset, dev)
    model, ckpt = model_from_checkpoint(checkpoint)
    info = checkpoint_info(ckpt, file_sha256(checkpoint))
    if size is not None and size != info.preprocessing.size:
        info.preprocessing = dataclasses.replace(info.preprocessing, height=size[0], width=size[1])
    pre = info.preprocessing
    if input_format == INPUT_FLOAT:
        if input_size is not None:
            raise ConfigError("--input-size is the camera's image size of a uint8 input; it needs "
                              "--input-format uint8-hwc-bgr or uint8-hwc-rgb (--size sets the model's size)")
        spec = InputSpec()
    else:
        cam = input_size or pre.size
        spec = InputSpec(input_format, int(cam[0]), int(cam[1]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    dummy = torch.zeros(1, 3, pre.height, pre.width)
    raw = _torch_export(model, dummy, opset, dynamic_batch)
    t_export = time.perf_counter() - t0
    mp = onnx.load_from_string(raw)
    cleaned = graph_passes.clean_graph(mp)
    ops = graph_passes.op_histogram(mp)
    if "BatchNormalization" in ops:
        raise ModelError("BatchNormalization survived export (model not in eval mode?); TensorRT and the "
                         "quantizer expect it folded into the convolutions")
    if selection_stride:  # the frame selector's per-frame features as a third output (GPU work)
        from edgedepth.export.selection_graph import add_selection_output

        info.extra = {**info.extra, KEY_SELECTION: add_selection_output(mp, pre, selection_stride)}
    export_meta = {
        "opset": opset, "input_size": [pre.height, pre.width], "dynamic_batch": bool(dynamic_batch),
        "target_device": dev.board if dev else None, "torch": torch.__version__, "onnx": onnx.__version__,
        "exporter": "torchscript", "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    props = info.to_metadata_props()
    props[KEY_EXPORT] = json.dumps(export_meta, sort_keys=True)
    _document(mp, props)
    try:
        mp = onnx.shape_inference.infer_shapes(mp, check_type=True, strict_mode=True)
        onnx.checker.check_model(mp, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"exported graph fails the ONNX checker: {exc}") from exc
    int64 = graph_passes.int64_initializers(mp)
    target = out / bundle.MODEL_FP32
    tmp = out / f".{bundle.MODEL_FP32}.tmp{os.getpid()}"
    tmp.write_bytes(mp.SerializeToString())
    t_write = time.perf_counter() - t0

    # Parity on real validation frames (or synthetic ones) before the file replaces the old one.
    from edgedepth.data.frames import get_frames

    frames = get_frames(data, parity_frames, pre.height, pre.width, seed=1000)
    if len(frames) > parity_frames:
        frames = frames.subset(range(parity_frames))
    gt = frames.depth if frames.has_depth else None
    with torch.no_grad():
        parity = torch_parity(model, str(tmp), frames.rgb, pre, gt)
    for line in format_parity(parity):
        log.info(line)
    if not parity["max_rel_depth"] <= tolerance:  # also catches NaN
        tmp.unlink()
        raise ModelError(f"ONNX output differs from PyTorch: max relative depth error "
                         f"{parity['max_rel_depth']:.3e} > tolerance {tolerance:.1e} on {parity['frames']} "
                         "frames; the export is refused (check for unsupported ops or a lower --opset)")
    input_report = None
    if spec.is_uint8:
        tmp, input_report = _with_uint8_input(onnx, mp, info, export_meta, spec, out, tmp, data,
                                              parity_frames, tolerance)
        for line in input_report["lines"]:
            log.info(line)
    os.replace(tmp, target)
    report = {
        "path": str(target), "opset": opset, "ops": ops, "cleanup": cleaned, "int64_initializers": int64,
        "input": ([1 if not dynamic_batch else "N", 3, pre.height, pre.width] if not spec.is_uint8 else
                  [1 if not dynamic_batch else "N", spec.height, spec.width, 3]),
        "input_format": spec.format, "input_graph": input_report,
        "parity": parity, "parity_source": frames.source, "tolerance": tolerance,
        "times_s": {"export": round(t_export, 3), "check_write": round(t_write - t_export, 3),
                    "parity": round(time.perf_counter() - t0 - t_write, 3)},
        "checkpoint": str(checkpoint), "checkpoint_sha256": info.checkpoint_sha256,
    }
    summary = {k: report[k] for k in ("opset", "input", "tolerance", "parity_source", "input_format")}
    summary.update(max_rel_depth=parity["max_rel_depth"], frames=parity["frames"])
    if input_report is not None:
        summary["input_parity"] = {k: input_report[k] for k in ("resize", "max_rel_depth", "tolerance")}
    bundle.write_manifest(out, {"export": summary})
    report["lines"] = format_parity(parity) + (input_report["lines"] if input_report else [])
    return report


def _with_uint8_input(onnx, float_mp, info, export_meta: Dict[str, Any], spec: InputSpec, out: Path,
                      float_tmp: Path, data: Optional[str], parity_frames: int, tolerance: float):
    """Put preprocessing in front of the checked float graph, compare the result with the float pipeline
    on camera-size frames, and return (the uint8 graph's temp file, its report)."""
    from edgedepth.export.input_graph import add_uint8_input
    from edgedepth.export.parity import input_parity

    from edgedepth.data.frames import get_frames

    mp = onnx.ModelProto()
    mp.CopyFrom(float_mp)
    added = add_uint8_input(mp, info.preprocessing, spec)
    info = dataclasses.replace(info, input=spec)
    props = info.to_metadata_props()
    props[KEY_EXPORT] = json.dumps({**export_meta, "input_format": spec.format,
                                    "camera_size": [spec.height, spec.width], "resize": added["resize"]},
                                   sort_keys=True)
    order = "BGR" if spec.bgr else "RGB"
    _document(mp, props, f"the camera's image, uint8 (N,H,W,3) {order} at {spec.height}x{spec.width}, "
                         "resized and normalised inside the graph (metadata 'edgedepth.input')")
    try:
        mp = onnx.shape_inference.infer_shapes(mp, check_type=True, strict_mode=True)
        onnx.checker.check_model(mp, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        float_tmp.unlink()
        raise ModelError(f"the uint8-input graph fails the ONNX checker: {exc}") from exc
    tmp = out / f".{bundle.MODEL_FP32}.uint8.tmp{os.getpid()}"
    tmp.write_bytes(mp.SerializeToString())
    frames = get_frames(data, parity_frames, spec.height, spec.width, seed=1000)
    if len(frames) > parity_frames:
        frames = frames.subset(range(parity_frames))
    try:
        res = input_parity(str(float_tmp), str(tmp), frames.rgb, info.preprocessing, spec)
    finally:
        float_tmp.unlink()
    limit = tolerance if added["resize"] == "none" else max(tolerance, RESIZE_TOLERANCE)
    line = (f"uint8 input ({spec.format}, camera {spec.height}x{spec.width}, resize {added['resize']}) vs "
            f"the float pipeline on {res['frames']} frames: max relative depth error "
            f"{res['max_rel_depth']:.2e}, "
            f"mean {res['mean_rel_depth']:.2e}; max |uncertainty diff| {res['max_abs_uncertainty']:.2e} "
            f"(tolerance {limit:.0e})")
    if not res["max_rel_depth"] <= limit:
        tmp.unlink()
        raise ModelError(f"the uint8-input graph differs from the float pipeline: {line}; the export is "
                         "refused (export with --input-format float-nchw)")
    return tmp, {**added, **res, "tolerance": limit, "lines": [line]}
