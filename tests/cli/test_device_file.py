"""The device file: one validated YAML that `edgedepth run` and `edgedepth upload` read alike."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from edgedepth.cli.main import cli
from edgedepth.cli.run import RUN_FLAGS
from edgedepth.cli.run import run as run_cmd
from edgedepth.cli.upload import UPLOAD_FLAGS
from edgedepth.cli.upload import upload as upload_cmd
from edgedepth.config import DeviceSettings, load_device_settings
from edgedepth.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "scripts" / "device.yaml"


def model_default(path):
    node = DeviceSettings()
    for key in path:
        node = getattr(node, key)
    return node


@pytest.mark.parametrize("command,flags", [(run_cmd, RUN_FLAGS), (upload_cmd, UPLOAD_FLAGS)])
def test_every_flag_has_a_key_and_the_same_default(command, flags):
    params = {p.name: p for p in command.params if p.name not in ("config_path",)}
    assert set(params) == set(flags), set(params) ^ set(flags)
    for name, path in flags.items():
        default = params[name].default
        default = list(default) if isinstance(default, tuple) else default
        if type(default).__name__ == "Sentinel":  # click's "no default" marker
            default = None
        if isinstance(params[name], click.Option) and params[name].is_flag and default is None:
            default = False
        if params[name].multiple and default is None:
            default = []
        assert default == model_default(path), (name, default, model_default(path))


def test_the_example_validates_and_the_units_use_it():
    settings = load_device_settings(EXAMPLE)
    assert settings.device_id and settings.spool and settings.server and settings.run.model
    for unit in ("edgedepth-run.service", "edgedepth-upload.service"):
        text = (REPO / "scripts" / unit).read_text()
        assert "--config /etc/edgedepth/device.yaml" in text, unit


def test_unknown_and_bad_keys_are_one_clear_error(tmp_path):
    f = tmp_path / "device.yaml"
    f.write_text("spool: /tmp/s\nrun:\n  selct: {mode: hard}\n  backend: cuda\n")
    with pytest.raises(ConfigError) as err:
        load_device_settings(f)
    msg = str(err.value)
    assert "run.selct: unknown key (did you mean 'select'?)" in msg and "run.backend" in msg
    assert "\n" not in msg
    res = CliRunner().invoke(cli, ["run", "--config", str(f)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "run.selct" in res.output


@pytest.fixture
def captured(monkeypatch):
    """What run and upload were asked to do, instead of doing it."""
    seen = {}

    def fake_build(settings, echo=None):
        seen["run"] = settings

        class Done:
            def run(self):
                return None
        return Done()

    class FakeDaemon:
        def __init__(self, cfg):
            seen["upload"] = cfg

        def run(self):
            return 0

    monkeypatch.setattr("edgedepth.runtime.app.build_pipeline", fake_build)
    monkeypatch.setattr("edgedepth.fleet.daemon.Daemon", FakeDaemon)
    monkeypatch.setenv("EDGEDEPTH_TOKEN", "t0ken")
    return seen


def test_run_and_upload_share_the_file_and_flags_override_it(tmp_path, captured):
    spool = tmp_path / "spool"
    spool.mkdir()
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    f = tmp_path / "device.yaml"
    f.write_text(yaml.safe_dump({
        "device_id": "cam-03", "board": "orin-nano-8gb", "spool": str(spool), "spool_max_mb": 100,
        "server": "http://127.0.0.1:9", "run": {"model": str(model), "select": {"rate": 0.1}},
        "upload": {"max_bandwidth": "1MB/s", "poll_interval": 2.0}}))
    res = CliRunner().invoke(cli, ["run", "--config", str(f), "--select-rate", "0.2", "--headless"])
    assert res.exit_code == 0, res.output
    s = captured["run"]
    assert (s.device_id, s.board, s.spool, s.run.model) == ("cam-03", "orin-nano-8gb", str(spool), str(model))
    assert s.run.select.rate == 0.2 and s.run.headless and s.run.select.mode == "hard"
    res = CliRunner().invoke(cli, ["upload", "--config", str(f), "--poll-interval", "3", "--once"])
    assert res.exit_code == 0, res.output
    d = captured["upload"]
    assert (str(d.spool), d.server, d.spool_max_bytes) == (str(spool), "http://127.0.0.1:9", 100 << 20)  # MiB
    assert d.max_bandwidth == 1e6 and d.poll_interval == 3.0 and d.once


def test_a_bad_flag_value_names_the_flag(tmp_path, captured):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    res = CliRunner().invoke(cli, ["run", str(model), "--select-rate", "7"])
    assert res.exit_code == 2 and res.output.startswith("error: --select-rate: "), res.output
