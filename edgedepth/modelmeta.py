"""What a model file says about itself: the ONNX `metadata_props` contract between export and runtime.

The runtime reads preprocessing and identity from here, never from constants. Every value is a string
(ONNX metadata is string->string); structured values are JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from edgedepth.errors import EdgeDepthError, ModelError
from edgedepth.preprocess import OUTPUT_DOC, InputSpec, Preprocessing

KEY_PREPROCESSING = "edgedepth.preprocessing"  # JSON of Preprocessing.to_dict()
KEY_MODEL = "edgedepth.model"  # JSON: name, version, size, checkpoint_sha256, training_round, depth_units
KEY_OUTPUTS = "edgedepth.outputs"  # JSON: output name -> meaning and units
KEY_FORMAT = "edgedepth.format"
KEY_INPUT = "edgedepth.input"  # JSON of InputSpec.to_dict(); absent = float-nchw (preprocessed on the CPU)
KEY_SELECTION = "edgedepth.selection"  # JSON {"stride", "thumbnail"} when the graph has a 'selection' output
FORMAT_VERSION = "1"


@dataclass
class ModelInfo:
    """Identity and preprocessing of a trained model, as carried by checkpoints and ONNX files."""

    preprocessing: Preprocessing
    name: str = "edgedepth"
    version: str = "0"
    size: str = "small"
    checkpoint_sha256: str = ""
    training_round: int = 0
    extra: Dict[str, str] = field(default_factory=dict)
    input: InputSpec = field(default_factory=InputSpec)

    @property
    def input_shape(self):
        """Batch-1 shape of the model file's input tensor."""
        return self.input.shape(self.preprocessing)
    # "metres", or "relative": trained on relative labels, its depth has no metric scale (right up to a
    # per-frame scale and shift), so nothing downstream may present it as metres
    depth_units: str = "metres"

    @property
    def relative(self) -> bool:
        return self.depth_units == "relative"

    @property
    def selection_stride(self) -> int:
        """The sampling stride of the graph's 'selection' output (0: the model has none)."""
        try:
            return int(json.loads(self.extra.get(KEY_SELECTION, "{}")).get("stride", 0))
        except (ValueError, TypeError, AttributeError):
            return 0

    def to_metadata_props(self) -> Dict[str, str]:
        ident = {"name": self.name, "version": self.version, "size": self.size,
                 "checkpoint_sha256": self.checkpoint_sha256, "training_round": self.training_round,
                 "depth_units": self.depth_units}
        props = {
            KEY_FORMAT: FORMAT_VERSION,
            KEY_PREPROCESSING: self.preprocessing.to_json(),
            KEY_MODEL: json.dumps(ident, sort_keys=True),
            KEY_OUTPUTS: json.dumps(OUTPUT_DOC, sort_keys=True),
        }
        if self.input.is_uint8:
            props[KEY_INPUT] = json.dumps(self.input.to_dict(), sort_keys=True)
        props.update(self.extra)
        return props

    @classmethod
    def from_metadata_props(cls, props: Dict[str, str], source: str = "model") -> "ModelInfo":
        if KEY_PREPROCESSING not in props:
            raise ModelError(
                f"{source} carries no '{KEY_PREPROCESSING}' metadata: it was not exported by "
                "`edgedepth export`; re-export it from its checkpoint"
            )
        try:
            pre = Preprocessing.from_json(props[KEY_PREPROCESSING])
            ident = json.loads(props.get(KEY_MODEL, "{}"))
            spec = InputSpec.from_dict(json.loads(props[KEY_INPUT])) if KEY_INPUT in props else InputSpec()
        except (ValueError, TypeError, EdgeDepthError) as exc:
            raise ModelError(f"{source} has unreadable edgedepth metadata ({exc}); re-export it") from exc
        known = {KEY_PREPROCESSING, KEY_MODEL, KEY_OUTPUTS, KEY_FORMAT, KEY_INPUT}
        return cls(
            preprocessing=pre,
            name=str(ident.get("name", "edgedepth")),
            version=str(ident.get("version", "0")),
            size=str(ident.get("size", "")),
            checkpoint_sha256=str(ident.get("checkpoint_sha256", "")),
            training_round=int(ident.get("training_round", 0)),
            depth_units=str(ident.get("depth_units", "metres")),
            extra={k: v for k, v in props.items() if k not in known},
            input=spec,
        )


def read_onnx_info(path: str, session: Optional[object] = None) -> ModelInfo:
    """ModelInfo of an ONNX file, read from its protobuf bytes (no `onnx`, no onnxruntime session).

    `session` (an open onnxruntime session of the same file) is accepted for callers that have one; the
    file is the source either way, so every reader of the metadata sees the same values."""
    from edgedepth.onnxproto import onnx_header

    if not Path(path).is_file():
        raise ModelError(f"ONNX model {path} does not exist; export it with `edgedepth export`")
    props = dict(onnx_header(path)["metadata"])
    return ModelInfo.from_metadata_props(props, source=str(path))
