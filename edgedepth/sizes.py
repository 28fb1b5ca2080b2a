"""Image sizes written as text: one parser for every command, config file and source URI.

A size is HEIGHTxWIDTH: `96x128`, `96X128` and `96*128` are the same size (spaces around the separator
are allowed). A list of sizes is comma-separated: `224x224,320x320`. Sizes the network runs at are
multiples of 32 (the encoder downsamples five times); camera and synthetic frame sizes need not be.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple, Union

from edgedepth.errors import ConfigError

NETWORK_MULTIPLE = 32  # the encoder halves the resolution five times
SizeLike = Union[str, Sequence[int]]

_SIZE = re.compile(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*")


def _round_to(value: int, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def parse_size(text: SizeLike, multiple_of: int = 1, min_side: int = 1, max_side: Optional[int] = None,
               what: str = "size") -> Tuple[int, int]:
    """'96x128' (or '96X128', '96*128', (96, 128)) -> (96, 128), height first.

    `multiple_of` > 1 requires both sides to be multiples of it (network input sizes use
    NETWORK_MULTIPLE); `min_side` and `max_side` bound each side. ConfigError with an example otherwise.
    """
    if isinstance(text, (tuple, list)):
        if len(text) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in text):
            raise ConfigError(f"{what} {list(text)!r} must be two integers [HEIGHT, WIDTH] or HEIGHTxWIDTH, "
                              "e.g. 96x128")
        h, w = int(text[0]), int(text[1])
    else:
        m = _SIZE.fullmatch(str(text))
        if not m:
            raise ConfigError(f"{what} {text!r} is not HEIGHTxWIDTH: write e.g. 96x128 (x, X or * between "
                              "height and width)")
        h, w = int(m.group(1)), int(m.group(2))
    if h <= 0 or w <= 0:
        raise ConfigError(f"{what} {h}x{w}: both sides must be positive, e.g. 96x128")
    if min(h, w) < min_side:
        raise ConfigError(f"{what} {h}x{w} is too small: at least {min_side} pixels per side")
    if max_side is not None and max(h, w) > max_side:
        raise ConfigError(f"{what} {h}x{w} is too large: at most {max_side} pixels per side")
    if multiple_of > 1 and (h % multiple_of or w % multiple_of):
        why = " (the encoder downsamples 5 times)" if multiple_of == NETWORK_MULTIPLE else ""
        raise ConfigError(f"{what} {h}x{w}: both sides must be multiples of {multiple_of}{why}; try "
                          f"{_round_to(h, multiple_of)}x{_round_to(w, multiple_of)}")
    return h, w


def parse_network_size(text: SizeLike, what: str = "size") -> Tuple[int, int]:
    """A size the network runs at: parse_size with both sides multiples of 32."""
    return parse_size(text, multiple_of=NETWORK_MULTIPLE, what=what)


def parse_sizes(text: Optional[str], multiple_of: int = 1, what: str = "size") -> List[Tuple[int, int]]:
    """'224x224,320x320' -> [(224, 224), (320, 320)] without repeats; '' or None -> []."""
    out: List[Tuple[int, int]] = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        hw = parse_size(part, multiple_of=multiple_of, what=what)
        if hw not in out:
            out.append(hw)
    return out


def format_size(hw: Sequence[int]) -> str:
    """(96, 128) -> '96x128'."""
    return f"{int(hw[0])}x{int(hw[1])}"
