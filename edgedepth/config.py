"""The device file (device.yaml): one validated place for what `edgedepth run` and `edgedepth upload` need.

A device is set up once: its id, board, spool, ingest server, token file and CA certificate are written
here and read by both commands (`--config device.yaml`); a flag on the command line overrides the file.
Keys shared by both commands sit at the top; `run:` and `upload:` hold what only one of them reads.
Unknown keys are errors (a typo must not be ignored). See docs/cli.md for an example.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgedepth.durations import parse_duration
from edgedepth.errors import ConfigError

Backend = Literal["auto", "trt", "ort-cuda", "ort-trt", "ort-cpu"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SelectSettings(_Strict):
    """Which frames the live loop keeps for upload (edgedepth.runtime.selection.SelectionConfig)."""

    mode: Literal["hard", "random", "none"] = "hard"
    rate: float = Field(0.05, gt=0, le=1)
    max_per_hour: Optional[float] = Field(None, gt=0)
    min_spacing_frames: int = Field(0, ge=0)
    min_spacing_seconds: float = Field(0.0, ge=0)
    spend_budget: bool = False
    trust_novelty: Optional[float] = Field(None, gt=0)


class RunSettings(_Strict):
    """`edgedepth run`: the model, the source, the outputs, selection and model updates."""

    model: Optional[str] = None  # bundle directory, .onnx or .engine
    input: str = "0"
    outputs: List[str] = Field(default_factory=list)
    headless: bool = False
    backend: Backend = "auto"
    threads: Optional[int] = Field(None, ge=1)
    colormap: str = "inferno"
    max_frames: Optional[int] = Field(None, ge=1)
    loop: bool = False
    save_depth: Optional[str] = None
    save_pointcloud: Optional[str] = None
    pointcloud_every: int = Field(1, ge=1)
    intrinsics: Optional[str] = None
    confidence_threshold: float = Field(0.25, gt=0)
    min_confident_fraction: float = Field(0.5, ge=0, le=1)
    stats_interval: float = Field(5.0, ge=0)
    stats_jsonl: Optional[str] = None
    metrics_port: Optional[int] = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    select: SelectSettings = Field(default_factory=SelectSettings)
    jpeg_quality: Optional[int] = Field(None, ge=1, le=100)
    neighbors: int = Field(0, ge=0)
    evaluate: bool = False
    registry: Optional[str] = None
    update_every: str = "10m"
    public_key: Optional[str] = None
    model_cache: Optional[str] = None

    @field_validator("update_every", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> str:
        parse_duration(v)
        return str(v)


class UploadSettings(_Strict):
    """`edgedepth upload`: the daemon's pacing, retries and limits (edgedepth.fleet.daemon.DaemonConfig)."""

    db: Optional[str] = None
    max_bandwidth: Optional[str] = None
    metrics_port: Optional[int] = Field(None, ge=0, le=65535)
    poll_interval: float = Field(1.0, gt=0)
    rescan_interval: float = Field(60.0, gt=0)
    backoff_base: float = Field(1.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)
    timeout: float = Field(60.0, gt=0)
    once: bool = False
    once_timeout: float = Field(600.0, gt=0)
    stats_interval: float = Field(60.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class DeviceSettings(_Strict):
    """One fleet device: written once in device.yaml, read by `edgedepth run` and `edgedepth upload`."""

    device_id: Optional[str] = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    board: Optional[str] = None  # a name from `edgedepth devices` or a board YAML path
    spool: Optional[str] = None
    spool_max_mb: Optional[float] = Field(None, gt=0)  # MiB (edgedepth.spool.cap_bytes)
    server: Optional[str] = None
    token_file: Optional[str] = None
    ca_cert: Optional[str] = None
    run: RunSettings = Field(default_factory=RunSettings)
    upload: UploadSettings = Field(default_factory=UploadSettings)


def _known_keys(loc: Tuple[Any, ...]) -> List[str]:
    model: Any = DeviceSettings
    for part in loc:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        model = field.annotation if field is not None else None
    return list(getattr(model, "model_fields", {}))


def describe_validation(exc: ValidationError, source: str) -> str:
    """One line naming every bad key of `source`, with a suggestion for a mistyped one."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(err["loc"][-1]), _known_keys(err["loc"][:-1]), n=1)
            msg = "unknown key" + (f" (did you mean '{near[0]}'?)" if near else "")
        parts.append(f"{loc}: {msg}")
    return f"{source} is invalid: " + "; ".join(parts)


def validate_settings(data: Dict[str, Any], source: str = "device settings") -> DeviceSettings:
    try:
        return DeviceSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation(exc, source)) from None


def read_device_file(path: Union[str, Path]) -> Dict[str, Any]:
    """The raw mapping of a device.yaml (validated later, after the command line is merged in)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"device file {p} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read device file {p}: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"device file {p} must be a YAML mapping of keys, got {type(data).__name__}")
    return data


def load_device_settings(path: Union[str, Path]) -> DeviceSettings:
    """Read and validate a device.yaml."""
    return validate_settings(read_device_file(path), str(path))


def merge_overrides(data: Dict[str, Any], overrides: Dict[Tuple[str, ...], Any]) -> Dict[str, Any]:
    """A copy of `data` with each (key, subkey, ...) path of `overrides` set (command-line flags)."""
    out: Dict[str, Any] = _deep_copy(data)
    for path, value in overrides.items():
        node = out
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
