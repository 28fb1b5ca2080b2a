"""The ONNX protobuf read straight from bytes: header, metadata, I/O and op types (no `onnx` needed).

One reader for every stage: the bundle manifest, the model metadata the runtime reads, the engine build
plan and the lint all use it, and none of them imports `onnx` or opens an onnxruntime session for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from edgedepth.errors import ModelError

PathLike = Union[str, "os.PathLike[str]"]  # noqa: F821


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of one protobuf message; bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated message")
        yield num, wire, val


def onnx_header(path: PathLike) -> Dict[str, Any]:
    """IR version, producer, opsets and metadata_props of an ONNX file, without importing onnx."""
    data = Path(path).read_bytes()
    info: Dict[str, Any] = {"ir_version": None, "producer": "", "opset": {}, "metadata": {}}
    try:
        for num, _wire, val in _fields(data):
            if num == 1:
                info["ir_version"] = val
            elif num == 2:
                info["producer"] = bytes(val).decode("utf-8", "replace")
            elif num == 8:
                sub = {n: v for n, _w, v in _fields(val)}
                domain = bytes(sub.get(1, b"")).decode() or "ai.onnx"
                info["opset"][domain] = int(sub.get(2, 0))
            elif num == 14:
                sub = {n: v for n, _w, v in _fields(val)}
                info["metadata"][bytes(sub.get(1, b"")).decode()] = bytes(sub.get(2, b"")).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not a readable ONNX file ({exc}); re-export it") from exc
    return info


_ELEM = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}


def _value_info(buf: bytes) -> Dict[str, Any]:
    name, dtype, shape = "", None, []
    for num, _w, val in _fields(buf):
        if num == 1:
            name = bytes(val).decode()
        elif num == 2:  # TypeProto
            for tnum, _tw, tval in _fields(val):
                if tnum != 1:  # tensor_type
                    continue
                for fnum, _fw, fval in _fields(tval):
                    if fnum == 1:
                        dtype = _ELEM.get(fval, str(fval))
                    elif fnum == 2:  # TensorShapeProto
                        for snum, _sw, sval in _fields(fval):
                            if snum != 1:
                                continue
                            dim: Any = None
                            for dnum, _dw, dval in _fields(sval):
                                if dnum == 1:
                                    dim = int(dval)
                                elif dnum == 2:
                                    dim = bytes(dval).decode()
                            shape.append(dim)
    return {"name": name, "dtype": dtype, "shape": shape}


def graph_summary(path: str) -> Dict[str, Any]:
    """{"inputs": [...], "outputs": [...], "op_types": {op: count}} of an ONNX file."""
    return graph_summary_bytes(Path(path).read_bytes(), str(path))


def graph_summary_bytes(data: bytes, path: str = "model") -> Dict[str, Any]:
    """graph_summary of ONNX bytes already in memory."""
    out: Dict[str, Any] = {"inputs": [], "outputs": [], "op_types": {}}
    inits: List[str] = []
    try:
        for num, _w, val in _fields(data):
            if num != 7:  # ModelProto.graph
                continue
            for gnum, _gw, gval in _fields(val):
                if gnum == 1:  # NodeProto
                    for nnum, _nw, nval in _fields(gval):
                        if nnum == 4:
                            op = bytes(nval).decode()
                            out["op_types"][op] = out["op_types"].get(op, 0) + 1
                elif gnum == 5:  # TensorProto initializer: name is field 8
                    for tnum, _tw, tval in _fields(gval):
                        if tnum == 8:
                            inits.append(bytes(tval).decode())
                elif gnum == 11:
                    out["inputs"].append(_value_info(gval))
                elif gnum == 12:
                    out["outputs"].append(_value_info(gval))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not a readable ONNX file ({exc})") from exc
    names = set(inits)
    out["inputs"] = [i for i in out["inputs"] if i["name"] not in names]
    return out


def has_qdq(summary: Dict[str, Any]) -> bool:
    return bool(summary["op_types"].get("QuantizeLinear") or summary["op_types"].get("DequantizeLinear"))
