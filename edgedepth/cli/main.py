"""The `edgedepth` command group.

Subcommands live in their own modules and are imported only when invoked (or when help lists them),
so `edgedepth --help` stays fast and never imports torch, onnx, tensorrt or pycuda.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from edgedepth import __version__
from edgedepth.errors import EdgeDepthError

# command name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "data": "edgedepth.cli.data:data",
    "train": "edgedepth.cli.train:train",
    "eval": "edgedepth.cli.evaluate:eval_cmd",
    "predict": "edgedepth.cli.evaluate:predict",
    "export": "edgedepth.cli.export:export_cmd",
    "calibrate": "edgedepth.cli.export:calibrate",
    "lint": "edgedepth.cli.export:lint",
    "build": "edgedepth.cli.export:build",
    "devices": "edgedepth.cli.export:devices",
    "run": "edgedepth.cli.run:run",
    "upload": "edgedepth.cli.upload:upload",
    "ingest": "edgedepth.cli.ingest:ingest",
    "dashboard": "edgedepth.cli.dashboard:dashboard",
    "round": "edgedepth.cli.rounds:round_group",
    "teacher": "edgedepth.cli.teacher:teacher_group",
    "gate": "edgedepth.cli.registry:gate",
    "keys": "edgedepth.cli.registry:keys",
    "publish": "edgedepth.cli.registry:publish",
    "simulate": "edgedepth.cli.simulate:simulate",
    "demo": "edgedepth.cli.demo:demo",
    "bench": "edgedepth.cli.bench:bench",
    "baseline": "edgedepth.cli.bench:baseline",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (EdgeDepthError, OSError) as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            fail(describe_error(exc))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's main, with every usage error as one red line and exit status 2 (no usage block)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            # an int comes back from click.exceptions.Exit (e.g. `lint` exits 1 on findings)
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "edgedepth")
            fail(f"{exc.format_message()} (see `{where} --help`)")
        except click.ClickException as exc:
            fail(exc.format_message())
        except (click.Abort, KeyboardInterrupt):
            click.secho("interrupted", fg="red", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def describe_error(exc: BaseException) -> str:
    """One line for an error: EdgeDepthError messages as they are; OS errors with the path they name."""
    if isinstance(exc, OSError) and not isinstance(exc, EdgeDepthError):
        what = exc.strerror or str(exc)
        path = exc.filename
        return f"{what}: {path}" if path else what
    return " ".join(str(exc).split()) or type(exc).__name__


def fail(message: str) -> None:
    """Print `error: MESSAGE` as one red line on stderr and exit with status 2."""
    click.secho(f"error: {' '.join(message.split())}", fg="red", err=True)
    sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgedepth")
@click.option("-v", "--verbose", count=True, help="More log output; -v also shows tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """edgedepth: train, quantize, deploy and improve a depth network on Jetson-class GPUs.

    Run `edgedepth demo` for the whole loop on built-in defaults.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:  # console-script entry point
    cli(prog_name="edgedepth")


if __name__ == "__main__":
    main()
