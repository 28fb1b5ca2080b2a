"""Packaging: light import, every package listed, wheel and editable installs map export/ and calibrate/."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "tensorrt", "pycuda", "boto3")
# Modules that define torch networks or training code at import time: workstation only.
WORKSTATION_ONLY = ("edgedepth.models", "edgedepth.train")

BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked for the test: ' + name)
sys.meta_path.insert(0, Block())
"""


def run_py(code: str, cwd: Path = REPO, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env=env)


def test_import_and_help_stay_light():
    code = (
        "import sys, edgedepth\n"
        "from click.testing import CliRunner\n"
        "from edgedepth.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('HELP', len(r.output))\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = run_py(code)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout


def all_modules() -> list[str]:
    import edgedepth

    names = [m.name for m in pkgutil.walk_packages(edgedepth.__path__, "edgedepth.")]
    return sorted(n for n in names if not n.startswith(WORKSTATION_ONLY) and not n.endswith("__main__"))


def test_every_device_module_imports_without_heavy_dependencies():
    mods = all_modules()
    code = BLOCKER.format(blocked=set(HEAVY)) + "import importlib\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in mods
    ) + "print('OK', len(sys.modules))\n"
    out = run_py(code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11+")
def test_every_package_is_listed_in_pyproject():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = cfg["package-dir"]
    found = set()
    for init in REPO.rglob("__init__.py"):
        rel = init.parent.relative_to(REPO)
        if rel.parts[0] in {".venv", "tests", "build", "scripts"} or "egg-info" in str(rel):
            continue
        top = rel.parts[0]
        prefix = {v: k for k, v in mapping.items()}.get(top)
        if prefix is None:
            continue
        found.add(".".join([prefix, *rel.parts[1:]]))
    assert found - listed == set(), f"packages missing from pyproject.toml: {sorted(found - listed)}"


def _check_mapped_imports(site: Path, tmp_path: Path) -> None:
    code = (
        f"import site; site.addsitedir({str(site)!r})\n"
        "import edgedepth, edgedepth.export, edgedepth.calibrate, edgedepth.device_configs\n"
        "from importlib import resources\n"
        "ymls = [p.name for p in resources.files('edgedepth.device_configs').iterdir() "
        "if p.name.endswith('.yaml')]\n"
        "print('FROM', edgedepth.export.__file__)\n"
        "print('YAMLS', len(ymls))\n"
    )
    out = run_py(code, cwd=tmp_path, env_extra={"PYTHONNOUSERSITE": "1"})
    assert out.returncode == 0, out.stderr
    assert "export" in out.stdout
    n_yaml = len(list((REPO / "device_configs").glob("*.yaml")))
    assert f"YAMLS {n_yaml}" in out.stdout


def test_wheel_maps_export_and_calibrate(tmp_path):
    wheel_dir = tmp_path / "wheels"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(wheel_dir), str(REPO)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (wheel,) = wheel_dir.glob("edgedepth-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgedepth/export/__init__.py" in names and "edgedepth/calibrate/__init__.py" in names
    assert not any(n.startswith(("export/", "calibrate/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    _check_mapped_imports(site, run_dir)


def test_editable_install_maps_export_and_calibrate(tmp_path):
    prefix = tmp_path / "prefix"
    # --ignore-installed: with --prefix, pip would otherwise uninstall the venv's own editable install.
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                          "--ignore-installed",
                          "--prefix", str(prefix), "-e", str(REPO)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    (site,) = prefix.glob("lib/python*/site-packages")
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    _check_mapped_imports(site, run_dir)
