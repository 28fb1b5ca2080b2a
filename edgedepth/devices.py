"""Target boards as data: `device_configs/*.yaml` validated at load (pydantic, unknown keys rejected).

A request a board cannot honour (INT8 on a Nano, DLA on a board without DLA) is refused with the reason
and the nearest valid choice, never silently changed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgedepth.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8")  # slowest -> fastest; "best" = the fastest the board supports
DLA_PRECISIONS = ("fp16", "int8")

# Highest ai.onnx opset the TensorRT ONNX parser accepts, by (major, minor); the reference notes.
PARSER_MAX_OPSET: Tuple[Tuple[Tuple[int, int], int], ...] = (
    ((8, 0), 13), ((8, 4), 17), ((10, 0), 20),
)


def parser_max_opset(trt_version: str) -> int:
    """Highest ONNX opset the TensorRT `trt_version` parser accepts (13 for 8.2, 17 for 8.4-8.6, ...)."""
    ver = version_tuple(trt_version)
    best = PARSER_MAX_OPSET[0][1]
    for since, opset in PARSER_MAX_OPSET:
        if ver >= since:
            best = opset
    return best


def version_tuple(version: str) -> Tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(version).split(".") if p != "")
    except ValueError as exc:
        raise ConfigError(f"version '{version}' is not dotted numbers like 8.5.2") from exc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Intrinsics(_Strict):
    """Pinhole intrinsics at the camera's output size, in pixels."""

    fx: float = Field(gt=0)
    fy: float = Field(gt=0)
    cx: float = Field(ge=0)
    cy: float = Field(ge=0)


class CameraConfig(_Strict):
    """Default camera pipeline: CSI via nvarguscamerasrc on Jetson, a V4L2 index elsewhere."""

    source: str = Field("csi", pattern="^(csi|v4l2)$", description="csi (nvarguscamerasrc) or v4l2")
    sensor: str = ""
    sensor_id: int = Field(0, ge=0)
    sensor_mode: Optional[int] = Field(None, ge=0)
    capture_width: int = Field(1920, gt=0)
    capture_height: int = Field(1080, gt=0)
    output_width: int = Field(960, gt=0)
    output_height: int = Field(540, gt=0)
    fps: int = Field(30, gt=0, le=240)
    flip_method: int = Field(0, ge=0, le=7)
    intrinsics: Optional[Intrinsics] = None
    # metres from the camera to a flat floor and its downward pitch: the ground-plane prior that makes a
    # relative teacher's labels metric (edgedepth.teachers.align.ground_points)
    height_m: Optional[float] = Field(None, gt=0)
    pitch_deg: float = Field(0.0, ge=-90, le=90)


class PowerMode(_Strict):
    nvpmodel_id: int = Field(ge=0)
    name: str
    watts: Optional[float] = Field(None, gt=0, description="budget; None for MAXN (unconstrained)")


class PowerConfig(_Strict):
    default: int = Field(ge=0, description="nvpmodel id used by default")
    modes: List[PowerMode]

    @model_validator(mode="after")
    def _default_is_listed(self) -> "PowerConfig":
        ids = [m.nvpmodel_id for m in self.modes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"power modes repeat an nvpmodel id: {ids}")
        if self.default not in ids:
            raise ValueError(f"default power mode {self.default} is not among the modes {ids}")
        return self

    @property
    def default_mode(self) -> PowerMode:
        return next(m for m in self.modes if m.nvpmodel_id == self.default)


class GpuConfig(_Strict):
    arch: str
    sm: str = Field(pattern=r"^(\d+\.\d+|auto)$", description="compute capability, or auto (x86 dGPU)")
    cuda_cores: Optional[int] = Field(None, gt=0)


class DeviceConfig(_Strict):
    """One target board. `camera` is what the runtime's CSI pipeline uses."""

    board: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    gpu: GpuConfig
    jetpack: Optional[str] = None
    tensorrt: str = Field(pattern=r"^\d+\.\d+(\.\d+)*$")
    cuda: str = Field(pattern=r"^\d+\.\d+(\.\d+)*$")
    int8: bool
    fp16: bool = True
    dla_cores: int = Field(0, ge=0, le=4)
    memory_mib: int = Field(gt=0)
    default_precision: str = "fp16"
    default_dla_core: Optional[int] = None
    workspace_mib: int = Field(gt=0)
    max_onnx_opset: int = Field(ge=7)
    camera: Optional[CameraConfig] = None
    power: Optional[PowerConfig] = None
    notes: List[str] = Field(default_factory=list)

    @field_validator("default_precision")
    @classmethod
    def _known_precision(cls, v: str) -> str:
        if v not in PRECISIONS + ("best",):
            raise ValueError(f"unknown precision '{v}'; choose one of {', '.join(PRECISIONS + ('best',))}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "DeviceConfig":
        limit = parser_max_opset(self.tensorrt)
        if self.max_onnx_opset > limit:
            raise ValueError(f"max_onnx_opset {self.max_onnx_opset} exceeds what the TensorRT "
                             f"{self.tensorrt} ONNX parser accepts; use {limit} or lower")
        self.check_request(self.default_precision, self.default_dla_core, error=ValueError)
        return self

    # ------------------------------------------------------------------ capability queries
    @property
    def name(self) -> str:
        return self.board

    @property
    def trt_version(self) -> Tuple[int, ...]:
        return version_tuple(self.tensorrt)

    def supported_precisions(self, dla: bool = False) -> List[str]:
        ok = ["fp32"] + (["fp16"] if self.fp16 else []) + (["int8"] if self.int8 else [])
        return [p for p in ok if p in DLA_PRECISIONS] if dla else ok

    def check_request(self, precision: Optional[str], dla_core: Optional[int],
                      error: type = ConfigError) -> Tuple[str, Optional[int]]:
        """Refuse what the board cannot do, naming the nearest valid choice. Returns (precision, core)."""
        precision = precision or self.default_precision
        if precision not in PRECISIONS + ("best",):
            near = difflib.get_close_matches(precision, PRECISIONS + ("best",), n=1)
            raise error(f"unknown precision '{precision}'"
                        + (f"; did you mean '{near[0]}'?" if near else f"; choose one of {PRECISIONS}"))
        if dla_core is not None:
            if self.dla_cores == 0:
                with_dla = [d for d in _board_dla_table() if d[1] > 0]
                hint = (" (boards with DLA: " + ", ".join(n for n, _ in with_dla) + ")") if with_dla else ""
                raise error(f"board {self.board} has no DLA cores: drop the DLA core request to build for "
                            f"its GPU{hint}")
            if not 0 <= dla_core < self.dla_cores:
                raise error(f"board {self.board} has DLA cores 0..{self.dla_cores - 1}; DLA core {dla_core} "
                            f"does not exist, use {min(max(dla_core, 0), self.dla_cores - 1)}")
        supported = self.supported_precisions(dla=dla_core is not None)
        if precision == "best":
            return supported[-1], dla_core
        if precision not in supported:
            order = list(PRECISIONS)
            lower = [p for p in supported if order.index(p) < order.index(precision)]
            nearest = lower[-1] if lower else supported[0]
            why = {"int8": f"{self.gpu.arch} SM {self.gpu.sm} has no INT8 support",
                   "fp16": "no fast FP16 path",
                   "fp32": "DLA runs FP16 or INT8 only"}[precision]
            where = f"the DLA of {self.board}" if dla_core is not None else f"board {self.board}"
            raise error(f"{where} cannot run {precision} ({why}); nearest valid precision: {nearest}")
        return precision, dla_core

    def summary_row(self) -> Dict[str, Any]:
        pm = self.power.default_mode if self.power else None
        return {
            "board": self.board, "gpu": f"{self.gpu.arch} SM {self.gpu.sm}",
            "jetpack": self.jetpack or "-", "trt": self.tensorrt, "cuda": self.cuda,
            "int8": "yes" if self.int8 else "no", "dla": str(self.dla_cores),
            "mem_gib": f"{self.memory_mib / 1024:g}", "precision": self.default_precision,
            "opset<=": str(self.max_onnx_opset),
            "power": (f"{pm.name} ({pm.watts:g} W)" if pm and pm.watts else pm.name if pm else "-"),
        }


# ---------------------------------------------------------------------- loading
def configs_dir() -> Path:
    import edgedepth.device_configs as pkg

    return Path(pkg.__file__).resolve().parent


def list_devices() -> List[str]:
    """Names of the built-in boards (the YAML stems in device_configs/)."""
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def _board_dla_table() -> List[Tuple[str, int]]:
    out = []
    for name in list_devices():
        try:
            data = yaml.safe_load((configs_dir() / f"{name}.yaml").read_text())
            out.append((name, int(data.get("dla_cores", 0))))
        except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
            continue
    return out


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent: Any = DeviceConfig
            for part in err["loc"][:-1]:
                field = parent.model_fields.get(str(part)) if hasattr(parent, "model_fields") else None
                ann = field.annotation if field else None
                ann = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), ann)
                parent = ann
            known = list(getattr(parent, "model_fields", {}))
            near = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            msg = "unknown key" + (f"; did you mean '{near[0]}'?" if near else f"; known keys: {known}")
        lines.append(f"  {loc}: {msg}")
    return f"device config {source} is invalid:\n" + "\n".join(lines)


def parse_device(data: Dict[str, Any], source: str = "<dict>") -> DeviceConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"device config {source} must be a YAML mapping, got {type(data).__name__}")
    try:
        return DeviceConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_device(name_or_path: Union[str, Path, DeviceConfig]) -> DeviceConfig:
    """A built-in board by name (see `edgedepth devices`) or a user's YAML file by path."""
    if isinstance(name_or_path, DeviceConfig):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"device config file {path} does not exist")
    else:
        names = list_devices()
        if text not in names:
            near = difflib.get_close_matches(text, names, n=1, cutoff=0.3)
            raise ConfigError(f"unknown device '{text}'" + (f"; did you mean '{near[0]}'?" if near else "")
                              + f" (known: {', '.join(names)}; or pass a path to a YAML file)")
        path = configs_dir() / f"{text}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read device config {path}: {exc}") from exc
    return parse_device(data, str(path))
