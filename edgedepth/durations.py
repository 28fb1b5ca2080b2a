"""Durations written as text: one parser for every command, config file and source URI.

`45` and `45s` are seconds; `500ms`, `10m` (or `10min`), `1h` and `7d` carry their unit.
"""

from __future__ import annotations

import re
from typing import Optional, Union

from edgedepth.errors import ConfigError

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s|min|m|h|d)?\s*")


def parse_duration(text: Union[str, float, int], allow_zero: bool = False) -> float:
    """'45', '30s', '500ms', '10m', '1h', '7d' -> seconds; ConfigError when malformed, negative, or zero
    unless `allow_zero`."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _DURATION.fullmatch(str(text).lower())
        if not m:
            raise ConfigError(f"bad duration {text!r}: use seconds or a number with ms/s/m/h/d, e.g. 10m")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"duration {text!r} must be {'>= 0' if allow_zero else 'positive'}")
    return value


def optional_duration(text: Union[str, float, None]) -> Optional[float]:
    """Like parse_duration with zero allowed, but None or '' (not given) stays None."""
    if text is None or text == "":
        return None
    return parse_duration(text, allow_zero=True)
