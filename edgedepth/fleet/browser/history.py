"""What the fleet's data became: the rounds built from it and the model versions published from them.

Rounds come from a rounds folder (ROUNDS/<name>/lineage.json as `edgedepth round build` writes it, or one
round folder itself), each with an optional gate result beside it (ROUND/gate.json, as written by
`edgedepth gate --json ROUND/gate.json`). Versions come from a registry's index.json (and, when a version's
metrics carry one, its gate result) plus the sequence of its signed state.json, read here for display only
(devices verify the signature; this page does not).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgedepth.errors import EdgeDepthError

log = logging.getLogger(__name__)

LINEAGE = "lineage.json"
GATE = "gate.json"
MAX_JSON_BYTES = 64 << 20  # a lineage of ~300,000 frames
MAX_VERSIONS_READ = 200  # versions whose lineage.json is read to link them to rounds


@dataclass
class GateRow:
    set: str
    metric: str
    baseline: str
    candidate: str
    change: str
    rule: str
    ok: bool


@dataclass
class GateView:
    verdict: str  # "promote" | "refuse"
    rows: List[GateRow]
    reasons: List[str]


@dataclass
class RoundView:
    name: str
    path: str
    created_at: str = ""
    report: Dict[str, Any] = field(default_factory=dict)
    config: Dict[str, Any] = field(default_factory=dict)
    frames: int = 0
    store_frames: int = 0  # frames that came from the store (not replay)
    gate: Optional[GateView] = None
    versions: List[str] = field(default_factory=list)  # registry versions trained on this round
    error: Optional[str] = None


def _fmt(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{v:.4f}" if math.isfinite(v) else str(v)


def _pct(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{v * 100:+.2f}%" if math.isfinite(v) else str(v)


def gate_view(result: Any) -> Optional[GateView]:
    """The table of a gate result dict (edgedepth.gate.GateResult.to_dict()), or None if it is not one."""
    if not isinstance(result, dict) or not isinstance(result.get("sets"), list):
        return None
    rows = []
    for s in result["sets"]:
        if not isinstance(s, dict):
            continue
        for c in s.get("checks") or []:
            if isinstance(c, dict):
                rows.append(GateRow(str(s.get("name", "?")), str(c.get("metric", "?")),
                                    _fmt(c.get("baseline")), _fmt(c.get("candidate")), _pct(c.get("change")),
                                    str(c.get("rule", "")),
                                    bool(c.get("ok"))))
    verdict = result.get("verdict") or ("promote" if result.get("passed") else "refuse")
    return GateView(str(verdict), rows, [str(r) for r in result.get("reasons") or []])


def _read_json(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise EdgeDepthError(f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB; not reading it")
    return json.loads(path.read_text(encoding="utf-8"))


def _natural(name: str) -> Tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def round_dirs(root: Path) -> List[Path]:
    """The round folders under `root` (or `root` itself when it is one), in natural name order."""
    if (root / LINEAGE).is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if (p / LINEAGE).is_file()), key=lambda p: _natural(p.name))


def _signature(paths: List[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        for f in (p / LINEAGE, p / GATE):
            try:
                st = f.stat()
                h.update(f"{f}:{st.st_mtime_ns}:{st.st_size};".encode())
            except OSError:
                h.update(f"{f}:-;".encode())
    return h.hexdigest()


def read_rounds(root: Path) -> Tuple[List[RoundView], List[Tuple[str, str, str, str]]]:
    """Every round under `root` and the (round, item id, split, label) rows of the frames they hold."""
    views, members = [], []
    for path in round_dirs(root):
        view = RoundView(name=path.name, path=str(path))
        try:
            lineage = _read_json(path / LINEAGE)
            view.created_at = str(lineage.get("created_at", ""))
            view.report = lineage.get("report") or {}
            config = lineage.get("config") or {}
            keys = ("store", "since", "teacher", "self_supervised", "replay", "replay_fraction",
                    "val_fraction",
                    "seed")
            view.config = {k: config[k] for k in keys if config.get(k) not in (None, "", [])}
            frames = lineage.get("frames") or []
            view.frames = len(frames)
            for fr in frames:
                item = fr.get("item") if isinstance(fr, dict) else None
                if isinstance(item, str) and item:
                    view.store_frames += 1
                    members.append((path.name, item, str(fr.get("split") or ""), str(fr.get("label") or "")))
        except (OSError, ValueError, AttributeError, EdgeDepthError) as exc:
            view.error = f"{path / LINEAGE}: {exc}"
            log.warning("rounds: cannot read %s: %s", path / LINEAGE, exc)
        if (path / GATE).is_file():
            try:
                view.gate = gate_view(_read_json(path / GATE))
            except (OSError, ValueError, EdgeDepthError) as exc:
                log.warning("rounds: cannot read %s: %s", path / GATE, exc)
        views.append(view)
    return views, members


@dataclass
class VersionView:
    version: str
    created_at: str = ""
    promoted: bool = False
    notes: str = ""
    model: str = ""
    metrics: Dict[str, str] = field(default_factory=dict)  # a few headline figures
    gate: Optional[GateView] = None
    round: Optional[str] = None  # the round folder it was trained on, when its lineage says


@dataclass
class RegistryView:
    url: str
    versions: List[VersionView] = field(default_factory=list)
    latest_promoted: Optional[str] = None
    state: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None


def _headline(metrics: Any, limit: int = 6) -> Dict[str, str]:
    """AbsRel, d1 and RMSE of a version's metrics: top level, or per set one level down."""
    out: Dict[str, str] = {}
    if not isinstance(metrics, dict):
        return out
    keys = ("abs_rel", "d1", "rmse")
    for key in keys:
        if isinstance(metrics.get(key), (int, float)):
            out[key] = _fmt(metrics[key])
    if not out:
        for name, sub in metrics.items():
            if isinstance(sub, dict):
                for key in keys[:2]:
                    if isinstance(sub.get(key), (int, float)) and len(out) < limit:
                        out[f"{name} {key}"] = _fmt(sub[key])
    return out


def read_registry(url: str, endpoint_url: Optional[str] = None) -> RegistryView:
    """The versions of a registry (index.json) and its signed state's sequence (not verified here)."""
    from edgedepth.registry.index import parse_index
    from edgedepth.registry.storage import open_store

    view = RegistryView(url=str(url))
    try:
        store = open_store(url, endpoint_url=endpoint_url)
        try:
            index = parse_index(store.read("index.json"))
            view.latest_promoted = index.get("latest_promoted")
            for n, entry in enumerate(reversed(index["versions"])):
                model = entry.get("model") if isinstance(entry.get("model"), dict) else {}
                metrics = entry.get("metrics") if isinstance(entry.get("metrics"), dict) else {}
                v = VersionView(version=entry["version"], created_at=str(entry.get("created_at", "")),
                                promoted=bool(entry.get("promoted")), notes=str(entry.get("notes") or ""),
                                model=str(model.get("name") or model.get("arch") or ""),
                                metrics=_headline(metrics.get("eval") if "eval" in metrics else metrics),
                                gate=gate_view(metrics.get("gate")))
                if n < MAX_VERSIONS_READ:
                    v.round = _version_round(store, entry["version"])
                view.versions.append(v)
            raw = store.read("state.json")
            if raw:
                signed = json.loads(json.loads(raw).get("signed") or "{}")
                view.state = {k: signed.get(k) for k in ("sequence", "issued_at", "expires", "key_id")}
        finally:
            close = getattr(store, "close", None)
            if close:
                close()
    except (EdgeDepthError, OSError, ValueError, AttributeError) as exc:
        view.error = f"{exc}"
        log.warning("registry %s: %s", url, exc)
    return view


def _version_round(store, version: str) -> Optional[str]:
    try:
        raw = store.read(f"versions/{version}/lineage.json")
        lineage = json.loads(raw) if raw else {}
    except (EdgeDepthError, OSError, ValueError):
        return None
    rnd = lineage.get("round") if isinstance(lineage, dict) else None
    return Path(str(rnd)).name if rnd else None


class History:
    """Rounds and registry, re-read when their files change (rounds) or every `refresh_s` (registry)."""

    def __init__(self, rounds_dir: Optional[str], registry: Optional[str], catalog=None,
                 endpoint_url: Optional[str] = None, refresh_s: float = 10.0) -> None:
        self.rounds_dir = Path(rounds_dir).expanduser() if rounds_dir else None
        self.registry = registry
        self.catalog = catalog
        self.endpoint_url = endpoint_url
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._rounds: List[RoundView] = []
        self._rounds_sig: Optional[str] = None
        self._rounds_checked = -1e18
        self._registry: Optional[RegistryView] = None
        self._registry_read = -1e18

    def refresh_rounds(self) -> List[RoundView]:
        """Re-read the rounds when their files changed (checked at most every refresh_s); the catalog's
        round memberships follow."""
        if self.rounds_dir is None:
            return []
        with self._lock:
            now = time.monotonic()
            if now - self._rounds_checked >= self.refresh_s:
                self._rounds_checked = now
                sig = _signature(round_dirs(self.rounds_dir))
                if sig != self._rounds_sig:
                    views, members = read_rounds(self.rounds_dir)
                    if self.catalog is not None:
                        self.catalog.set_rounds(members, sig)
                    self._rounds, self._rounds_sig = views, sig
            return list(self._rounds)

    def rounds(self) -> List[RoundView]:
        """The rounds, each with the registry versions trained on it."""
        rounds = self.refresh_rounds()
        versions = self.registry_view()
        if versions is None:
            return rounds
        by_round: Dict[str, List[str]] = {}
        for v in versions.versions:
            if v.round:
                by_round.setdefault(v.round, []).append(v.version + (" (promoted)" if v.promoted else ""))
        return [replace(r, versions=by_round.get(r.name, [])) for r in rounds]

    def registry_view(self) -> Optional[RegistryView]:
        if not self.registry:
            return None
        with self._lock:
            now = time.monotonic()
            if self._registry is None or now - self._registry_read >= self.refresh_s:
                self._registry = read_registry(self.registry, self.endpoint_url)
                self._registry_read = now
            return self._registry
