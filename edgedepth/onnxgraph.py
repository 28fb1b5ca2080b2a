"""The whole graph of an ONNX file (nodes, attributes, initializers, I/O, opsets) without `onnx`, so
`edgedepth lint` runs on a device's base install. Built on the field reader of edgedepth.onnxproto."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from edgedepth.errors import ModelError
from edgedepth.onnxproto import _ELEM, _fields, _value_info, _varint

# Field numbers from onnx.proto3. Only what static checks need: nodes, attributes, initializers, I/O.
_NP_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
             9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _repeated_ints(wire: int, val: Any) -> List[int]:
    """Repeated int32/int64: packed (one length-delimited run of varints) or one varint per field."""
    if wire != 2:
        return [_int64(int(val))]
    out, pos = [], 0
    while pos < len(val):
        v, pos = _varint(val, pos)
        out.append(_int64(v))
    return out


def _repeated_floats(wire: int, val: Any, fmt: str = "<f") -> List[float]:
    size = struct.calcsize(fmt)
    if wire != 2:
        return [struct.unpack(fmt, bytes(val))[0]]
    return [x[0] for x in struct.iter_unpack(fmt, bytes(val))] if len(val) % size == 0 else []


@dataclass
class Tensor:
    """TensorProto: name, element type code, dims and its data (decoded on demand by `to_array`)."""

    name: str = ""
    data_type: int = 0
    dims: List[int] = field(default_factory=list)
    raw: bytes = b""
    values: List[Any] = field(default_factory=list)  # float_data / int32_data / int64_data / ...
    external: bool = False

    def to_array(self) -> np.ndarray:
        dtype = _NP_TYPES.get(self.data_type)
        if dtype is None:
            raise ModelError(f"initializer {self.name}: element type {self.data_type} is not readable here")
        if self.external:
            raise ModelError(f"initializer {self.name} is stored as external data; keep weights inside the "
                             ".onnx file (the default of `edgedepth export`)")
        if self.raw:
            arr = np.frombuffer(self.raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
        elif self.data_type == 10:  # float16 travels as uint16 bit patterns in int32_data
            arr = np.asarray(self.values, dtype=np.uint16).view(np.float16)
        else:
            arr = np.asarray(self.values, dtype=dtype)
        return arr.reshape(self.dims) if self.dims else arr.reshape(())


@dataclass
class Attribute:
    name: str = ""
    value: Any = None


@dataclass
class Node:
    name: str = ""
    op_type: str = ""
    domain: str = ""
    input: List[str] = field(default_factory=list)
    output: List[str] = field(default_factory=list)
    attribute: List[Attribute] = field(default_factory=list)

    def attr(self, name: str, default: Any = None) -> Any:
        """The attribute's value (int, float, bytes, list or Tensor), like onnx.helper.get_attribute_value."""
        return next((a.value for a in self.attribute if a.name == name), default)


@dataclass
class Dim:
    dim_value: int = 0
    dim_param: str = ""


@dataclass
class ValueInfo:
    name: str = ""
    elem_type: int = 0
    dims: List[Dim] = field(default_factory=list)


@dataclass
class Graph:
    node: List[Node] = field(default_factory=list)
    initializer: List[Tensor] = field(default_factory=list)
    input: List[ValueInfo] = field(default_factory=list)
    output: List[ValueInfo] = field(default_factory=list)


@dataclass
class OpsetId:
    domain: str = ""
    version: int = 0


@dataclass
class Model:
    ir_version: int = 0
    opset_import: List[OpsetId] = field(default_factory=list)
    graph: Graph = field(default_factory=Graph)
    metadata: Dict[str, str] = field(default_factory=dict)  # metadata_props


def _str(val: Any) -> str:
    return bytes(val).decode("utf-8", "replace")


def _tensor(buf: Any) -> Tensor:
    t = Tensor()
    for num, wire, val in _fields(buf):
        if num == 1:
            t.dims.extend(_repeated_ints(wire, val))
        elif num == 2:
            t.data_type = int(val)
        elif num == 4:
            t.values.extend(_repeated_floats(wire, val))
        elif num in (5, 7, 11):  # int32_data, int64_data, uint64_data
            t.values.extend(_repeated_ints(wire, val))
        elif num == 8:
            t.name = _str(val)
        elif num == 9:
            t.raw = bytes(val)
        elif num == 10:
            t.values.extend(_repeated_floats(wire, val, "<d"))
        elif num == 14:
            t.external = int(val) == 1
    return t


def _attribute(buf: Any) -> Attribute:
    a, single, lists = Attribute(), {}, {}
    for num, wire, val in _fields(buf):
        if num == 1:
            a.name = _str(val)
        elif num == 2:
            single["f"] = struct.unpack("<f", bytes(val))[0]
        elif num == 3:
            single["i"] = _int64(int(val))
        elif num == 4:
            single["s"] = bytes(val)
        elif num == 5:
            single["t"] = _tensor(val)
        elif num == 7:
            lists.setdefault("floats", []).extend(_repeated_floats(wire, val))
        elif num == 8:
            lists.setdefault("ints", []).extend(_repeated_ints(wire, val))
        elif num == 9:
            lists.setdefault("strings", []).append(bytes(val))
    # AttributeProto.type (field 20) is optional in old files: the field that is set says what it is.
    a.value = next(iter(single.values()), None) if single else next(iter(lists.values()), [])
    return a


def _node(buf: Any) -> Node:
    n = Node()
    for num, _w, val in _fields(buf):
        if num == 1:
            n.input.append(_str(val))
        elif num == 2:
            n.output.append(_str(val))
        elif num == 3:
            n.name = _str(val)
        elif num == 4:
            n.op_type = _str(val)
        elif num == 5:
            n.attribute.append(_attribute(val))
        elif num == 7:
            n.domain = _str(val)
    return n


def _value_info_full(buf: Any) -> ValueInfo:
    vi = _value_info(buf)
    dims = [Dim(dim_value=d) if isinstance(d, int) else Dim(dim_param=d or "") for d in vi["shape"]]
    code = {v: k for k, v in _ELEM.items()}.get(vi["dtype"])
    if code is None:
        code = int(vi["dtype"]) if str(vi["dtype"]).isdigit() else 0
    return ValueInfo(vi["name"], code, dims)


def read_model(path: str) -> Model:
    """The graph of an ONNX file (nodes, attributes, initializers, I/O, opsets) without `onnx`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    model = Model()
    try:
        for num, _w, val in _fields(data):
            if num == 1:
                model.ir_version = int(val)
            elif num == 8:
                sub = {n: v for n, _sw, v in _fields(val)}
                model.opset_import.append(OpsetId(_str(sub.get(1, b"")), int(sub.get(2, 0))))
            elif num == 14:
                sub = {n: v for n, _sw, v in _fields(val)}
                model.metadata[_str(sub.get(1, b""))] = _str(sub.get(2, b""))
            elif num == 7:
                g = model.graph
                for gnum, _gw, gval in _fields(val):
                    if gnum == 1:
                        g.node.append(_node(gval))
                    elif gnum == 5:
                        g.initializer.append(_tensor(gval))
                    elif gnum == 11:
                        g.input.append(_value_info_full(gval))
                    elif gnum == 12:
                        g.output.append(_value_info_full(gval))
    except (ValueError, TypeError, struct.error) as exc:
        raise ModelError(f"{path} is not a readable ONNX model ({exc})") from exc
    if model.ir_version == 0 and not model.graph.node:
        raise ModelError(f"{path} is not a readable ONNX model (no graph)")
    return model


WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def float_weighted_layers(graph: Any) -> List[str]:
    """Names of the weighted layers (Conv / ConvTranspose / Gemm / MatMul) of a Q/DQ graph that read no
    input through a DequantizeLinear: the float layers of a mixed INT8 model. Takes this module's Graph
    or an onnx GraphProto (the same field names)."""
    dq_out = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return [n.name or n.op_type for n in graph.node
            if n.op_type in WEIGHTED_OPS and not any(i in dq_out for i in n.input)]
