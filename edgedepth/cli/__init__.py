"""Command-line interface: one module per command group, loaded lazily by `edgedepth.cli.main`."""
