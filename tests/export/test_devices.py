"""Device configs: every board loads; impossible requests and unknown keys fail with the nearest choice."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from edgedepth.devices import list_devices, load_device, parse_device, parser_max_opset
from edgedepth.errors import ConfigError

BOARDS = {
    "jetson-nano-4gb",
    "xavier-nx",
    "agx-xavier",
    "orin-nano-8gb",
    "orin-nx-16gb",
    "agx-orin-64gb",
    "x86-dgpu",
}


def test_every_board_loads_with_reference_facts():
    assert set(list_devices()) == BOARDS
    nano = load_device("jetson-nano-4gb")
    assert (nano.gpu.sm, nano.tensorrt, nano.cuda, nano.int8, nano.dla_cores) == (
        "5.3",
        "8.2.1",
        "10.2",
        False,
        0,
    )
    assert nano.max_onnx_opset == 13 and nano.power.default_mode.watts == 10
    for name in ("xavier-nx", "agx-xavier"):
        d = load_device(name)
        assert (d.gpu.sm, d.tensorrt, d.cuda, d.dla_cores) == ("7.2", "8.5.2", "11.4", 2)
    for name in ("orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb"):
        d = load_device(name)
        assert (d.gpu.sm, d.tensorrt, d.cuda, d.jetpack) == ("8.7", "10.3.0", "12.6", "6.2")
    assert load_device("orin-nano-8gb").dla_cores == 0
    cam = load_device("orin-nano-8gb").camera
    assert (
        cam.sensor_id,
        cam.capture_width,
        cam.capture_height,
        cam.output_width,
        cam.fps,
        cam.flip_method,
    ) == (0, 1920, 1080, 960, 30, 0)


def test_parser_opset_limits():
    assert parser_max_opset("8.2.1") == 13
    assert parser_max_opset("8.5.2") == 17
    assert parser_max_opset("10.3.0") == 20


def test_impossible_requests_name_the_nearest_valid_choice():
    nano = load_device("jetson-nano-4gb")
    with pytest.raises(ConfigError, match="nearest valid precision: fp16"):
        nano.check_request("int8", None)
    assert nano.check_request("best", None) == ("fp16", None)
    with pytest.raises(ConfigError, match="no DLA cores.*agx-orin-64gb"):
        load_device("orin-nano-8gb").check_request("fp16", 0)
    orin = load_device("agx-orin-64gb")
    with pytest.raises(ConfigError, match="use 1"):
        orin.check_request("int8", 2)
    with pytest.raises(ConfigError, match="nearest valid precision: fp16"):
        orin.check_request("fp32", 0)
    with pytest.raises(ConfigError, match="did you mean 'int8'"):
        orin.check_request("int9", None)
    assert orin.check_request("int8", 1) == ("int8", 1)


def _nano_dict():
    return yaml.safe_load(load_device("jetson-nano-4gb").model_dump_json())


def test_config_validation_errors_are_clear(tmp_path):
    data = _nano_dict()
    data["workspce_mib"] = 1
    data["camera"]["fsp"] = 30
    with pytest.raises(ConfigError) as exc:
        parse_device(data, "user.yaml")
    assert "did you mean 'workspace_mib'" in str(exc.value) and "did you mean 'fps'" in str(exc.value)

    data = _nano_dict()
    data["default_precision"] = "int8"
    with pytest.raises(ConfigError, match="nearest valid precision: fp16"):
        parse_device(data)
    data = _nano_dict()
    data["default_dla_core"] = 0
    with pytest.raises(ConfigError, match="no DLA"):
        parse_device(data)
    data = _nano_dict()
    data["max_onnx_opset"] = 17
    with pytest.raises(ConfigError, match="use 13 or lower"):
        parse_device(data)


def test_user_yaml_by_path_and_unknown_name(tmp_path):
    data = _nano_dict()
    data["board"] = "my-nano"
    data["workspace_mib"] = 128
    path = tmp_path / "my-nano.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_device(str(path)).workspace_mib == 128
    with pytest.raises(ConfigError, match="did you mean 'orin-nano-8gb'"):
        load_device("orin-nano")
    with pytest.raises(ConfigError, match="does not exist"):
        load_device(str(tmp_path / "missing.yaml"))


def test_devices_command_lists_a_table():
    from edgedepth.cli.main import cli

    res = CliRunner().invoke(cli, ["devices"])
    assert res.exit_code == 0, res.output
    assert all(b in res.output for b in BOARDS) and "SM 8.7" in res.output
    res = CliRunner().invoke(cli, ["devices", "xavier-nx"])
    assert res.exit_code == 0 and '"dla_cores": 2' in res.output
