"""A round's meta.json (per split) and lineage.json, written as the frames come instead of from lists.

Each frame's entries are appended to scratch files as they are written; `write_meta` and `write_lineage`
then assemble the final files around them, so a round of any size needs memory for one frame at a time.
The text is exactly what `json.dumps(doc, indent=1)` gives for the whole document (tested): an entry
nested two levels deep is its own `json.dumps(..., indent=1)` with every line indented two more spaces.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Sequence, Tuple

from edgedepth.fsutil import atomic_writer

SPLITS = ("train", "val")
META_KEYS = ("domain", "label", "label_kind", "device_id", "captured_at", "item", "score", "intrinsics",
             "replay_of")
LINEAGE_KEYS = ("item", "label", "label_kind", "domain", "device_id", "captured_at", "replay_of")


def _nested(value: Any, default: Optional[Callable]) -> bytes:
    """`value` as it appears two levels deep in an indent=1 document (without the leading newline)."""
    return json.dumps(value, indent=1, default=default).replace("\n", "\n  ").encode()


class SplitFiles:
    """Rows of a round's train and val splits, streamed to scratch files in `work` as they are added.

    A row is a dict with the keys of META_KEYS and `name` (the frame's file stem). `lineage_keys`: the
    row's keys each lineage frame records (after name and split)."""

    def __init__(self, work: Path, lineage_keys: Sequence[str] = LINEAGE_KEYS) -> None:
        from edgedepth.data.formats import _json_default

        self._default = _json_default
        self._lineage_keys = tuple(lineage_keys)
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self._files: Dict[Tuple[str, str], BinaryIO] = {}
        self.count = {s: 0 for s in SPLITS}
        self.domains: Dict[str, Dict[str, int]] = {s: {} for s in SPLITS}  # in order of first appearance

    def _file(self, kind: str, split: str) -> BinaryIO:
        key = (kind, split)
        if key not in self._files:
            self._files[key] = open(self.work / f"{kind}-{split}.part", "wb")
        return self._files[key]

    def add(self, split: str, row: dict) -> None:
        entry = {k: row[k] for k in META_KEYS if row.get(k) is not None}
        self._file("meta", split).write(b",\n  " + json.dumps(row["name"]).encode() + b": "
                                        + _nested(entry, self._default))
        frame = {"name": row["name"], "split": split, **{k: row.get(k) for k in self._lineage_keys}}
        self._file("lineage", split).write(b",\n  " + _nested(frame, str))
        self.count[split] += 1
        d = row.get("domain") or "unknown"
        self.domains[split][d] = self.domains[split].get(d, 0) + 1

    def _copy(self, parts: List[Tuple[str, str]], dst: BinaryIO, empty: bytes, close: bytes) -> None:
        """Write the entries of `parts` to dst as one comma-separated run ending in `close`, or `empty`."""
        if not any(key in self._files for key in parts):
            dst.write(empty)
            return
        dst.write(empty[:1])  # the opening bracket
        first = True
        for key in parts:
            f = self._files.get(key)
            if f is None:
                continue
            f.flush()
            with open(f.name, "rb") as src:
                if first:
                    src.read(1)  # the first entry's leading comma
                    first = False
                shutil.copyfileobj(src, dst)
        dst.write(close)

    def write_meta(self, root: Path, split: str) -> None:
        """root/meta.json of the split (edgedepth.data.formats.write_meta's layout)."""
        head = json.dumps({"source": "round", "split": split, "frames": {}}, indent=1).encode()
        with atomic_writer(Path(root) / "meta.json") as dst:
            dst.write(head[:-len(b"{}\n}")])
            self._copy([("meta", split)], dst, b"{}\n}", b"\n }\n}")

    def write_lineage(self, path: Path, lineage: dict) -> None:
        """`lineage` (without "frames") plus every frame, train then val, as its last key."""
        head = json.dumps({**lineage, "frames": []}, indent=1, default=str).encode()
        with atomic_writer(path) as dst:
            dst.write(head[:-len(b"[]\n}")])
            self._copy([("lineage", s) for s in SPLITS], dst, b"[]\n}", b"\n ]\n}")

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
