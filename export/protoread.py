"""Read an ONNX file's I/O and op types straight from protobuf (no `onnx` needed on a device)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from edgedepth.bundle import _fields
from edgedepth.errors import ModelError

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
    """{"inputs": [...], "outputs": [...], "op_types": {op: count}, "initializers": set of names}."""
    data = Path(path).read_bytes()
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
