"""Gate-aware WiSE-FT: merge a fine-tuned checkpoint back towards the one it started from.

A fine-tune on a few new-domain frames regresses the old domain; the gate then refuses it and the fleet
learns nothing. Interpolating the weights, theta(a) = (1 - a) theta0 + a theta_ft (see
`edgedepth.train.regularize.interpolate_state`), gives a one-parameter family from "no change" (a=0)
to "the fine-tune" (a=1). `wise_merge` scores every a of a grid on the original-domain regression set
and keeps the largest one whose AbsRel and d1 stay within `tolerance` of every anchor model (the model
being replaced and, across rounds, the round-0 model, so regressions do not compound round after round).
The gate then sees a candidate built to pass its regression rule; its target rule (the new domain must
improve) still decides. `protect` adds sets the merge must also keep within `protect_tolerance` of the
model being replaced (the gate's protected sets, e.g. earlier rounds' hard cases: see edgedepth.gate).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Union

from edgedepth.errors import ConfigError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
DEFAULT_ALPHAS = tuple(round(i / 20, 2) for i in range(21))  # 0.00, 0.05, ..., 1.00


@dataclass
class MergePoint:
    alpha: float
    abs_rel: float
    d1: float
    ok: bool
    protected_abs_rel: List[float] = field(default_factory=list)  # one per protected set


@dataclass
class MergeResult:
    """The chosen interpolation weight, the merged checkpoint and every point scored on the way."""

    alpha: float
    checkpoint: Path
    limit_abs_rel: float  # the regression-set AbsRel the merge had to stay under
    limit_d1: float
    points: List[MergePoint] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["checkpoint"] = str(self.checkpoint)
        return d


def limits(anchors: Sequence[Dict[str, float]], tolerance: float, margin: float = 1.0):
    """(max AbsRel, min d1) allowed on the regression set: within tolerance*margin of every anchor."""
    if not anchors:
        raise ConfigError("a gate-aware merge needs at least one anchor model's regression-set metrics")
    tol = tolerance * margin
    return (min(a["abs_rel"] for a in anchors) * (1.0 + tol),
            max(a["d1"] for a in anchors) * (1.0 - tol))


def choose_alpha(points: Sequence[MergePoint]) -> float:
    """The largest alpha whose point is within limits (0.0 when none is: the model is unchanged)."""
    ok = [p.alpha for p in points if p.ok]
    return max(ok) if ok else 0.0


def wise_merge(initial: PathLike, finetuned: PathLike, regression_set: PathLike, out: PathLike,
               tolerance: float = 0.02, anchors: Sequence[PathLike] = (), margin: float = 1.0,
               alphas: Sequence[float] = DEFAULT_ALPHAS, batch_size: int = 32,
               protect: Sequence[PathLike] = (), protect_tolerance: float = 0.10) -> MergeResult:
    """Write OUT = theta(a*) for the largest a* on `alphas` that keeps the regression set within
    tolerance*margin of `initial` and of every model in `anchors` (AbsRel up, d1 down, relative), and
    every `protect` set within protect_tolerance of `initial`."""
    import torch

    from edgedepth.checkpoint import load_checkpoint, write_checkpoint
    from edgedepth.models import build_model
    from edgedepth.preprocess import Preprocessing
    from edgedepth.train.loop import validate
    from edgedepth.train.regularize import interpolate_state
    from edgedepth.train.torchdata import load_frames

    if not 0 <= tolerance < 1 or margin <= 0:
        raise ConfigError(f"merge tolerance must be in [0, 1) and margin > 0, got {tolerance}, {margin}")
    if not 0 <= protect_tolerance < 1:
        raise ConfigError(f"protect tolerance must be in [0, 1), got {protect_tolerance}")
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ConfigError(f"merge alphas must lie in [0, 1], got {list(alphas)}")
    init_ck, ft_ck = load_checkpoint(initial), load_checkpoint(finetuned)
    pre = Preprocessing.from_dict(ft_ck["preprocessing"])
    frames = load_frames(str(regression_set), pre.height, pre.width, workers=1)
    model = build_model(ft_ck["model_config"])
    device = torch.device("cpu")

    guarded = [load_frames(str(p), pre.height, pre.width, workers=1) for p in protect]

    def score(state, on=frames) -> Dict[str, float]:
        model.load_state_dict(state)
        m = validate(model, on, pre, device, batch_size)
        return {"abs_rel": float(m["abs_rel"]), "d1": float(m["d1"])}

    anchor_metrics = [score(init_ck["state_dict"])]
    seen = {str(Path(initial).resolve())}
    for a in anchors:
        key = str(Path(a).resolve())
        if key not in seen:
            seen.add(key)
            anchor_metrics.append(score(load_checkpoint(a)["state_dict"]))
    max_abs, min_d1 = limits(anchor_metrics, tolerance, margin)
    guard_limits = [limits([score(init_ck["state_dict"], g)], protect_tolerance) for g in guarded]
    points = []
    for alpha in sorted(set(float(a) for a in alphas)):
        state = interpolate_state(init_ck["state_dict"], ft_ck["state_dict"], alpha)
        m = score(state)
        ok = math.isfinite(m["abs_rel"]) and m["abs_rel"] <= max_abs and m["d1"] >= min_d1
        protected = []
        for g, (g_abs, g_d1) in zip(guarded, guard_limits):
            gm = score(state, g)
            protected.append(gm["abs_rel"])
            ok = ok and math.isfinite(gm["abs_rel"]) and gm["abs_rel"] <= g_abs and gm["d1"] >= g_d1
        points.append(MergePoint(alpha, m["abs_rel"], m["d1"], ok, protected))
    alpha = choose_alpha(points)
    merged = dict(ft_ck)
    merged["state_dict"] = interpolate_state(init_ck["state_dict"], ft_ck["state_dict"], alpha)
    lineage = dict(merged.get("lineage") or {})
    lineage["merge"] = {"method": "wise-ft", "alpha": alpha, "initial": str(initial),
                        "finetuned": str(finetuned), "regression_set": str(regression_set),
                        "tolerance": tolerance, "margin": margin,
                        "protect": [str(p) for p in protect], "protect_tolerance": protect_tolerance}
    merged["lineage"] = lineage
    merged["metrics"] = {}  # the fine-tune's validation metrics do not describe the merged weights
    out = write_checkpoint(out, merged)
    log.info("WiSE-FT merge: alpha %.2f (regression AbsRel limit %.4f, d1 limit %.4f)",
             alpha, max_abs, min_d1)
    return MergeResult(alpha, out, max_abs, min_d1, points)

