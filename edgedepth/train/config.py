"""What a training run is asked to do (`TrainConfig`) and what it produced (`RunResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from edgedepth.errors import ConfigError
from edgedepth.sizes import parse_network_size

RUN_FILES = ("last.pt", "best.pt", "run.json")  # what a training run leaves in its --out folder


def existing_run(out: Union[str, Path]) -> Optional[Path]:
    """The first file of an earlier run in `out`, or None when `out` holds no run."""
    for name in RUN_FILES:
        if (Path(out) / name).is_file():
            return Path(out) / name
    return None


def split_dirs(value: Union[None, str, List[str]]) -> List[str]:
    """'a,b' or ['a', 'b,c'] -> ['a', 'b', 'c']."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out: List[str] = []
    for item in items:
        out.extend(p.strip() for p in str(item).split(",") if p.strip())
    return out


FREEZE_CHOICES = ("none", "encoder", "stem")  # see edgedepth.train.regularize.freeze_parameters


@dataclass
class TrainConfig:
    """One training run. Exactly one of `epochs` / `minutes` (wall-clock budget for the whole call)."""

    data: List[str]
    out: str
    val: List[str] = field(default_factory=list)
    model: str = "small"
    size: Tuple[int, int] = (96, 128)
    epochs: Optional[int] = None
    minutes: Optional[float] = None
    init_from: Optional[str] = None
    resume: bool = False
    seed: int = 0
    batch_size: int = 16
    lr: float = 4e-3
    weight_decay: float = 1e-4
    warmup: float = 0.03  # fraction of the schedule spent warming up linearly
    final_lr_fraction: float = 0.02  # cosine decays to lr * this
    grad_weight: float = 0.5
    loss_mode: str = "nll"  # nll | decoupled (see edgedepth.train.losses.DepthLoss)
    # per-frame uncertainty term (edgedepth.train.losses.frame_uncertainty_nll): fits each frame's mean
    # predicted uncertainty to its error, which is what hard-frame selection ranks by. It shares the network
    # with the depth, so a larger weight ranks frames better and costs some depth accuracy; 5 keeps the
    # depth within its targets (scripts/bench_train.py measures both)
    frame_weight: float = 5.0
    workers: int = 2  # decoding threads while loading datasets into memory
    threads: Optional[int] = None  # torch intra-op threads per process (default: cores / processes)
    min_depth: float = 0.1
    max_depth: float = 40.0
    val_fraction: float = 0.05  # held out of the training data when no --val is given
    limit: Optional[int] = None  # at most this many frames per dataset directory
    augment: bool = True
    zoom: float = 0.0  # metric-consistent zoom augmentation up to 1 + zoom (edgedepth.train.augment; 0 = off)
    channels_last: bool = True  # NHWC memory format on CPU: ~1.5x faster depthwise-conv steps (2-core CPU)
    freeze_bn: bool = False  # BatchNorm in eval mode (running stats frozen): fine-tuning on a few new frames
    l2sp: float = 0.0  # L2-SP: (l2sp/2) * ||theta - theta_init||^2 (edgedepth.train.regularize); needs init
    freeze: str = "none"  # none | encoder | stem: parameters not trained (edgedepth.train.regularize)
    # exponential moving average of the weights (0 = off): validation and checkpoints use the average
    ema_decay: float = 0.0
    # share of every batch drawn from each --data directory (one number per directory, normalised; empty:
    # every frame equally likely). Fine-tuning: the whole old training set at a high share keeps what the
    # model knew, a few new frames at e.g. 25% teach the new domain (edgedepth.train.regularize)
    data_shares: List[float] = field(default_factory=list)
    device: str = "auto"  # auto | cpu | cuda
    # metric: metres (NLL on log-depth); relative: scale-and-shift-invariant loss, for relative teacher
    # labels; the checkpoint then records depth_units "relative" (edgedepth.data.formats.dataset_depth_units)
    target: str = "metric"
    progress: bool = True
    name: str = "edgedepth"
    version: str = ""
    training_round: int = 0
    extra_lineage: Dict[str, Any] = field(default_factory=dict)
    tensorboard: Optional[str] = None  # folder for TensorBoard event files (edgedepth.train.tensorboard)

    def __post_init__(self) -> None:
        self.data = split_dirs(self.data)
        self.val = split_dirs(self.val)
        self.size = parse_network_size(self.size)
        self.data_shares = [float(v) for v in self.data_shares]

    def validate(self) -> "TrainConfig":
        if not self.data:
            raise ConfigError("no training data: pass --data DIR[,DIR...]")
        from edgedepth.data.dataset import resolve_spec  # torch-free

        for d in self.data + self.val:
            resolve_spec(d)  # folder, NYU .mat or KITTI, with or without a prefix; DataError if missing
        if (self.epochs is None) == (self.minutes is None):
            raise ConfigError("give exactly one of --epochs N or --minutes M")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"--minutes must be > 0, got {self.minutes}")
        if self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("--batch-size must be >= 1 and --lr > 0")
        if self.init_from and not Path(self.init_from).is_file():
            raise ConfigError(f"--init-from {self.init_from} does not exist")
        if self.resume and not (Path(self.out) / "last.pt").is_file():
            raise ConfigError(f"--resume needs {Path(self.out) / 'last.pt'}; run without --resume first")
        if self.loss_mode not in ("nll", "decoupled"):
            raise ConfigError(f"loss mode must be nll or decoupled, got {self.loss_mode!r}")
        if not self.frame_weight >= 0:
            raise ConfigError(f"--frame-weight must be >= 0 (0 = off), got {self.frame_weight}")
        if not self.l2sp >= 0:
            raise ConfigError(f"--l2sp must be >= 0, got {self.l2sp}")
        if self.l2sp > 0 and not (self.init_from or self.resume):
            raise ConfigError("--l2sp pulls towards the initial weights: give --init-from (or --resume)")
        if not 0.0 <= self.zoom <= 1.0:
            raise ConfigError(f"--zoom must be in [0, 1] (e.g. 0.25 = up to 1.25x; 0 = off), got {self.zoom}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema must be in [0, 1) (e.g. 0.99; 0 = off), got {self.ema_decay}")
        if self.freeze not in FREEZE_CHOICES:
            raise ConfigError(f"--freeze must be one of {', '.join(FREEZE_CHOICES)}, got {self.freeze!r}")
        if self.data_shares:
            if len(self.data_shares) != len(self.data):
                raise ConfigError(f"--data-shares needs one number per --data directory ({len(self.data)}), "
                                  f"got {len(self.data_shares)}")
            if any(not (v >= 0) for v in self.data_shares) or sum(self.data_shares) <= 0:
                raise ConfigError(f"--data-shares must be >= 0 and not all 0, got {self.data_shares}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.target not in ("metric", "relative"):
            raise ConfigError(f"--target must be metric or relative, got {self.target!r}")
        if self.target == "metric":
            from edgedepth.data.formats import dataset_depth_units

            rel = [d for d in self.data if dataset_depth_units(d) == "relative"]
            if rel:
                raise ConfigError(f"{rel[0]} holds relative labels (no metric scale): train with --target "
                                  "relative, or relabel it with metric points (sparse sensor depth, "
                                  "--camera-height, --two-view)")
        return self

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        return d


@dataclass
class RunResult:
    """What `train()` returns: where the checkpoints are and how the run went."""

    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_metrics: Dict[str, float]
    last_metrics: Dict[str, float]
    history: List[Dict[str, float]]
    epochs_completed: int
    steps: int
    elapsed_s: float
    stop_reason: str
    curves_png: Optional[Path] = None
    best_epoch: int = -1
