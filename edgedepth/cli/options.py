"""Parameter types shared by every command, so the same kind of value is read the same way everywhere.

- `Size` / `Sizes`: HEIGHTxWIDTH through edgedepth.sizes (x, X or *), checked when the line is parsed.
- `OutputPath`: a file or folder the command writes. Checked before any work starts: its nearest
  existing parent must be a writable folder (a file in the way, or no permission, is a usage error,
  not a traceback after the work is done). It is created by the command, never here.
- `InputPath`: a file or folder the command reads; it must exist (never created).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import click

from edgedepth.errors import ConfigError


class Size(click.ParamType):
    """HEIGHTxWIDTH -> (height, width); `multiple_of` 32 for sizes the network runs at."""

    name = "HxW"

    def __init__(self, multiple_of: int = 1, min_side: int = 1, max_side: Optional[int] = None) -> None:
        self.multiple_of, self.min_side, self.max_side = multiple_of, min_side, max_side

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]):
        if isinstance(value, tuple):
            return value
        from edgedepth.sizes import parse_size

        try:
            return parse_size(value, multiple_of=self.multiple_of, min_side=self.min_side,
                              max_side=self.max_side)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class Sizes(click.ParamType):
    """HxW[,HxW...] -> [(height, width), ...] without repeats."""

    name = "HxW[,HxW...]"

    def __init__(self, multiple_of: int = 1) -> None:
        self.multiple_of = multiple_of

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]):
        if isinstance(value, list):
            return value
        from edgedepth.sizes import parse_sizes

        try:
            return parse_sizes(value, multiple_of=self.multiple_of)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


def unwritable_reason(path: Path) -> Optional[str]:
    """Why `path` cannot be created or written, or None when it can (as far as a check can tell)."""
    path = Path(path).expanduser()
    if path.exists():
        if path.is_dir():
            return None if os.access(path, os.W_OK) else f"the folder {path} is not writable"
        return None if os.access(path, os.W_OK) else f"the file {path} is not writable"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, so {path} cannot be created under it"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the folder {parent} is not writable, so {path} cannot be created"
    return None


class OutputPath(click.Path):
    """A path the command writes: it may not exist yet, but it must be creatable."""

    def __init__(self, file_okay: bool = True, dir_okay: bool = True, path_type: Any = None) -> None:
        super().__init__(exists=False, file_okay=file_okay, dir_okay=dir_okay, path_type=path_type)

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]):
        out = super().convert(value, param, ctx)
        why = unwritable_reason(Path(os.fsdecode(out)))
        if why:
            self.fail(why, param, ctx)
        return out


def InputPath(file_okay: bool = True, dir_okay: bool = True, path_type: Any = None) -> click.Path:
    """A path the command reads: it must exist."""
    return click.Path(exists=True, file_okay=file_okay, dir_okay=dir_okay, path_type=path_type)


def config_option(command: str):
    """`--config device.yaml`: the device file `run` and `upload` share (edgedepth.config)."""
    return click.option(
        "--config", "config_path", type=InputPath(dir_okay=False), default=None,
        help=f"Device file (YAML) with the settings `{command}` shares with the other device command; "
             "flags given here override it. See docs/cli.md.")


def device_settings(ctx: click.Context, config_path: Optional[str], flags: "dict"):
    """device.yaml (if any) with every flag given on the command line set over it, validated.

    `flags` maps a click parameter name to its key path in the file, e.g. "select_rate" ->
    ("run", "select", "rate"). Flags left at their defaults do not override the file.
    """
    from click.core import ParameterSource
    from pydantic import ValidationError

    from edgedepth.config import DeviceSettings, describe_validation, merge_overrides, read_device_file

    data = read_device_file(config_path) if config_path else {}
    given = {}
    for name, path in flags.items():
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            value = ctx.params[name]
            if isinstance(value, tuple):
                value = list(value)
            given[path] = os.fspath(value) if isinstance(value, os.PathLike) else value
    try:
        return DeviceSettings.model_validate(merge_overrides(data, given))
    except ValidationError as exc:
        option = {path: _flag_name(ctx, name) for name, path in flags.items() if path in given}
        for err in exc.errors():  # name the flag when the bad value came from one
            loc = tuple(str(p) for p in err["loc"])
            if loc in option:
                raise ConfigError(f"{option[loc]}: {err['msg']}") from None
        raise ConfigError(describe_validation(exc, str(config_path or "the command line"))) from None


def _flag_name(ctx: click.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name:
            return param.opts[0] if param.opts else name
    return name
