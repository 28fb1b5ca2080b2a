"""The next round in one step: fine-tune the deployed model on a new round without forgetting, then gate it.

`edgedepth round train ROUND --from CURRENT` runs the recipe the fleet simulation measured (edgedepth.sim;
the simulation's SimConfig takes its fine-tune defaults from `FinetuneRecipe`, so the two cannot drift apart):

1. the parent's training data comes from CURRENT's lineage: the original training set ("base") and the
   rounds it was already fine-tuned on;
2. the fine-tune trains on the WHOLE base set plus every round so far, with the new frames (all rounds)
   at a fixed share of every batch (`new_share`) instead of a small replay sample;
3. BatchNorm running statistics stay frozen, the learning rate is the fine-tune's (lower than round 0's),
   and the run is a fixed number of optimiser steps; the candidate is the last weights;
4. the gate's sets are the validation sets; a WiSE-FT merge pulls the fine-tune back towards CURRENT as far
   as the regression set needs (edgedepth.train.merge); then the gate (edgedepth.gate) decides.

Fine-tuning on the new frames alone (`edgedepth train --init-from CURRENT --data rounds/1`) forgets the
original domain and the gate refuses it; that is why this is a command of its own. Every choice is a field
of `FinetuneRecipe`, overridable on the command line and recorded in the candidate's lineage
(`lineage["round_train"]`), which is also where the next round finds this round's data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from edgedepth.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MERGES = ("none", "wise")  # how a fine-tune is pulled back towards its parent

PathLike = Union[str, Path]
LINEAGE_KEY = "round_train"
ROUND_JSON = "round.json"


@dataclass
class FinetuneRecipe:
    """How a round fine-tunes; the fleet simulation (edgedepth.sim.config.SimConfig) runs these defaults."""

    steps: int = 1200  # optimiser steps (ignored with `minutes`)
    minutes: Optional[float] = None  # wall-clock budget for the fine-tune instead of a step count
    lr: float = 1e-3
    batch_size: int = 16
    new_share: float = 0.25  # share of every batch drawn from the rounds' new frames
    freeze_bn: bool = True
    freeze: str = "none"  # none | encoder | stem
    l2sp: float = 0.0
    ema_decay: float = 0.0
    merge: str = "wise"  # none | wise
    merge_margin: float = 1.0
    tolerance: float = 0.02
    min_gain: float = 0.0
    target_all_rounds: bool = True
    protect_rounds: bool = False
    protect_tolerance: float = 0.10

    def validate(self) -> "FinetuneRecipe":
        if self.minutes is None and self.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {self.steps}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"--minutes must be > 0, got {self.minutes}")
        if not self.lr > 0 or self.batch_size < 1:
            raise ConfigError("--lr must be > 0 and --batch-size >= 1")
        if not 0.0 <= self.new_share < 1.0:
            raise ConfigError(f"--new-share must be in [0, 1) (0: every frame equally likely), got "
                              f"{self.new_share}")
        if self.merge not in MERGES:
            raise ConfigError(f"--merge must be one of {', '.join(MERGES)}, got {self.merge!r}")
        if not 0 < self.merge_margin <= 10:
            raise ConfigError(f"--merge-margin must be in (0, 10], got {self.merge_margin}")
        if self.tolerance < 0 or self.min_gain < 0 or self.protect_tolerance < 0:
            raise ConfigError("--tolerance, --min-gain and --protect-tolerance must be >= 0")
        return self

    def overrides(self) -> Dict[str, Any]:
        """The fields that differ from the default recipe."""
        default = FinetuneRecipe()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


# ---------------------------------------------------------------------------------------------------
# Data: what a round trains on and what the gate scores (shared with the fleet simulation)


def count_frames(dirs: Sequence[PathLike]) -> int:
    from edgedepth.data.dataset import open_dataset

    return sum(len(open_dataset(str(d))) for d in dirs)


def train_frames(d: PathLike) -> int:
    """Training frames of a dataset folder; 0 for a round whose frames all went to its val split."""
    try:
        return count_frames([d])
    except DataError:
        return 0


def new_share_data(round_dirs: Sequence[PathLike], share: float) -> Tuple[list, List[float]]:
    """(data dirs, shares): round_dirs[0] (the base set) whole at 1 - share, the later rounds (those with
    training frames) splitting `share` by their frame counts."""

    counts = [train_frames(d) for d in round_dirs[1:]]
    new = [(d, c) for d, c in zip(round_dirs[1:], counts) if c > 0]
    total = sum(c for _, c in new)
    if not total:
        return [round_dirs[0]], [1.0]
    return [round_dirs[0]] + [d for d, _ in new], [1.0 - share] + [share * c / total for _, c in new]


def round_val_dirs(rounds: Sequence[PathLike]) -> List[str]:
    """The val splits of these rounds, for those that have one."""
    from edgedepth.rounds.build import round_val_dir

    return [v for v in (round_val_dir(str(d)) for d in rounds) if v]


def gate_target_set(new_rounds: Sequence[PathLike], current: PathLike, all_rounds: bool
                    ) -> Union[str, List[str]]:
    """What the gate must see improve: the val splits of every round so far (`all_rounds`) or of the
    current round only; the current round's own folder when it has no val split (biased, noted)."""
    from edgedepth.rounds.build import round_val_dir

    vals = round_val_dirs(new_rounds)
    if all_rounds and len(vals) > 1:
        return vals
    return round_val_dir(str(current)) or str(current)


def round_data(base: Sequence[PathLike], rounds: Sequence[PathLike], share: float
               ) -> Tuple[List[str], List[float]]:
    """(data dirs, shares) of a round's fine-tune: every base set whole plus every round with training
    frames; with share > 0 the rounds' frames fill `share` of every batch (by frame count) and the base
    sets the rest (by frame count too); share 0: no shares, every frame equally likely."""
    with_frames = [str(r) for r in rounds if train_frames(r) > 0]
    if share <= 0:
        return [str(b) for b in base] + with_frames, []
    data, shares = new_share_data([base[0]] + with_frames, share)
    counts = [count_frames([b]) for b in base] if len(base) > 1 else [1]
    return ([str(b) for b in base] + [str(d) for d in data[1:]],
            [shares[0] * c / sum(counts) for c in counts] + list(shares[1:]))


def recipe_from_sim(cfg: "SimConfig") -> FinetuneRecipe:  # noqa: F821 - sim imports rounds, not back
    """The fine-tune recipe a fleet simulation runs (SimConfig's fields under their recipe names)."""
    return FinetuneRecipe(steps=cfg.finetune_steps, lr=cfg.finetune_lr, batch_size=cfg.batch_size,
                          new_share=cfg.new_share, freeze_bn=cfg.freeze_bn, freeze=cfg.finetune_freeze,
                          l2sp=cfg.finetune_l2sp, ema_decay=cfg.finetune_ema, merge=cfg.merge,
                          merge_margin=cfg.merge_margin, tolerance=cfg.gate_tolerance,
                          min_gain=cfg.gate_min_gain, target_all_rounds=cfg.target_all_rounds,
                          protect_rounds=cfg.protect_rounds, protect_tolerance=cfg.protect_tolerance)


def epochs_for_steps(n_frames: int, batch_size: int, steps: int) -> int:
    """Epochs of the training loop that make about `steps` optimiser steps over n_frames frames."""
    steps_per_epoch = max(1, n_frames // max(1, min(batch_size, n_frames)))
    return max(1, int(round(steps / steps_per_epoch)))


def finetune_train_config(recipe: FinetuneRecipe, data: Sequence[PathLike], shares: Sequence[float],
                          val: Sequence[PathLike], out: PathLike, init_from: PathLike, **extra: Any):
    """The TrainConfig of one round's fine-tune (the one mapping from recipe to training run, used by
    `round train` and the fleet simulation). `extra`: further TrainConfig fields (seed, threads, ...)."""
    from edgedepth.train.config import TrainConfig

    if recipe.minutes is None:
        budget = {"epochs": epochs_for_steps(count_frames(data), recipe.batch_size, recipe.steps)}
    else:
        budget = {"minutes": recipe.minutes}
    return TrainConfig(data=[str(p) for p in data], val=[str(p) for p in val], out=str(out),
                       init_from=str(init_from), lr=recipe.lr, batch_size=recipe.batch_size,
                       freeze_bn=recipe.freeze_bn, l2sp=recipe.l2sp, freeze=recipe.freeze,
                       data_shares=list(shares), ema_decay=recipe.ema_decay, **budget, **extra)


# ---------------------------------------------------------------------------------------------------
# The parent's lineage


@dataclass
class Parent:
    """What a checkpoint was trained on, read from its lineage."""

    checkpoint: str
    base: List[str]  # the original training set(s): replayed whole in every round
    rounds: List[str] = field(default_factory=list)  # rounds already fine-tuned on, oldest first
    regression_set: Optional[str] = None  # the original-domain held-out set (gate regression set)
    anchor: Optional[str] = None  # the first model of the chain (a merge stays near it too)
    training_round: int = 0
    loss: Dict[str, Any] = field(default_factory=dict)  # loss settings the parent was trained with


LOSS_KEYS = ("grad_weight", "loss_mode", "frame_weight")


def _lineage_paths(entries: Any) -> List[str]:
    return [str(e["path"]) for e in entries or [] if isinstance(e, dict) and e.get("path")]


def read_parent(path: PathLike) -> Parent:
    """The parent's data from its checkpoint lineage (edgedepth.checkpoint): a checkpoint made by
    `round train` names its base set and rounds; any other names the data it was trained on (= base)."""
    from edgedepth.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    lineage = ck.get("lineage") or {}
    tc = ck.get("train_config") or {}
    loss = {k: tc[k] for k in LOSS_KEYS if k in tc}
    rt = lineage.get(LINEAGE_KEY)
    if isinstance(rt, dict):
        return Parent(str(path), list(rt["base"]), list(rt.get("rounds", [])), rt.get("regression_set"),
                      rt.get("anchor") or str(path), int(ck.get("training_round", 0)), loss)
    base = _lineage_paths(lineage.get("train")) or [str(p) for p in tc.get("data", [])]
    vals = _lineage_paths(lineage.get("val")) or [str(p) for p in tc.get("val", [])]
    return Parent(str(path), base, [], vals[0] if len(vals) == 1 else None, str(path),
                  int(ck.get("training_round", 0)), loss)


# ---------------------------------------------------------------------------------------------------
# One round


@dataclass
class RoundTrainResult:
    out: Path
    candidate: Path
    passed: bool
    gate: Any  # edgedepth.gate.GateResult
    record: Dict[str, Any]


def _need_dirs(what: str, dirs: Sequence[PathLike], hint: str) -> None:
    for d in dirs:
        if not Path(d).exists():
            raise DataError(f"{what} {d} does not exist; {hint}")


def train_round(round_dir: PathLike, parent_path: PathLike, out: PathLike,
                recipe: Optional[FinetuneRecipe] = None, base: Sequence[PathLike] = (),
                regression_set: Optional[PathLike] = None, target_sets: Sequence[PathLike] = (),
                merge_set: Optional[PathLike] = None, protect_sets: Sequence[PathLike] = (),
                seed: int = 0, device: str = "auto", workers: int = 2, threads: Optional[int] = None,
                progress: bool = True, say=log.info) -> RoundTrainResult:
    """Fine-tune PARENT on ROUND with `recipe`, merge, gate; writes OUT/{last,best,merged}.pt and
    OUT/round.json (recipe, data, gate verdict). Returns the result; does not raise on refusal."""
    from edgedepth.checkpoint import file_sha256
    from edgedepth.gate import default_evaluator, gate
    from edgedepth.train.loop import train

    recipe = (recipe or FinetuneRecipe()).validate()
    round_dir = Path(round_dir)
    if not (round_dir / "rgb").is_dir() and not (round_dir / "val" / "rgb").is_dir():
        raise DataError(f"{round_dir} is not a round folder (rgb/ or val/rgb/ expected); build one with "
                        "`edgedepth round build --store STORE --out ROUND`")
    parent = read_parent(parent_path)
    base_dirs = [str(p) for p in base] or parent.base
    if not base_dirs:
        raise DataError(f"{parent_path} names no training data in its lineage; give it with --base DIR")
    _need_dirs("the parent's training set", base_dirs,
               "give the original training data with --base DIR[,DIR...]")
    _need_dirs("the parent's round", parent.rounds, "restore it or start the chain again with --base")
    key = str(round_dir.resolve())
    if key in {str(Path(r).resolve()) for r in parent.rounds}:
        raise ConfigError(f"{parent_path} was already fine-tuned on {round_dir}; build a new round")
    regression = str(regression_set) if regression_set else parent.regression_set
    if not regression:
        raise ConfigError(f"{parent_path} was validated on a hold-out of its training data, so its "
                          "lineage names no regression set: give the gate's original-domain set with "
                          "--regression-set DIR")
    _need_dirs("the regression set", [regression], "give it with --regression-set DIR")

    rounds = list(parent.rounds) + [str(round_dir)]
    data, shares = round_data(base_dirs, rounds, recipe.new_share)
    if len(data) == len(base_dirs):
        raise DataError(f"{round_dir} has no training frames (all went to its val split?); rebuild it "
                        "with a smaller --val-fraction")
    target: Union[str, List[str]] = [str(t) for t in target_sets] or \
        gate_target_set(rounds, round_dir, recipe.target_all_rounds)
    target_list = [target] if isinstance(target, str) else list(target)
    biased = not target_sets and target_list == [str(round_dir)]
    protected = [str(p) for p in protect_sets] or \
        (round_val_dirs(parent.rounds) if recipe.protect_rounds else [])
    anchor = parent.anchor or str(parent_path)

    record: Dict[str, Any] = {
        "parent": str(Path(parent_path).resolve()), "parent_sha256": file_sha256(parent_path),
        "anchor": str(Path(anchor).resolve()), "base": [str(Path(b).resolve()) for b in base_dirs],
        "rounds": [str(Path(r).resolve()) for r in rounds],
        "regression_set": str(Path(regression).resolve()),
        "target_set": target_list, "protect_sets": protected,
        "data": [str(d) for d in data], "data_shares": shares, "seed": seed,
        "recipe": asdict(recipe), "overrides": recipe.overrides(),
        "inherited_loss": parent.loss,
    }
    if biased:
        record["note"] = "this round has no val split; the target set is its own training data (biased)"
        say("warning: " + record["note"])
    out = Path(out)
    cfg = finetune_train_config(
        recipe, data, shares, val=target_list + [regression], out=out, init_from=parent_path, seed=seed,
        device=device, workers=workers, threads=threads, progress=progress,
        training_round=parent.training_round + 1, extra_lineage={LINEAGE_KEY: record}, **parent.loss)
    say(f"fine-tuning {parent_path} on {len(data)} set(s) "
        + (f"(new-frame share {recipe.new_share:.2f}) " if shares else "")
        + (f"for {recipe.minutes} min" if recipe.minutes
           else f"for {cfg.epochs} epoch(s) ~{recipe.steps} steps")
        + f", lr {recipe.lr:g}, BatchNorm {'frozen' if recipe.freeze_bn else 'training'}")
    result = train(cfg)
    candidate = result.last_checkpoint  # a fixed step budget: the last weights, not a val-picked epoch
    record["train"] = {"steps": result.steps, "epochs": result.epochs_completed,
                       "elapsed_s": result.elapsed_s, "last_metrics": result.last_metrics}
    if recipe.merge == "wise":
        from edgedepth.train.merge import wise_merge

        merged = wise_merge(parent_path, candidate, merge_set or regression, out / "merged.pt",
                            tolerance=recipe.tolerance, margin=recipe.merge_margin,
                            anchors=[anchor] if Path(anchor).is_file() else [], protect=protected,
                            protect_tolerance=recipe.protect_tolerance)
        candidate = merged.checkpoint
        record["merge"] = {"alpha": merged.alpha, "set": str(merge_set or regression),
                           "limit_abs_rel": merged.limit_abs_rel}
        say(f"WiSE-FT merge: alpha {merged.alpha:.2f} -> {candidate}")
    g = gate(candidate, parent_path, regression, target, tolerance=recipe.tolerance,
             min_gain=recipe.min_gain, evaluator=default_evaluator(batch_size=32),
             protect_sets=protected, protect_tolerance=recipe.protect_tolerance)
    record["candidate"] = str(candidate)
    record["gate"] = g.to_dict()
    from edgedepth.fsutil import write_bytes_atomic

    write_bytes_atomic(out / ROUND_JSON, (json.dumps(record, indent=1, default=str) + "\n").encode())
    return RoundTrainResult(out, Path(candidate), g.passed, g, record)
