"""Promotion gate: a candidate model replaces the baseline only if it helps where it should and hurts
nowhere else.

Both models are evaluated on two dataset folders:
- the REGRESSION set (what the fleet already handles): the candidate must not get worse by more than
  `tolerance`, relative: (AbsRel_c - AbsRel_b) / AbsRel_b <= tolerance and
  (d1_b - d1_c) / d1_b <= tolerance;
- the TARGET set (what the new round was collected for; one folder or several, e.g. the val splits of
  every round so far, a suite of hard cases that grows each round and so gets less noisy): AbsRel must
  improve by more than `min_gain`,
  relative: (AbsRel_b - AbsRel_c) / AbsRel_b > min_gain, and d1 must not drop by more than `tolerance`
  (relative) there either.
- optional PROTECTED sets (e.g. the val split of every earlier round: hard cases an earlier model was
  promoted for) are each checked on their own like the regression set, at `protect_tolerance` (looser:
  they are small). A union can improve while one of its parts collapses; measured in the fleet
  simulation: night frames of round 1's val split went from AbsRel 0.25 to 0.73 under a round-2
  candidate that improved the union of both rounds' val splits from 0.505 to 0.446.
Every check must pass; a metric that is NaN/inf for the candidate fails. Per-domain figures, and
per-label-kind figures (sensor, teacher-metric, teacher-aligned, self-supervised: how each frame of a
round was labelled, from its meta.json) are reported but do not decide. Models may be checkpoints
(.pt) or ONNX files; scoring is done by edgedepth.evaluation with the shared metric conventions of
edgedepth.metrics.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from edgedepth.errors import ConfigError, DataError, GateRefused

PathLike = Union[str, "os.PathLike[str]"]
DatasetSpec = Union[PathLike, Sequence[PathLike]]  # one dataset folder, or several scored as one set
Evaluator = Callable[[PathLike, DatasetSpec], Dict[str, Any]]
REGRESSION, TARGET = "regression", "target"
PROTECTED = "protected"  # prefix of the names of protected sets: "protected 1", "protected 2", ...
_EPS = 1e-12


@dataclass
class MetricCheck:
    """One rule on one metric of one set; `change` is relative (candidate vs baseline, signed)."""

    metric: str
    baseline: float
    candidate: float
    change: float
    rule: str
    ok: bool


@dataclass
class SetResult:
    name: str
    dataset: str
    baseline: Dict[str, Any]
    candidate: Dict[str, Any]
    checks: List[MetricCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)


@dataclass
class GateResult:
    passed: bool
    candidate: str
    baseline: str
    tolerance: float
    min_gain: float
    sets: List[SetResult]
    reasons: List[str]
    protect_tolerance: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        for s, d in zip(self.sets, out["sets"]):
            d["passed"] = s.passed
        out["verdict"] = "promote" if self.passed else "refuse"
        return out

    def table(self) -> str:
        """Human-readable summary: one row per check, then the verdict."""
        rows = [("set", "metric", "baseline", "candidate", "change", "rule", "verdict")]
        for s in self.sets:
            for c in s.checks:
                rows.append((s.name, c.metric, _fmt(c.baseline), _fmt(c.candidate), _pct(c.change), c.rule,
                             "ok" if c.ok else "FAIL"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for s in self.sets:
            kinds = s.candidate.get("per_label_kind") or {}
            if len(kinds) > 1 or (kinds and "unrecorded" not in kinds):
                base = s.baseline.get("per_label_kind") or {}
                parts = [f"{k} AbsRel {_fmt(base.get(k, {}).get('abs_rel', math.nan))} -> "
                         f"{_fmt(v.get('abs_rel', math.nan))} ({v.get('frames', 0)} frames)"
                         for k, v in sorted(kinds.items())]
                lines.append(f"{s.name} set by label kind: " + "; ".join(parts))
        if self.passed:
            lines.append("verdict: PROMOTE (every check passed)")
        else:
            lines.append("verdict: REFUSE - " + "; ".join(self.reasons))
        return "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else str(x)


def _pct(x: float) -> str:
    return f"{x * 100:+.2f}%" if math.isfinite(x) else str(x)


def _metric(metrics: Dict[str, Any], name: str, who: str, dataset: str) -> float:
    aliases = {"d1": ("d1", "delta1", "a1"), "abs_rel": ("abs_rel", "absrel")}[name]
    for key in aliases:
        if key in metrics:
            try:
                return float(metrics[key])
            except (TypeError, ValueError):
                return float("nan")
    raise DataError(f"the evaluation of the {who} on {dataset} returned no '{name}' "
                    f"(got {sorted(metrics)}); is edgedepth.evaluation up to date?")


def _relative(candidate: float, baseline: float) -> float:
    """(candidate - baseline) / baseline; +-inf when the baseline is 0 and the candidate differs."""
    if abs(baseline) < _EPS:
        return 0.0 if candidate == baseline else math.copysign(math.inf, candidate - baseline)
    return (candidate - baseline) / abs(baseline)


def _set_checks(name: str, base: Dict[str, Any], cand: Dict[str, Any], dataset: str,
                tolerance: float, min_gain: float) -> List[MetricCheck]:
    """The target set's rules for TARGET, the regression rules (at `tolerance`) for any other set."""
    b_abs = _metric(base, "abs_rel", "baseline", dataset)
    c_abs = _metric(cand, "abs_rel", "candidate", dataset)
    b_d1, c_d1 = _metric(base, "d1", "baseline", dataset), _metric(cand, "d1", "candidate", dataset)
    if not (math.isfinite(b_abs) and math.isfinite(b_d1)):
        raise DataError(f"the baseline scores NaN on {dataset} (no valid ground-truth pixels?); "
                        "check the dataset folder")
    checks = []
    abs_change = _relative(c_abs, b_abs)
    if name != TARGET:
        ok = math.isfinite(c_abs) and abs_change <= tolerance
        checks.append(MetricCheck("abs_rel", b_abs, c_abs, abs_change, f"<= {_pct(tolerance)}", ok))
    else:
        ok = math.isfinite(c_abs) and -abs_change > min_gain
        rule = f"< {_pct(-min_gain)}" if min_gain > 0 else "< 0%"
        checks.append(MetricCheck("abs_rel", b_abs, c_abs, abs_change, rule, ok))
    d1_change = _relative(c_d1, b_d1)
    ok = math.isfinite(c_d1) and -d1_change <= tolerance
    checks.append(MetricCheck("d1", b_d1, c_d1, d1_change, f">= {_pct(-tolerance)}", ok))
    return checks


def gate_metrics(baseline: Dict[str, Dict[str, Any]], candidate: Dict[str, Dict[str, Any]],
                 tolerance: float = 0.02, min_gain: float = 0.0, datasets: Optional[Dict[str, str]] = None,
                 candidate_name: str = "candidate", baseline_name: str = "baseline",
                 protect_tolerance: float = 0.10) -> GateResult:
    """Apply the gate rules to metrics already computed: {"regression": {...}, "target": {...}} each,
    plus any protected sets ("protected 1", ...: names that start with PROTECTED)."""
    if tolerance < 0 or min_gain < 0 or protect_tolerance < 0:
        raise ConfigError(f"tolerances and min_gain must be >= 0 (got {tolerance}, {protect_tolerance}, "
                          f"{min_gain})")
    datasets = datasets or {}
    sets, reasons = [], []
    protected = sorted((n for n in baseline if n.startswith(PROTECTED)), key=lambda n: (len(n), n))
    for name in (REGRESSION, TARGET, *protected):
        if name not in baseline or name not in candidate:
            raise ConfigError(f"gate needs '{name}' metrics for both the baseline and the candidate")
        ds = str(datasets.get(name, name))
        tol = protect_tolerance if name.startswith(PROTECTED) else tolerance
        result = SetResult(name, ds, dict(baseline[name]), dict(candidate[name]),
                           _set_checks(name, baseline[name], candidate[name], ds, tol, min_gain))
        for c in result.checks:
            if not c.ok:
                reasons.append(f"{name} set {c.metric} {_fmt(c.baseline)} -> {_fmt(c.candidate)} "
                               f"({_pct(c.change)}, rule {c.rule})")
        sets.append(result)
    return GateResult(not reasons, candidate_name, baseline_name, tolerance, min_gain, sets, reasons,
                      protect_tolerance if protected else 0.0)


def default_evaluator(batch_size: int = 16, limit: Optional[int] = None,
                      providers: Optional[List[str]] = None) -> Evaluator:
    """Score a .pt or .onnx model on a dataset folder with edgedepth.evaluation (each model loaded once).

    Returns the overall metrics (abs_rel, ..., d1..d3, frames) plus "per_domain".
    """
    from edgedepth.evaluation import evaluate
    from edgedepth.predictor import load_predictor

    loaded: Dict[str, Any] = {}

    def run(model: PathLike, dataset: DatasetSpec) -> Dict[str, Any]:
        key = str(Path(model).resolve())
        if key not in loaded:
            loaded[key] = load_predictor(str(model), providers)
        folders = [str(d) for d in _folders(dataset)]
        result = evaluate(loaded[key], folders, batch_size=batch_size, limit=limit)
        out: Dict[str, Any] = dict(result.overall)
        out["per_domain"] = result.per_domain
        out["per_label_kind"] = per_label_kind(result, folders)
        return out

    return run


def per_label_kind(result, folders: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Metrics of an EvalResult's frames grouped by the label kind their dataset's meta.json records."""
    from edgedepth.data.formats import LABEL_KIND, read_meta
    from edgedepth.evaluation import summarise

    kinds: Dict[str, Dict[str, str]] = {}
    for f in folders:
        try:
            frames = read_meta(f).get("frames") or {}
        except DataError:
            frames = {}
        kinds[str(f)] = {n: str(m.get("label_kind") or LABEL_KIND.get(m.get("label"), m.get("label"))
                                or "unrecorded") for n, m in frames.items() if isinstance(m, dict)}
    groups: Dict[str, list] = {}
    for fr in result.frames:
        groups.setdefault(kinds.get(fr.dataset, {}).get(fr.name, "unrecorded"), []).append(fr)
    return {k: summarise(v) for k, v in groups.items()}


def _folders(spec: DatasetSpec) -> List[PathLike]:
    return [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)


def _check_inputs(candidate: PathLike, baseline: PathLike, regression_set: DatasetSpec,
                  target_set: DatasetSpec, protect_sets: Sequence[PathLike] = ()) -> None:
    for what, p in (("candidate model", candidate), ("baseline model", baseline)):
        if not Path(p).is_file():
            raise ConfigError(f"{what} {p} does not exist (a .pt checkpoint or .onnx file is expected)")
    sets = [("regression set", regression_set), ("target set", target_set)]
    sets += [("protected set", p) for p in protect_sets]
    for what, spec in sets:
        if not _folders(spec):
            raise ConfigError(f"give at least one {what} folder")
        for p in _folders(spec):
            if not Path(p).is_dir():
                raise ConfigError(f"{what} {p} is not a dataset folder")


def gate(candidate: PathLike, baseline: PathLike, regression_set: DatasetSpec, target_set: DatasetSpec,
         tolerance: float = 0.02, min_gain: float = 0.0, evaluator: Optional[Evaluator] = None,
         baseline_metrics: Optional[Dict[str, Dict[str, Any]]] = None, protect_sets: Sequence[PathLike] = (),
         protect_tolerance: float = 0.10) -> GateResult:
    """Evaluate both models on both sets and apply the rules (see the module docstring).

    `evaluator(model_path, dataset_dir) -> metrics` defaults to edgedepth.evaluation;
    `baseline_metrics` ({"regression": ..., "target": ...}) skips re-scoring a baseline already scored.
    `protect_sets`: folders each checked on its own at `protect_tolerance` (see the module docstring).
    Returns the GateResult; it does not raise on refusal (see `enforce`).
    """
    _check_inputs(candidate, baseline, regression_set, target_set, protect_sets)
    run = evaluator or default_evaluator()
    specs: Dict[str, DatasetSpec] = {REGRESSION: regression_set, TARGET: target_set}
    specs.update({f"{PROTECTED} {i + 1}": p for i, p in enumerate(protect_sets)})
    base = dict(baseline_metrics or {})
    cand = {}
    for name, spec in specs.items():
        if name not in base:
            base[name] = run(baseline, spec)
        cand[name] = run(candidate, spec)
    datasets = {name: ",".join(str(p) for p in _folders(spec)) for name, spec in specs.items()}
    return gate_metrics(base, cand, tolerance, min_gain, datasets, str(candidate), str(baseline),
                        protect_tolerance)


def enforce(result: GateResult) -> GateResult:
    """Raise GateRefused (with the reasons) unless the gate passed."""
    if not result.passed:
        raise GateRefused("promotion refused: " + "; ".join(result.reasons))
    return result


def write_result(result: GateResult, path: PathLike) -> Path:
    from edgedepth.fsutil import write_bytes_atomic

    out = Path(path)
    text = json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str) + "\n"
    write_bytes_atomic(out, text.encode("utf-8"))
    return out
