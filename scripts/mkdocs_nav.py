"""MkDocs hook: the site's navigation from the pages that exist, in a fixed order for the known ones.

Pages not listed here are appended under "More", so adding a page to docs/ needs no configuration; a
listed page that does not exist is left out instead of failing a strict build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Union

SECTIONS = [
    ("Home", ["index.md"]),
    ("Workstation", ["data.md", "training.md", "export.md", "calibration.md", "tensorrt.md", "boards.md"]),
    ("Device", ["device-loop.md"]),
    ("Fleet", ["fleet.md", "fleet-security.md"]),
    ("Improvement loop", ["improvement-loop.md", "registry-security.md", "simulation.md"]),
    ("Reference", ["architecture.md", "troubleshooting.md", "results.md"]),
]


def build_nav(docs_dir: Path) -> List[Union[str, Dict[str, list]]]:
    present = sorted(p.relative_to(docs_dir).as_posix() for p in docs_dir.rglob("*.md"))
    listed = {page for _, pages in SECTIONS for page in pages}
    nav: List[Union[str, Dict[str, list]]] = []
    for title, pages in SECTIONS:
        found = [p for p in pages if p in present]
        if title == "Home":
            nav.extend(found)
        elif found:
            nav.append({title: found})
    rest = [p for p in present if p not in listed]
    if rest:
        nav.append({"More": rest})
    return nav


def on_config(config, **kwargs):
    config["nav"] = build_nav(Path(config["docs_dir"]))
    return config
