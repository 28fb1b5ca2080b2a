"""The documentation: the README stays a user's README, the site builds strictly, the results page is the
one the benchmark records give, and the boards table matches the board files."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PAGES_WRITTEN_BESIDE = ("export.md", "calibration.md", "tensorrt.md", "fleet-security.md",
                        "registry-security.md")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"edgedepth_script_{name}", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_is_a_users_readme():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 12 * 1024
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    assert re.search(r"(?i)session|the\s+brief|issue\s*#|earlier run|not kept", text) is None
    for page in re.findall(r"\]\((docs/[^)#]+)\)", text):  # links into the docs name real pages
        name = Path(page).name
        if name in PAGES_WRITTEN_BESIDE:
            continue  # pages written beside this one; the site's navigation picks them up when present
        assert (REPO / page).is_file(), page


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
    assert "mkdocs build --strict" in (REPO / "scripts" / "test.sh").read_text()


def test_site_builds_strictly(tmp_path):
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None and \
            importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install '.[docs]')")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "site" / "results" / "index.html").is_file()
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()


def test_navigation_lists_known_pages_in_order_and_appends_new_ones(tmp_path):
    nav = _script("mkdocs_nav")
    for page in ("index.md", "fleet.md", "results.md", "zz-new-topic.md"):
        (tmp_path / page).write_text("# x\n")
    built = nav.build_nav(tmp_path)
    assert built[0] == "index.md"
    assert {"Fleet": ["fleet.md"]} in built and {"Reference": ["results.md"]} in built
    assert built[-1] == {"More": ["zz-new-topic.md"]}
    assert not any("tensorrt.md" in json.dumps(item) for item in built)  # absent pages are left out


def test_results_page_is_generated_from_the_records():
    page = _script("results_page")
    assert page.main(["--check"]) == 0, "docs/results.md is stale: run python scripts/results_page.py"


def test_record_round_trip(tmp_path, monkeypatch):
    from edgedepth.bench.record import figure, figures_from_dict, load_records, record_results, table

    monkeypatch.delenv("EDGEDEPTH_RESULTS", raising=False)
    assert record_results("x", "nothing is written without a folder", [figure("a", 1)]) is None
    monkeypatch.setenv("EDGEDEPTH_RESULTS", str(tmp_path))
    path = record_results("bench_demo", "A demo benchmark", [figure("speed-up", 1.43, "x", ">= 1.3x")]
                          + figures_from_dict({"loop": {"ratio": 0.912345}}),
                          [table(["a", "b"], [[1, 2]])], command="python scripts/bench_demo.py --fast")
    assert path == tmp_path / "bench_demo.json"
    (rec,) = load_records(tmp_path)
    assert rec["command"] == "python scripts/bench_demo.py --fast" and rec["date"] and rec["machine"]
    assert rec["figures"][1] == {"figure": "loop / ratio", "value": 0.9123}
    text = _script("results_page").render([rec])
    assert "## A demo benchmark" in text and "python scripts/bench_demo.py --fast" in text
    assert "| speed-up | 1.43 x | >= 1.3x |" in text and "| 1 | 2 |" in text


def test_seeded_records_name_their_commands():
    from edgedepth.bench.record import load_records

    records = load_records(REPO / "docs" / "results")
    assert records
    for rec in records:
        assert rec["command"].startswith(("python scripts/", "edgedepth ")), rec["name"]
        assert re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", rec["commit"] or ""), rec["name"]


def test_boards_page_matches_the_board_files():
    text = (REPO / "docs" / "boards.md").read_text(encoding="utf-8")
    rows = {m.group(1): [c.strip() for c in m.group(0).strip("|").split("|")]
            for m in re.finditer(r"^\| `([a-z0-9-]+)` \|.*$", text, re.M)}
    files = sorted((REPO / "device_configs").glob("*.yaml"))
    assert sorted(rows) == sorted(yaml.safe_load(f.read_text())["board"] for f in files)
    for f in files:
        d = yaml.safe_load(f.read_text())
        row = rows[d["board"]]
        assert row[2] == (str(d["jetpack"]) if d.get("jetpack") else "-"), d["board"]
        assert row[3] == str(d["tensorrt"]) and row[4] == str(d["gpu"]["sm"]), d["board"]
        assert row[5] == ("yes" if d["int8"] else "no") and row[6] == str(d["dla_cores"]), d["board"]
        assert row[7] == d["default_precision"] and row[8] == str(d["max_onnx_opset"]), d["board"]


TEXT_SUFFIXES = (".py", ".md", ".yaml", ".sh", ".service", ".json")


def test_project_text_speaks_of_the_software():
    # how the software was made is not its documentation: work sessions, briefs, issue numbers
    pattern = re.compile(r"(?i)\b(this|that|an? earlier|earlier|previous|later|development|work|one|each)"
                         r"\s+sessions?\b|the\s+brief|issue\s*#\d|"
                         r"borrowed (gpu|machine)|lent (gpu|h100)")
    bad = []
    for folder in ("edgedepth", "export", "calibrate", "scripts", "device_configs", "docs"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix not in TEXT_SUFFIXES or "__pycache__" in path.parts:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if pattern.search(line):
                    bad.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    for n, line in enumerate((REPO / "README.md").read_text(encoding="utf-8").splitlines(), 1):
        if pattern.search(line):
            bad.append(f"README.md:{n}: {line.strip()[:100]}")
    assert not bad, "\n".join(bad)
