"""Teachers: bigger depth models whose labels a small edge model learns from (distillation).

`open_teacher(spec)` gives one interface over an edgedepth checkpoint, any ONNX depth model and a
Hugging Face transformers depth model; `TeacherLabeler` turns their outputs into training labels
(metric, aligned to metric points, or relative); `LabelCache` keeps outputs on disk. Heavy packages
(torch, transformers, onnxruntime) are imported only when a teacher is opened.
"""

from edgedepth.teachers.align import DISPARITY, METRIC, OUTPUT_KINDS, RELATIVE
from edgedepth.teachers.base import Teacher, TeacherOptions
from edgedepth.teachers.cache import LabelCache
from edgedepth.teachers.labels import (
    LABEL_KINDS,
    FrameInput,
    Label,
    LabelPolicy,
    TeacherLabeler,
    label_folder,
)


def open_teacher(spec: str, options=None) -> Teacher:
    """See edgedepth.teachers.models.open_teacher."""
    from edgedepth.teachers.models import open_teacher as _open

    return _open(spec, options)


__all__ = ["DISPARITY", "METRIC", "OUTPUT_KINDS", "RELATIVE", "Teacher", "TeacherOptions", "LabelCache",
           "LABEL_KINDS", "FrameInput", "Label", "LabelPolicy", "TeacherLabeler", "label_folder",
           "open_teacher"]
