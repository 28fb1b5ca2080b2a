"""One convention for every command: an error is one red `error:` line and exit status 2, no traceback.

Every command is found by walking the click groups, so a new command without cases here fails
`test_every_command_has_cases`. Each case is a command line that must fail cleanly:
- missing: an input path that does not exist (never created, never silently accepted);
- size: a malformed HEIGHTxWIDTH;
- unwritable: an output under a plain file, so it cannot be created.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import click
import pytest
from click.testing import CliRunner

from edgedepth.cli.main import cli

BAD_SIZE = "96x12a"

# Placeholders filled per test: MISSING does not exist; BLOCKED is under a plain file (cannot be created);
# OUT is a fresh path; FILE an existing (empty) file; DIR an existing folder; SPOOL an existing spool.
CASES: Dict[str, Dict[str, List[str]]] = {
    "baseline classical": {
        "missing": ["--data", "MISSING"],
        "unwritable": ["--json", "BLOCKED", "--data", "DIR"],
    },
    "bench": {
        "missing": ["MISSING"],
        "size": ["--sizes", BAD_SIZE, "DIR"],
        "unwritable": ["--json", "BLOCKED", "DIR"],
    },
    "build": {
        "missing": ["MISSING", "--device", "orin-nano"],
        "unwritable": ["--out", "BLOCKED", "FILE", "--device", "orin-nano"],
    },
    "calibrate": {
        "missing": ["MISSING", "--data", "DIR", "--target", "cpu"],
    },
    "dashboard": {
        "missing": ["--store", "MISSING", "--admin-token-file", "FILE"],
        "unwritable": ["--store", "DIR", "--admin-token-file", "BLOCKED", "--new-token"],
    },
    "data import": {
        "missing": ["MISSING", "--out", "OUT"],
        "unwritable": ["--out", "BLOCKED", "DIR"],
    },
    "data info": {"missing": ["MISSING"]},
    "data synth": {
        "size": ["--size", BAD_SIZE, "--out", "OUT"],
        "unwritable": ["--out", "BLOCKED", "--frames", "1"],
    },
    "demo": {"unwritable": ["--workdir", "BLOCKED"]},
    "devices": {"missing": ["MISSING.yaml"]},
    "eval": {
        "missing": ["MISSING", "--data", "DIR"],
        "unwritable": ["--json", "BLOCKED", "FILE", "--data", "DIR"],
    },
    "export": {
        "missing": ["MISSING", "--out", "OUT"],
        "size": ["--size", BAD_SIZE, "FILE", "--out", "OUT"],
        "unwritable": ["--out", "BLOCKED", "FILE"],
    },
    "gate": {
        "missing": ["MISSING", "--baseline", "FILE", "--regression-set", "DIR", "--target-set", "DIR"],
        "unwritable": ["--json", "BLOCKED", "FILE", "--baseline", "FILE", "--regression-set", "DIR",
                       "--target-set", "DIR"],
    },
    "ingest add-device": {"unwritable": ["--auth-db", "BLOCKED", "dev-1"]},
    "ingest list-devices": {"missing": ["--store", "MISSING"]},
    "ingest revoke-device": {"missing": ["dev-1", "--store", "MISSING"]},
    "ingest serve": {"missing": ["--store", "MISSING"]},
    "keys gen": {"unwritable": ["--out", "BLOCKED"]},
    "lint": {"missing": ["MISSING", "--device", "orin-nano"]},
    "predict": {
        "missing": ["--model", "MISSING", "FILE", "--out", "OUT"],
        "unwritable": ["--out", "BLOCKED", "--model", "FILE", "FILE"],
    },
    "publish": {"missing": ["MISSING", "--registry", "OUT"]},
    "round build": {
        "missing": ["--store", "MISSING", "--out", "OUT"],
        "unwritable": ["--out", "BLOCKED", "--store", "DIR"],
    },
    "round train": {
        "missing": ["MISSING", "--from", "FILE", "--out", "OUT"],
        "unwritable": ["DIR", "--from", "FILE", "--out", "BLOCKED"],
    },
    "run": {
        "missing": ["MISSING"],
        "size": ["FILE", "--input", f"synthetic://indoor?size={BAD_SIZE}"],
        "unwritable": ["--save-depth", "BLOCKED", "FILE"],
    },
    "simulate": {"unwritable": ["--workdir", "BLOCKED", "--quick"]},
    "teacher check": {"missing": ["MISSING"]},
    "train": {
        "missing": ["--data", "MISSING", "--epochs", "1", "--out", "OUT"],
        "size": ["--size", BAD_SIZE, "--data", "DIR", "--epochs", "1", "--out", "OUT"],
        "unwritable": ["--out", "BLOCKED", "--data", "DIR", "--epochs", "1"],
    },
    "upload": {
        "missing": ["--spool", "MISSING", "--server", "http://127.0.0.1:9", "--once"],
        "unwritable": ["--db", "BLOCKED", "--spool", "SPOOL", "--server", "http://127.0.0.1:9", "--once"],
    },
    "upload status": {"missing": ["--spool", "MISSING"]},
}


def walk(group: click.Group = cli, path: Tuple[str, ...] = ()) -> Iterator[Tuple[str, click.Command]]:
    """(command path, command) of every runnable command under `group`."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        here = path + (name,)
        if isinstance(cmd, click.Group):
            if cmd.invoke_without_command:
                yield " ".join(here), cmd
            yield from walk(cmd, here)
        else:
            yield " ".join(here), cmd


ALL = sorted(name for name, _ in walk())
PROBES = [(name, kind) for name in sorted(CASES) for kind in CASES[name]]


@pytest.fixture
def places(tmp_path: Path) -> Dict[str, str]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    (tmp_path / "file.onnx").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    (tmp_path / "spool").mkdir()
    return {"MISSING": str(tmp_path / "no-such-thing"), "BLOCKED": str(blocker / "out"),
            "OUT": str(tmp_path / "out"), "FILE": str(tmp_path / "file.onnx"), "DIR": str(tmp_path / "dir"),
            "SPOOL": str(tmp_path / "spool")}


def fill(args: List[str], places: Dict[str, str]) -> List[str]:
    out = []
    for a in args:
        for key, value in places.items():
            if a == key or a.startswith(key + "."):
                a = value + a[len(key):]
        out.append(a)
    return out


def assert_one_line_error(result, args) -> str:
    assert result.exit_code == 2, (args, result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output, (args, result.output)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    return lines[0]


def test_every_command_has_cases():
    assert ALL, "no commands found"
    assert sorted(CASES) == ALL, f"commands without cases: {sorted(set(ALL) - set(CASES))}"


@pytest.mark.parametrize("name,kind", PROBES, ids=[f"{n.replace(' ', '-')}-{k}" for n, k in PROBES])
def test_error_is_one_line_exit_2(name, kind, places):
    args = name.split() + fill(CASES[name][kind], places)
    result = CliRunner().invoke(cli, args)
    line = assert_one_line_error(result, args)
    if kind == "missing":
        assert places["MISSING"] in line or "MISSING" in line.upper(), line
        assert not Path(places["MISSING"]).exists(), f"{name} created the missing input"
    elif kind == "size":
        assert BAD_SIZE in line and "HEIGHTxWIDTH" in line, line
    else:
        assert "cannot be created" in line or "Not a directory" in line, line


def test_usage_errors_are_one_line():
    for args in (["no-such-command"], ["train", "--no-such-option"], ["train"]):
        assert_one_line_error(CliRunner().invoke(cli, args), args)


def test_dataset_specs_are_read_alike(places):
    """`data info`, `train` and `eval` accept the same specs and refuse a missing one with the same words."""
    missing = f"nyu:{places['MISSING']}.mat"
    lines = []
    for args in (["data", "info", missing],
                 ["train", "--data", missing, "--epochs", "1", "--out", places["OUT"]],
                 ["eval", places["FILE"], "--data", missing]):
        lines.append(assert_one_line_error(CliRunner().invoke(cli, args), args))
    assert all(f"dataset {places['MISSING']}.mat does not exist" in ln for ln in lines), lines


def test_train_refuses_an_out_folder_holding_a_run(tmp_path, places):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"")
    data = tmp_path / "data"
    (data / "rgb").mkdir(parents=True)
    args = ["train", "--data", str(data), "--epochs", "1", "--out", str(out)]
    line = assert_one_line_error(CliRunner().invoke(cli, args), args)
    assert "--resume" in line and "--force" in line


def test_ingest_serve_on_a_port_in_use_is_one_line(tmp_path):
    store = tmp_path / "store"
    add = CliRunner().invoke(cli, ["ingest", "add-device", "dev-1", "--store", str(store)])
    assert add.exit_code == 0, add.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        args = ["ingest", "serve", "--store", str(store), "--port", str(port)]
        line = assert_one_line_error(CliRunner().invoke(cli, args), args)
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_ctrl_c_in_train_says_where_last_pt_is_and_how_to_resume(tmp_path, monkeypatch):
    out, data = tmp_path / "run", tmp_path / "data"
    (data / "rgb").mkdir(parents=True)

    def interrupted(cfg):
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "last.pt").write_bytes(b"")  # an epoch finished before the interrupt
        raise KeyboardInterrupt

    monkeypatch.setattr("edgedepth.train.loop.train", interrupted)
    monkeypatch.setattr("edgedepth.train.openmp.choose_wait_policy", lambda: None)
    res = CliRunner().invoke(cli, ["train", "--data", str(data), "--epochs", "1", "--out", str(out)])
    assert res.exit_code == 130 and "Traceback" not in res.output
    assert f"{out / 'last.pt'}" in res.output and "--resume" in res.output


@pytest.mark.parametrize("prefix", ["", "nyu:"])
def test_an_nyu_mat_file_is_accepted_by_data_info_train_and_eval(tmp_path, places, monkeypatch, prefix):
    import h5py
    import numpy as np

    mat = tmp_path / "nyu.mat"
    with h5py.File(mat, "w") as f:  # MATLAB v7.3 layout as h5py sees it (axes reversed)
        f["images"] = np.zeros((2, 3, 8, 6), np.uint8)
        f["depths"] = np.ones((2, 8, 6), np.float32)
    spec = prefix + str(mat)
    info = CliRunner().invoke(cli, ["data", "info", spec, "--json"])
    assert info.exit_code == 0 and '"count": 2' in info.output, info.output

    seen = {}
    monkeypatch.setattr("edgedepth.train.loop.train", lambda cfg: seen.setdefault("data", cfg.data) and 1 / 0)
    monkeypatch.setattr("edgedepth.train.openmp.choose_wait_policy", lambda: None)
    CliRunner().invoke(cli, ["train", "--data", spec, "--epochs", "1", "--out", places["OUT"]])
    assert seen.get("data") == [spec]  # validated and handed to the training loop as given

    res = CliRunner().invoke(cli, ["eval", places["FILE"], "--data", spec])
    line = assert_one_line_error(res, spec)
    assert "cannot load ONNX model" in line  # the spec passed; the (empty) model file is what fails


def test_board_is_named_board_and_device_stays_its_alias(tmp_path):
    """`--board` selects the Jetson board in every command that takes one; `--device` still works."""
    from click.testing import CliRunner

    for command in (["export"], ["calibrate"], ["lint"], ["build"], ["run"]):
        sub = cli
        for name in command:
            sub = sub.get_command(click.Context(sub), name)
        names = {opt for p in sub.params for opt in getattr(p, "opts", [])}
        assert {"--board", "--device"} <= names, (command, sorted(names))
    res = CliRunner().invoke(cli, ["devices", "--help"])
    assert res.exit_code == 0
