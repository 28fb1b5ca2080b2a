"""The device side (edgedepth.runtime, edgedepth.backends) imports nothing of the workstation stages,
directly or through another module, lazy imports inside functions included.

import-linter (pyproject [tool.importlinter], run by scripts/test.sh) checks the stages under edgedepth/;
export/ and calibrate/ sit at the top of the repository and install as edgedepth.export / .calibrate, which
import-linter cannot see, so this test follows the imports itself with the same mapping."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"edgedepth": REPO / "edgedepth", "edgedepth.export": REPO / "export",
           "edgedepth.calibrate": REPO / "calibrate"}
DEVICE = ("edgedepth.runtime", "edgedepth.backends")
WORKSTATION = ("edgedepth.export", "edgedepth.calibrate", "edgedepth.bench", "edgedepth.train",
               "edgedepth.models")


def _modules() -> Dict[str, Path]:
    out = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix] + parts)] = path
    return out


def _imports(path: Path, name: str, modules: Dict[str, Path]) -> Set[str]:
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    found: Set[str] = set()
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t:
                found.add(t)
    return found


def _violations(modules: Dict[str, Path]) -> List[str]:
    graph = {n: _imports(p, n, modules) for n, p in modules.items()}
    bad = []
    for start in (n for n in modules if n.startswith(DEVICE)):
        seen, stack = {start: [start]}, [start]
        while stack:
            cur = stack.pop()
            for nxt in graph.get(cur, ()):
                if nxt in seen:
                    continue
                seen[nxt] = seen[cur] + [nxt]
                if nxt.startswith(WORKSTATION):
                    bad.append(" -> ".join(seen[nxt]))
                    continue
                stack.append(nxt)
    return sorted(set(bad))


def test_device_side_imports_no_workstation_stage():
    modules = _modules()
    assert "edgedepth.export.trt_build" in modules and "edgedepth.runtime.loop" in modules
    assert _violations(modules) == []


def test_the_check_sees_a_lazy_import(tmp_path):
    modules = _modules()
    fake = tmp_path / "sneaky.py"
    fake.write_text("def f():\n    from edgedepth.export.trt_build import plan_build\n")
    modules["edgedepth.runtime.sneaky"] = fake
    assert _violations(modules) == ["edgedepth.runtime.sneaky -> edgedepth.export.trt_build"]
