"""What a fleet simulation (and the demo, a one-strategy simulation) is asked to do."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Tuple

from edgedepth.errors import ConfigError
from edgedepth.rounds.finetune import MERGES
from edgedepth.rounds.finetune import FinetuneRecipe as _RECIPE  # the fine-tune defaults live there

STRATEGIES = ("hard", "random", "duplicate")
LABEL_SOURCES = ("ground-truth", "teacher")
DEFAULT_MIX = {"indoor": 0.8, "night": 0.2 / 3, "fog": 0.2 / 3, "outdoor": 0.2 / 3}


@dataclass
class SimConfig:
    """The fleet, the data shift, the budgets. The round-0 model is trained once and shared."""

    workdir: str = "edgedepth-sim"
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    strategies: List[str] = field(default_factory=lambda: list(STRATEGIES))
    rounds: int = 2
    # the fleet
    devices: int = 4
    # frames each device processes per round (83 s of 30 fps video; a real device sees far more between
    # rounds), at the same upload budget: longer streams give the selector more to choose from and the
    # result a smaller spread over seeds
    frames_per_device: int = 2500
    budget_per_device: int = 20  # uploads per device per round, the same for every strategy
    mix: Dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    original_domain: str = "indoor"
    scene_length: int = 15  # frames per scene of a device's video (= a segment: more distinct scenes)
    segment_length: int = 15  # frames per domain segment of a device's video
    # models and data
    model: str = "tiny"
    size: Tuple[int, int] = (64, 96)
    base_frames: int = 600  # round-0 training frames (original domain only)
    base_epochs: int = 25
    eval_frames: int = 64  # per domain, unseen scene seeds, fixed across strategies and seeds
    gate_frames: int = 48  # original-domain regression set of the gate (not the evaluation set)
    # each round
    # fixed optimiser-step budget per round, the same for every strategy, so no strategy wins by training
    # longer
    finetune_steps: int = _RECIPE.steps
    finetune_lr: float = _RECIPE.lr
    batch_size: int = _RECIPE.batch_size
    replay_fraction: float = 3.0  # replay frames per new training frame, drawn from every earlier round
    # (only when new_share == 0: with a new-frame share every round trains on all of rounds/0 instead)
    train_on_all_rounds: bool = False  # True: --data rounds/0,...,rounds/N; False: rounds 1..N (+ replay)
    val_fraction: float = 0.25
    time_block_s: float = 4.0  # of video time; frames of one device within a block stay on one side
    gate_tolerance: float = _RECIPE.tolerance
    gate_min_gain: float = _RECIPE.min_gain
    # the gate's target set: the val splits of every round so far (a hard-case suite that grows), not
    # only this round's handful of frames, on which one frame can swing AbsRel or d1 by several per cent
    # and refuse a candidate that improved the shifted domains
    target_all_rounds: bool = _RECIPE.target_all_rounds
    # the val split of every earlier round is also a protected set, checked on its own by the merge and
    # the gate at protect_tolerance (edgedepth.gate PROTECTED): a round may not undo an earlier round.
    # Off by default: an earlier round's val split holds a few frames, too few to catch what a later
    # round breaks
    protect_rounds: bool = _RECIPE.protect_rounds
    protect_tolerance: float = _RECIPE.protect_tolerance
    health_frames: int = 10
    reference_frames: int = 600  # training-frame embeddings shipped in every bundle (epistemic novelty)
    freeze_bn: bool = _RECIPE.freeze_bn  # fine-tune with BatchNorm running statistics frozen
    # learning without forgetting (scripts/finetune_study.py compares the choices):
    # new_share > 0: train on every round (rounds/0 = the whole original training set, no per-round replay
    # sample) with this share of every batch drawn from the new rounds' frames (TrainConfig.data_shares)
    new_share: float = _RECIPE.new_share
    # wise: WiSE-FT the fine-tune back towards the deployed model as far as an original-domain held-out
    # set requires (edgedepth.train.merge), a safety net before the gate, which then decides as before
    merge: str = _RECIPE.merge  # none | wise
    merge_frames: int = 192  # original-domain frames that choose the merge weight (0: use the gate set)
    merge_margin: float = _RECIPE.merge_margin  # the merge may spend this fraction of the gate tolerance
    finetune_ema: float = _RECIPE.ema_decay  # EMA of the fine-tune's weights (TrainConfig.ema_decay; 0 = off)
    finetune_l2sp: float = _RECIPE.l2sp  # L2-SP weight towards the deployed model (train.regularize)
    finetune_freeze: str = _RECIPE.freeze  # none | encoder | stem
    rate_factor: float = 1.5  # keep rate = this x budget/frames, so every strategy spends its (capped) budget
    # hard: relax the selection threshold while the upload budget goes unspent (SelectionConfig.spend_budget).
    # Off: the extra frames it adds are the less novel ones, and they dilute the round's fixed batch share
    # of new frames
    spend_budget: bool = False
    # hard: the novelty factor's cap (SelectionConfig.novelty_cap), 3 as on devices, so the simulation
    # measures the selector the devices run; caps of 2 and 3 are within the run-to-run spread
    novelty_cap: float = 3.0
    # hard: frames this far from the training data (reference units; night reads ~18, fog ~3) are sampled
    # at the random rate instead of ranked by an uncertainty that means nothing there (SelectionConfig
    # .trust_novelty; `edgedepth run --select-trust-novelty`): a fine-tune on night frames picked by a
    # meaningless uncertainty teaches the model that a dark picture is far away
    trust_novelty: Optional[float] = 6.0
    min_spacing_frames: int = 8  # every strategy: at most ~2 uploads per 15-frame scene
    prime_frames: int = 600  # hard: the selector first scores this many of the model's training frames
    # labels of the uploaded frames: "ground-truth" (the synthetic depth uploaded with each frame) or
    # "teacher" (the uploaded depth is ignored and `teacher`, any edgedepth.teachers spec, labels every
    # frame in round build, as for a fleet of cameras without depth)
    label_source: str = "ground-truth"
    teacher: Optional[str] = None
    # machinery
    threads: int = 1  # torch threads: on a small shared CPU one thread beats two (no spin-waiting)
    daemon: str = "inprocess"  # inprocess | subprocess (`edgedepth upload --once`)
    calibrate: bool = False  # INT8 (cpu target) for every published bundle
    progress: bool = True
    quick: bool = False

    def __post_init__(self) -> None:
        self.size = tuple(int(v) for v in self.size)  # type: ignore[assignment]

    def validate(self) -> "SimConfig":
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise ConfigError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
        if not self.seeds:
            raise ConfigError("give at least one seed")
        if self.rounds < 1 or self.devices < 1 or self.frames_per_device < 4:
            raise ConfigError("need rounds >= 1, devices >= 1 and frames per device >= 4")
        if not 1 <= self.budget_per_device <= self.frames_per_device:
            raise ConfigError(f"budget per device must be in 1..frames per device "
                              f"({self.frames_per_device}), got {self.budget_per_device}")
        if self.original_domain not in self.mix:
            raise ConfigError(f"the original domain {self.original_domain!r} must be part of the fleet mix")
        if not self.shifted_domains:
            raise ConfigError("the fleet mix needs at least one domain besides the original one")
        if self.size[0] % 32 or self.size[1] % 32:
            raise ConfigError(f"size {self.size} must be multiples of 32")
        if self.daemon not in ("inprocess", "subprocess"):
            raise ConfigError("daemon must be 'inprocess' or 'subprocess'")
        if not 0.0 <= self.new_share < 1.0:
            raise ConfigError(f"new_share must be in [0, 1), got {self.new_share}")
        if self.merge not in MERGES:
            raise ConfigError(f"merge must be one of {', '.join(MERGES)}, got {self.merge!r}")
        if self.merge_frames < 0 or not 0 < self.merge_margin <= 10:
            raise ConfigError("merge frames must be >= 0 and the merge margin in (0, 10]")
        if self.finetune_steps < 1 or self.base_epochs < 1:
            raise ConfigError("finetune steps and base epochs must be >= 1")
        if self.label_source not in LABEL_SOURCES:
            raise ConfigError(f"label source must be one of {', '.join(LABEL_SOURCES)}, "
                              f"got {self.label_source!r}")
        if self.label_source == "teacher" and not self.teacher:
            raise ConfigError("label source 'teacher' needs a teacher model (--teacher)")
        return self

    @property
    def shifted_domains(self) -> List[str]:
        return sorted(d for d, p in self.mix.items() if d != self.original_domain and p > 0)

    @property
    def rate(self) -> float:
        return self.budget_per_device / float(self.frames_per_device)

    def data_key(self) -> str:
        """Identity of the shared data sets (round-0 training, gate and evaluation sets)."""
        return self._key(("size", "base_frames", "eval_frames", "gate_frames", "mix", "original_domain"))

    def base_key(self) -> str:
        """Identity of the shared round-0 model (and its data): reused when it matches."""
        return self._key(("size", "base_frames", "eval_frames", "gate_frames", "mix", "original_domain",
                          "model", "base_epochs", "batch_size", "threads"))

    def _key(self, keys) -> str:
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        return d


def quick_config(**overrides) -> SimConfig:
    """A tiny end-to-end run (tests, --quick): every stage runs, the numbers mean nothing."""
    cfg = SimConfig(seeds=[0], rounds=1, devices=2, frames_per_device=40, budget_per_device=6,
                    scene_length=10, segment_length=5, model="tiny", size=(32, 64), base_frames=24,
                    base_epochs=1, eval_frames=6, gate_frames=6, finetune_steps=3, batch_size=8,
                    health_frames=3, threads=1, quick=True, prime_frames=16, reference_frames=16,
                    min_spacing_frames=1, merge_frames=6,
                    mix={"indoor": 0.5, "night": 0.25, "fog": 0.25})
    return replace(cfg, **overrides)
