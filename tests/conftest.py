"""Shared test helpers. Fixtures are made by the tests themselves; nothing is downloaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO


def cli_env() -> dict:
    """Environment for running `python -m edgedepth` in a subprocess."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable
