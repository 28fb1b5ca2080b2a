"""Static checks of an ONNX file against a target board's TensorRT, without a GPU.

Errors mean TensorRT will refuse the model (or the board cannot run it); warnings mean it will build
but slower or less accurately than it could; info lines say what was checked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from edgedepth.export import trt_ops

from edgedepth.backends.tensorrt.build import fp16_onnx_name, mixed_fp16_method
from edgedepth.devices import DeviceConfig, load_device, parser_max_opset
from edgedepth.errors import DataError, ModelError
from edgedepth.onnxgraph import WEIGHTED_OPS, float_weighted_layers, read_model

FP16_MAX = 65504.0
# UINT8 network inputs (a camera image with preprocessing inside the graph, `edgedepth export
# --input-format uint8-hwc-*`): TensorRT 8.2's parser refuses them ("Unsupported ONNX data type: UINT8");
# 8.5 added UINT8 as a network I/O type consumed by a cast (from memory of the 8.5 release notes).
UINT8_INPUT_SINCE = (8, 5)
_DTYPE_NAMES = {
    1: "FLOAT",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    10: "FLOAT16",
    17: "FLOAT8E4M3FN",
    21: "UINT4",
    22: "INT4",
}


@dataclass
class Finding:
    level: str  # error | warning | info
    code: str
    message: str
    node: str = ""

    def line(self) -> str:
        where = f" [{self.node}]" if self.node else ""
        return f"{self.level.upper():7s} {self.code}{where}: {self.message}"


@dataclass
class LintReport:
    model: str
    device: str
    findings: List[Finding]

    @property
    def errors(self) -> List[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> List[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> Dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "ok": self.ok,
            "findings": [asdict(f) for f in self.findings],
        }


def _attr(node, name: str, default=None):
    return node.attr(name, default)


def _opset(mp) -> int:
    return next((o.version for o in mp.opset_import if o.domain in ("", "ai.onnx")), 0)


def lint_model(
    model_path: str,
    device,
    calib_report: Optional[str] = None,
    precision: Optional[str] = None,
    dla_core: Optional[int] = None,
) -> LintReport:
    """Check `model_path` for `device` (name, YAML path or DeviceConfig). Needs no `onnx` package:
    the graph is read by edgedepth/onnxgraph.py, so lint runs on a device's base install."""
    dev: DeviceConfig = load_device(device)
    path = Path(model_path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist")
    mp = read_model(str(path))
    out: List[Finding] = []
    inits = {t.name: t for t in mp.graph.initializer}
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in mp.graph.node)

    _check_opset(mp, dev, has_qdq, out)
    _check_input(mp, dev, out)
    _check_ops(mp, dev, out)
    if has_qdq:
        _check_precision_int8(dev, out)
        _check_qdq(mp, dev, inits, out)
        _check_float_layers(mp, dev, path, out)
    _check_int64(inits, out)
    _check_dynamic(mp, out)
    _check_fp16(calib_report, dev, precision, has_qdq, out)
    if dev.dla_cores:
        _check_dla(mp, dev, inits, has_qdq, dla_core, out)
    if precision:
        try:
            dev.check_request(precision, dla_core)
        except Exception as exc:  # ConfigError with the nearest valid choice
            out.append(Finding("error", "precision", str(exc)))
    out.append(
        Finding(
            "info",
            "summary",
            f"{len(mp.graph.node)} nodes, opset {_opset(mp)}, "
            f"{'Q/DQ INT8' if has_qdq else 'float'} model, TensorRT {dev.tensorrt} on {dev.board}",
        )
    )
    return LintReport(str(path), dev.board, out)


def _check_opset(mp, dev: DeviceConfig, has_qdq: bool, out: List[Finding]) -> None:
    opset = _opset(mp)
    limit = min(dev.max_onnx_opset, parser_max_opset(dev.tensorrt))
    if opset > limit:
        out.append(
            Finding(
                "error",
                "opset",
                f"opset {opset} is above the {limit} that TensorRT {dev.tensorrt} "
                f"on {dev.board} parses; re-export with `edgedepth export --opset {limit}` "
                f"(or --device {dev.board})",
            )
        )
    if has_qdq and opset < 13:
        out.append(Finding("error", "opset", f"per-channel Q/DQ needs opset >= 13, model has {opset}"))
    used = {n.domain for n in mp.graph.node} - {"", "ai.onnx"}
    for domain in sorted(used):
        out.append(Finding("error", "domain", f"ops of domain '{domain}' need TensorRT plugins"))


def _check_input(mp, dev: DeviceConfig, out: List[Finding]) -> None:
    """A uint8 camera-image input (preprocessing inside the graph) needs a parser that takes UINT8."""
    from edgedepth.modelmeta import KEY_INPUT
    from edgedepth.preprocess import INPUT_NAME

    vi = next((v for v in mp.graph.input if v.name == INPUT_NAME), None)
    if vi is None or vi.elem_type != 2:  # not UINT8
        return
    spec = json.loads(mp.metadata.get(KEY_INPUT, "{}") or "{}")
    dims = [d.dim_param or d.dim_value for d in vi.dims]
    pre_nodes = [n.op_type for n in mp.graph.node if n.name.startswith("preprocess/")]
    if dev.trt_version < UINT8_INPUT_SINCE:
        since = ".".join(str(v) for v in UINT8_INPUT_SINCE)
        out.append(Finding("error", "uint8-input",
                           f"input '{INPUT_NAME}' is uint8 {dims}: TensorRT {dev.tensorrt} on {dev.board} "
                           f"cannot take a UINT8 network input (TensorRT {since}+ can); export this board's "
                           "model with --input-format float-nchw"))
        return
    if not spec:
        out.append(Finding("warning", "uint8-input",
                           f"input '{INPUT_NAME}' is uint8 {dims} but the model has no 'edgedepth.input' "
                           "metadata: the runtime will not know its camera size and channel order; re-export "
                           "it with `edgedepth export --input-format`"))
        return
    out.append(Finding("info", "uint8-input",
                       f"camera input uint8 {dims} {spec.get('channel_order', '?')}, preprocessing in the "
                       f"graph on the GPU ({' -> '.join(pre_nodes) or 'no preprocess/ nodes'})"))


def _check_ops(mp, dev: DeviceConfig, out: List[Finding]) -> None:
    ok = trt_ops.supported_ops(dev.trt_version)
    seen = set()
    for node in mp.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type not in ok and node.op_type not in seen:
            seen.add(node.op_type)
            since = trt_ops.first_version_with(node.op_type)
            hint = f" (supported from TensorRT {since})" if since else " (needs a plugin)"
            out.append(
                Finding(
                    "error",
                    "op",
                    f"{node.op_type} is not supported by TensorRT {dev.tensorrt}{hint}",
                    node.name,
                )
            )
        if (
            node.op_type == "Resize"
            and _attr(node, "mode", b"nearest") == b"cubic"
            and dev.trt_version < (8, 5)
        ):
            out.append(Finding("error", "op", "cubic Resize needs TensorRT 8.5+", node.name))


def _check_precision_int8(dev: DeviceConfig, out: List[Finding]) -> None:
    if not dev.int8:
        out.append(
            Finding(
                "error",
                "int8",
                f"{dev.board} ({dev.gpu.arch} SM {dev.gpu.sm}) has no INT8 support: "
                f"deploy model.onnx with fp16 instead of a Q/DQ model",
            )
        )


def _check_qdq(mp, dev: DeviceConfig, inits, out: List[Finding]) -> None:
    allowed = trt_ops.qdq_types(dev.trt_version)
    consumers: Dict[str, List] = {}
    producers = {o: n for n in mp.graph.node for o in n.output}
    for n in mp.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for node in mp.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 2 or node.input[1] not in inits:
            out.append(Finding("error", "qdq-scale", "scale must be a constant initializer", node.name))
            continue
        scale = inits[node.input[1]].to_array()
        if not np.all(scale > 0) or not np.all(np.isfinite(scale)):
            out.append(Finding("error", "qdq-scale", "scales must be finite and positive", node.name))
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and zp is None:
            out.append(Finding("error", "qdq-zero-point", "zero point must be a constant", node.name))
        if zp is not None:
            if zp.data_type not in allowed:
                name = _DTYPE_NAMES.get(zp.data_type, str(zp.data_type))
                out.append(
                    Finding(
                        "error",
                        "qdq-type",
                        f"{name} Q/DQ: TensorRT {dev.tensorrt} accepts INT8 only "
                        "(quantize with activation_type=weight_type=QInt8)",
                        node.name,
                    )
                )
            if np.any(zp.to_array() != 0):
                out.append(
                    Finding(
                        "error",
                        "qdq-zero-point",
                        "non-zero zero point: TensorRT only supports "
                        "symmetric quantization (ActivationSymmetric=True, WeightSymmetric=True)",
                        node.name,
                    )
                )
        elif node.op_type == "QuantizeLinear":
            out.append(
                Finding("warning", "qdq-type", "no zero point: output type defaults to UINT8", node.name)
            )
        if scale.size > 1:
            _check_axis(node, inits, producers, consumers, out)


def _check_float_layers(mp, dev: DeviceConfig, path: Path, out: List[Finding]) -> None:
    """A mixed model (`edgedepth calibrate` left its most INT8-sensitive layers un-quantized): say
    which weighted layers have no Q/DQ and how `edgedepth build` runs them in FP16 on this board."""
    plain = float_weighted_layers(mp.graph)
    if not plain:
        return
    weighted = sum(1 for n in mp.graph.node if n.op_type in WEIGHTED_OPS)
    names = ", ".join(plain[:8]) + (" ..." if len(plain) > 8 else "")
    head = f"{len(plain)} of {weighted} weighted layers have no Q/DQ and build in FP16"
    if mixed_fp16_method(dev.trt_version) == "builder-flags":
        out.append(Finding("info", "float-layers", f"{head} through the INT8 + FP16 builder flags, weakly "
                           f"typed on TensorRT {dev.tensorrt}. Layers: {names}"))
        return
    copy = path.with_name(fp16_onnx_name(path.name))
    where = "found beside the model" if copy.is_file() else (
        f"missing: write it on the workstation with `edgedepth build {path.name} --device {dev.board} "
        "--fp16-onnx-only` and copy it into the bundle, or the build refuses")
    out.append(Finding("info" if copy.is_file() else "warning", "float-layers",
                       f"{head} from {copy.name} (float part FP16, Q/DQ kept), strongly typed on TensorRT "
                       f"{dev.tensorrt}; {copy.name} is {where}. Layers: {names}"))


def _is_weight(name: str, inits, producers) -> bool:
    if name in inits:
        return True
    prod = producers.get(name)
    return prod is not None and prod.op_type == "QuantizeLinear" and prod.input[0] in inits


def _check_axis(node, inits, producers, consumers, out: List[Finding]) -> None:
    axis = _attr(node, "axis", 1)
    if not _is_weight(node.input[0], inits, producers):
        out.append(
            Finding(
                "error",
                "qdq-activation",
                "per-channel scale on an activation: TensorRT needs per-tensor activation scales",
                node.name,
            )
        )
        return
    if node.op_type == "QuantizeLinear":
        return  # the matching DequantizeLinear is checked against the weighted op
    for user in consumers.get(node.output[0], []):
        # Output-channel axis: Conv [Cout,Cin,k,k] -> 0; ConvTranspose [Cin,Cout,k,k] -> 1;
        # Gemm B is [out,in] with transB=1 (nn.Linear) -> 0, else [in,out] -> 1.
        expect = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0 if _attr(user, "transB", 0) else 1}.get(
            user.op_type
        )
        if expect is not None and axis != expect:
            out.append(
                Finding(
                    "error",
                    "qdq-axis",
                    f"per-channel weight of {user.op_type} quantized on axis {axis}; "
                    f"TensorRT needs the output-channel axis {expect}",
                    node.name,
                )
            )


def _check_int64(inits, out: List[Finding]) -> None:
    for name, t in inits.items():
        if t.data_type != 7:
            continue
        arr = t.to_array()
        big = arr.size and (arr.max() > np.iinfo(np.int32).max or arr.min() < np.iinfo(np.int32).min)
        out.append(
            Finding(
                "warning",
                "int64",
                "INT64 initializer: TensorRT casts it to INT32" + ("; values overflow INT32" if big else ""),
                name,
            )
        )


def _check_dynamic(mp, out: List[Finding]) -> None:
    for vi in mp.graph.input:
        dims = vi.dims
        dyn = [i for i, d in enumerate(dims) if d.dim_param or d.dim_value <= 0]
        if not dyn:
            continue
        if dyn == [0]:
            out.append(
                Finding(
                    "warning",
                    "dynamic-batch",
                    f"input '{vi.name}' has a dynamic batch: the engine "
                    "needs an optimization profile (`edgedepth build` uses min 1 / opt 1 / max "
                    "--max-batch)",
                )
            )
        else:
            out.append(
                Finding(
                    "error",
                    "dynamic-shape",
                    f"input '{vi.name}' has dynamic dims {dyn} with no "
                    "optimization profile; re-export with a fixed --size",
                )
            )


def _check_fp16(
    calib_report: Optional[str],
    dev: DeviceConfig,
    precision: Optional[str],
    has_qdq: bool,
    out: List[Finding],
) -> None:
    if not calib_report:
        out.append(Finding("info", "fp16-range", "no --calib-report: FP16 overflow risk not checked"))
        return
    try:
        report = json.loads(Path(calib_report).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read calibration report {calib_report}: {exc}") from exc
    ranges = report.get("activation_ranges") or {}
    if not ranges:
        out.append(Finding("warning", "fp16-range", f"{calib_report} records no activation ranges"))
        return
    over = {n: r for n, r in ranges.items() if max(abs(r[0]), abs(r[1])) > FP16_MAX}
    level = "warning"
    for name, (lo, hi) in sorted(over.items()):
        out.append(
            Finding(
                level,
                "fp16-overflow",
                f"activation range [{lo:.4g}, {hi:.4g}] seen in calibration "
                f"exceeds FP16's {FP16_MAX:g}: FP16 layers would overflow (keep it in FP32)",
                name,
            )
        )
    peak = max(max(abs(r[0]), abs(r[1])) for r in ranges.values())
    out.append(Finding("info", "fp16-range", f"{len(ranges)} activation ranges checked, peak |x| {peak:.4g}"))


def _check_dla(
    mp, dev: DeviceConfig, inits, has_qdq: bool, dla_core: Optional[int], out: List[Finding]
) -> None:
    lim = trt_ops.DLA_LIMITS
    fallback: List[str] = []

    def off(node, why: str) -> None:
        fallback.append(f"{node.name or node.op_type} ({node.op_type}: {why})")

    for node in mp.graph.node:
        if node.op_type not in trt_ops.DLA_OPS:
            off(node, "op not supported on DLA")
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            k = _attr(node, "kernel_shape") or []
            if node.input[1] in inits and not k:
                k = list(inits[node.input[1]].dims[2:])
            s = _attr(node, "strides", [1, 1])
            p = _attr(node, "pads", [0, 0, 0, 0])
            d = _attr(node, "dilations", [1, 1])
            for name, vals, key in (
                ("kernel", k, "kernel"),
                ("stride", s, "stride"),
                ("padding", p, "pad"),
                ("dilation", d, "dilation"),
            ):
                lo, hi = lim[key]
                if any(v < lo or v > hi for v in vals):
                    off(node, f"{name} {list(vals)} outside DLA's [{lo}, {hi}]")
                    break
        elif node.op_type in ("MaxPool", "AveragePool"):
            k = _attr(node, "kernel_shape") or []
            lo, hi = lim["pool_window"]
            if any(v < lo or v > hi for v in k):
                off(node, f"window {list(k)} outside DLA's [{lo}, {hi}]")
        elif node.op_type in ("Resize", "Upsample"):
            mode = _attr(node, "mode", b"nearest")
            if mode not in (b"nearest", b"linear"):
                off(node, f"{mode.decode()} resize")
    if has_qdq:
        out.append(
            Finding(
                "warning",
                "dla-qdq",
                "DLA does not take Q/DQ (explicit) INT8 on JetPack 5/6: for "
                "--dla-core build from model.onnx with implicit INT8 and calibration.cache",
            )
        )
    if any(
        vi.dims[0].dim_param for vi in mp.graph.input if vi.dims
    ):
        out.append(
            Finding("warning", "dla-dynamic", "DLA needs static shapes: the batch would run on the GPU")
        )
    level = "warning" if dla_core is not None else "info"
    if fallback:
        out.append(
            Finding(
                level,
                "dla-fallback",
                f"{len(fallback)} of {len(mp.graph.node)} layers would fall "
                f"back to the GPU on {dev.board}'s DLA: "
                + "; ".join(fallback[:12])
                + (" ..." if len(fallback) > 12 else ""),
            )
        )
    else:
        out.append(Finding("info", "dla-fallback", f"every layer can run on {dev.board}'s DLA"))
