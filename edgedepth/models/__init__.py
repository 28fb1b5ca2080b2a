"""Depth networks (torch). One architecture per file; sizes are data. Imports torch: workstation only."""

from edgedepth.models.catalog import MODEL_SIZES, build_model, describe_model

__all__ = ["MODEL_SIZES", "build_model", "describe_model"]
