"""One size syntax everywhere: HEIGHTxWIDTH with x, X or *, the same in every command and config."""

from __future__ import annotations

import pytest

from edgedepth.errors import ConfigError
from edgedepth.sizes import format_size, parse_network_size, parse_size, parse_sizes


@pytest.mark.parametrize("text", ["96x128", "96X128", "96*128", " 96 x 128 ", (96, 128), [96, 128]])
def test_separators_and_sequences(text):
    assert parse_size(text) == (96, 128)
    assert parse_network_size(text) == (96, 128)


@pytest.mark.parametrize("text", ["96", "96x", "x128", "96,128", "96x128x3", "-96x128", "big", "", (96,),
                                  (96.0, 128), ("96", "128")])
def test_malformed_sizes_are_config_errors(text):
    with pytest.raises(ConfigError, match="96x128"):
        parse_size(text)


def test_bounds_and_network_multiple():
    with pytest.raises(ConfigError, match="positive"):
        parse_size("0x128")
    with pytest.raises(ConfigError, match="too small"):
        parse_size("4x128", min_side=8)
    with pytest.raises(ConfigError, match="too large"):
        parse_size("96x5000", max_side=4096)
    with pytest.raises(ConfigError, match="multiples of 32.*try 96x128"):
        parse_network_size("100x128")
    assert parse_size("100x130") == (100, 130)  # camera sizes need not be multiples of 32


def test_lists_keep_order_without_repeats():
    assert parse_sizes("224x224, 96X128,224*224") == [(224, 224), (96, 128)]
    assert parse_sizes("") == [] and parse_sizes(None) == []
    with pytest.raises(ConfigError):
        parse_sizes("224x224,100x100", multiple_of=32)
    assert format_size((96, 128)) == "96x128"


def test_every_command_parses_sizes_the_same():
    """train's config, export, bench and the camera source URIs all accept the '*' form."""
    from edgedepth.bench.runtimes import parse_sizes as bench_sizes
    from edgedepth.runtime.sources import make_raw_source
    from edgedepth.train.config import TrainConfig

    assert TrainConfig(data="d", out="o", size="96*128").size == (96, 128)
    assert bench_sizes("96*128") == [(96, 128)]
    src = make_raw_source("synthetic://indoor?size=96*128")
    assert (src.height, src.width) == (96, 128)
