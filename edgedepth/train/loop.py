"""The training loop: `train(TrainConfig) -> RunResult`, used by `edgedepth train`, rounds and simulation.

One process or many (torchrun + DistributedDataParallel, rank 0 validates, logs and checkpoints).
Schedule: AdamW, linear warm-up then cosine decay, driven by a progress fraction that is
step / total_steps with --epochs (bit-reproducible on CPU for a seed) or elapsed / budget with
--minutes (the wall-clock budget covers the whole call: loading, training, validation, saving).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from edgedepth import __version__
from edgedepth.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from edgedepth.errors import ConfigError, DataError
from edgedepth.metrics import frame_metrics, frame_uncertainty, mean_metrics, spearman
from edgedepth.models import build_model
from edgedepth.models.catalog import model_config
from edgedepth.preprocess import Preprocessing
from edgedepth.train.augment import Augment, normalise, to_unit_float
from edgedepth.train.config import RunResult, TrainConfig
from edgedepth.train.distributed import DistInfo, broadcast_float, init_distributed, mean_across, shutdown
from edgedepth.train.losses import DepthLoss, ScaleShiftInvariantLoss, align_inverse_depth
from edgedepth.train.regularize import L2SP, frame_weights, freeze_parameters
from edgedepth.train.torchdata import Frames, batch_tensors, dataset_lineage, load_many

log = logging.getLogger(__name__)


class CosineSchedule:
    """lr(progress): linear warm-up to `base_lr`, then cosine down to base_lr * final_fraction."""

    def __init__(self, base_lr: float, warmup: float = 0.03, final_fraction: float = 0.02) -> None:
        self.base_lr, self.warmup, self.final_fraction = base_lr, warmup, final_fraction
        self.progress = 0.0

    def lr_at(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        if self.warmup > 0 and p < self.warmup:
            return self.base_lr * max(p / self.warmup, 0.01)
        q = (p - self.warmup) / max(1e-9, 1.0 - self.warmup)
        floor = self.base_lr * self.final_fraction
        return floor + 0.5 * (self.base_lr - floor) * (1.0 + math.cos(math.pi * q))

    def apply(self, optimizer, progress: float) -> float:
        self.progress = progress
        lr = self.lr_at(progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> Dict[str, float]:
        return {"base_lr": self.base_lr, "warmup": self.warmup, "final_fraction": self.final_fraction,
                "progress": self.progress, "kind": "warmup-cosine"}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.base_lr = float(state["base_lr"])
        self.warmup = float(state["warmup"])
        self.final_fraction = float(state["final_fraction"])
        self.progress = float(state.get("progress", 0.0))


def git_commit() -> Optional[str]:
    """The commit of the edgedepth source tree, if it is a git checkout (None otherwise)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@torch.no_grad()
def predict_frames(model, frames: Frames, pre: Preprocessing, device: torch.device, batch_size: int = 32
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """(depth (N,H,W), uncertainty (N,H,W)) of in-memory frames at the model's size."""
    model.eval()
    depths, uncs = [], []
    for start in range(0, len(frames), batch_size):
        idx = np.arange(start, min(start + batch_size, len(frames)))
        rgb, _ = batch_tensors(frames, idx, device)
        x = normalise(to_unit_float(rgb), pre.mean, pre.std)
        d, u = model(x)
        depths.append(d[:, 0].float().cpu().numpy())
        uncs.append(u[:, 0].float().cpu().numpy())
    return np.concatenate(depths), np.concatenate(uncs)


def validate(model, frames: Frames, pre: Preprocessing, device: torch.device, batch_size: int = 32,
             relative: bool = False) -> Dict[str, float]:
    """Mean per-frame metrics at model resolution + Spearman(per-frame mean uncertainty, AbsRel).

    `relative`: a relative model is scored after aligning each frame's inverse depth to the label's
    (least-squares scale and shift), the scale-and-shift-invariant convention."""
    depth, unc = predict_frames(model, frames, pre, device, batch_size)
    if relative:
        gt = torch.from_numpy(frames.depth[:, None])
        valid = (gt > 0) & torch.isfinite(gt)
        inv = align_inverse_depth(torch.from_numpy(depth[:, None]), gt, valid)[:, 0].numpy()
        depth = np.where(inv > 1e-6, 1.0 / np.maximum(inv, 1e-6), 0.0).astype(np.float32)
        rows = [frame_metrics(depth[i], frames.depth[i], None) for i in range(len(frames))]
    else:
        rows = [frame_metrics(depth[i], frames.depth[i], None, pre.min_depth, pre.max_depth)
                for i in range(len(frames))]
    out = mean_metrics(rows)
    kept = [i for i, r in enumerate(rows) if r is not None]
    out["unc_spearman"] = spearman([float(unc[i].mean()) for i in kept], [rows[i]["abs_rel"] for i in kept])
    out["scale_spearman"] = spearman([float(np.exp(unc[i]).mean()) for i in kept],
                                     [rows[i]["abs_rel"] for i in kept])
    out["frame_spearman"] = spearman([frame_uncertainty(unc[i]) for i in kept],
                                     [rows[i]["abs_rel"] for i in kept])
    out["mean_uncertainty"] = float(unc.mean())
    from edgedepth.train.tensorboard import domain_breakdown  # metric@domain, for the curves

    out.update(domain_breakdown(rows, frames.domains, [frame_uncertainty(u) for u in unc]))
    return out


def _split_holdout(frames: Frames, fraction: float, seed: int) -> Tuple[Frames, Frames]:
    n = len(frames)
    if n < 2:
        raise DataError("need at least 2 training frames to hold some out for validation; pass --val DIR")
    n_val = min(n - 1, max(1, int(round(n * fraction))))
    perm = np.random.default_rng(seed).permutation(n)
    return frames.subset(np.sort(perm[n_val:])), frames.subset(np.sort(perm[:n_val]))


def _resolve_device(cfg: TrainConfig) -> bool:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    return cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())


def train(config: TrainConfig, clock: Callable[[], float] = time.monotonic) -> RunResult:
    """Train (or fine-tune / resume) a depth network; writes best.pt, last.pt, curves.png, run.json.

    `clock` measures the --minutes budget (seconds, monotonic); tests pass a simulated one.
    """
    cfg = config.validate()
    t_start = clock()
    use_cuda = _resolve_device(cfg)
    info = init_distributed(use_cuda)
    try:
        result = _train(cfg, info, use_cuda, t_start, clock)
    except BaseException:
        if info.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        raise
    shutdown(info)
    return result


def _initial_state(cfg: TrainConfig) -> Tuple[Dict[str, Any], Preprocessing, Optional[Dict[str, Any]],
                                               Optional[Dict[str, Any]]]:
    """(model config, preprocessing, checkpoint to resume from, checkpoint to initialise from)."""
    resume = load_checkpoint(Path(cfg.out) / "last.pt") if cfg.resume else None
    init = load_checkpoint(cfg.init_from) if cfg.init_from and resume is None else None
    source = resume or init
    if source is not None:
        return dict(source["model_config"]), Preprocessing.from_dict(source["preprocessing"]), resume, init
    mcfg = model_config(cfg.model, cfg.min_depth, cfg.max_depth)
    pre = Preprocessing(cfg.size[0], cfg.size[1], min_depth=cfg.min_depth, max_depth=cfg.max_depth)
    return mcfg, pre, None, None


def _train(cfg: TrainConfig, info: DistInfo, use_cuda: bool, t_start: float, clock: Callable[[], float]
           ) -> RunResult:
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler
    from tqdm import tqdm

    device = torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu")
    if not use_cuda:
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // info.world_size))
    out_dir = Path(cfg.out)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    mcfg, pre, resume, init = _initial_state(cfg)
    if init is not None and tuple(cfg.size) != pre.size:
        log.info("--init-from keeps the checkpoint's input size %dx%d", pre.height, pre.width)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2 ** 32))
    model = build_model(mcfg)
    if resume is not None:  # with EMA on, "state_dict" is the average and the trained weights are apart
        model.load_state_dict(resume.get("train_state_dict") or resume["state_dict"])
    elif init is not None:
        model.load_state_dict(init["state_dict"])
    model.to(device)
    memory_format = torch.channels_last if cfg.channels_last and not use_cuda else torch.contiguous_format
    model.to(memory_format=memory_format)
    ema = _ema_model(model, cfg.ema_decay, resume)
    scored = ema.module if ema is not None else model  # what validation scores and checkpoints hold

    train_frames = load_many(cfg.data, pre.height, pre.width, cfg.workers, cfg.limit)
    if cfg.val:
        val_frames = load_many(cfg.val, pre.height, pre.width, cfg.workers, cfg.limit)
    else:
        train_frames, val_frames = _split_holdout(train_frames, cfg.val_fraction, cfg.seed)
    lineage: Dict[str, Any] = {}
    if info.is_main:
        lineage = {"train": [dataset_lineage(d) for d in cfg.data],
                   "val": [dataset_lineage(d) for d in cfg.val],
                   "val_holdout_fraction": None if cfg.val else cfg.val_fraction,
                   "train_frames": len(train_frames), "val_frames": len(val_frames), **cfg.extra_lineage}
        if cfg.init_from:
            lineage["init_from"] = {"path": str(Path(cfg.init_from).resolve()),
                                    "sha256": file_sha256(cfg.init_from)}
        if resume is not None:
            lineage = {**resume.get("lineage", {}), **lineage}

    freeze_parameters(model, cfg.freeze)  # before DDP, which registers the parameters that need grads
    # anchored at the weights training starts from (--init-from; with --resume, the resumed weights)
    l2sp = L2SP(model, cfg.l2sp) if cfg.l2sp > 0 else None
    net = DistributedDataParallel(model, device_ids=[info.local_rank] if use_cuda else None) \
        if info.enabled else model
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim > 1]
    no_decay = [p for p in trainable if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    schedule = CosineSchedule(cfg.lr, cfg.warmup, cfg.final_lr_fraction)
    relative = cfg.target == "relative"
    loss_fn = ScaleShiftInvariantLoss(grad_weight=cfg.grad_weight) if relative else \
        DepthLoss(grad_weight=cfg.grad_weight, mode=cfg.loss_mode, frame_weight=cfg.frame_weight)
    augment = Augment(zoom=cfg.zoom) if cfg.augment else None

    sampler = DistributedSampler(range(len(train_frames)), num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=cfg.seed, drop_last=False)
    weights = frame_weights(train_frames.sources, cfg.data, cfg.data_shares)
    per_rank = len(sampler)
    bs = min(cfg.batch_size, per_rank)
    steps_per_epoch = max(1, per_rank // bs)
    total_steps = steps_per_epoch * cfg.epochs if cfg.epochs else None
    budget_s = cfg.minutes * 60.0 if cfg.minutes else None

    start_epoch, step, history, elapsed_before = 0, 0, [], 0.0
    best_abs_rel, best_epoch = float("inf"), -1
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["scheduler"])
        state = resume.get("train_state", {})
        start_epoch, step = int(resume["epoch"]) + 1, int(state.get("step", 0))
        history = list(resume.get("history", []))
        elapsed_before = float(state.get("elapsed_s", 0.0))
        best_abs_rel = float(state.get("best_abs_rel", float("inf")))
        best_epoch = int(state.get("best_epoch", -1))

    reserve_s = 3.0 + (0.02 * budget_s if budget_s else 0.0)  # final validation + save, refined below

    def progress_now() -> float:
        if total_steps:
            return step / total_steps
        elapsed = elapsed_before + clock() - t_start
        return broadcast_float(info, elapsed / max(1e-6, budget_s - reserve_s), device)

    def save(name: str, metrics: Dict[str, float], epoch: int) -> Path:
        extra = {}
        if ema is not None:
            extra = {"train_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                     "ema": {"decay": cfg.ema_decay, "updates": int(ema.n_averaged)}}
        return save_checkpoint(
            out_dir / name, scored, mcfg, pre, metrics=metrics, lineage=lineage, seed=cfg.seed, epoch=epoch,
            **extra,
            optimizer=optimizer.state_dict(), scheduler=schedule.state_dict(), history=history,
            train_config=cfg.to_dict(), git_commit=git_commit(), name=cfg.name,
            depth_units="relative" if relative else "metres",
            version=cfg.version or f"{__version__}+e{epoch}", training_round=cfg.training_round,
            train_state={"step": step, "elapsed_s": elapsed_before + clock() - t_start,
                         "best_abs_rel": best_abs_rel, "best_epoch": best_epoch,
                         "world_size": info.world_size})

    stop_reason = "epochs" if cfg.epochs else "budget"
    last_metrics: Dict[str, float] = dict(resume.get("metrics", {})) if resume else {}
    epoch = start_epoch - 1
    last_epoch_cap = cfg.epochs if cfg.epochs else 10 ** 9
    if cfg.epochs and start_epoch >= cfg.epochs:
        stop_reason = "already complete"
    elif budget_s and progress_now() >= 1.0:
        stop_reason = "budget spent before training started"
    else:
        for epoch in range(start_epoch, last_epoch_cap):
            t_epoch = clock()
            net.train()
            if cfg.freeze_bn:  # keep the running statistics the model was trained with
                for m in net.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()
            sampler.set_epoch(epoch)
            order = np.fromiter(iter(sampler), dtype=np.int64)
            if weights is not None:  # fixed shares per data directory: draw with replacement, then shard
                draw = np.random.default_rng([cfg.seed, epoch, 17]).choice(
                    len(train_frames), size=len(order) * info.world_size, p=weights)
                order = draw[info.rank::info.world_size]
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + info.rank)
            sums: Dict[str, float] = {}
            n_steps, out_of_time = 0, False
            desc = f"epoch {epoch + 1}" + (f"/{cfg.epochs}" if cfg.epochs else "")
            bar = tqdm(total=steps_per_epoch, disable=not (cfg.progress and info.is_main), leave=False,
                       desc=desc, dynamic_ncols=True)
            for i in range(steps_per_epoch):
                progress = progress_now()
                if budget_s and progress >= 1.0:
                    out_of_time = True
                    break
                lr = schedule.apply(optimizer, progress)
                rgb, depth = batch_tensors(train_frames, order[i * bs:(i + 1) * bs], device)
                x = to_unit_float(rgb)
                if augment is not None:
                    x, depth = augment(x, depth, gen)
                x = normalise(x, pre.mean, pre.std).contiguous(memory_format=memory_format)
                valid = (depth > 0) & torch.isfinite(depth) if relative else \
                    (depth >= pre.min_depth) & (depth <= pre.max_depth)
                pred, unc = net(x)
                loss, parts = loss_fn(pred, unc, depth, valid)
                if l2sp is not None:
                    penalty = l2sp()
                    loss = loss + penalty
                    parts["l2sp"] = float(penalty.detach())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 5.0)
                optimizer.step()
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                n_steps += 1
                parts["loss"] = float(loss.detach())
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                post = {"loss": f"{sums['loss'] / n_steps:.4f}", "lr": f"{lr:.2e}"}
                if budget_s:
                    left = budget_s - (elapsed_before + clock() - t_start)
                    post["budget_left"] = f"{int(left // 60)}:{int(left % 60):02d}"
                bar.set_postfix(post)
                bar.update(1)
            bar.close()
            if n_steps == 0:
                break
            train_stats = {f"train_{k}": mean_across(info, v / n_steps, device) for k, v in sums.items()}
            if info.is_main:
                t_val = clock()
                last_metrics = validate(scored, val_frames, pre, device, max(bs, 16), relative)
                row = {"epoch": epoch, "step": step, "lr": lr, **train_stats,
                       **{f"val_{k}": v for k, v in last_metrics.items()},
                       "epoch_s": clock() - t_epoch, "partial": out_of_time,
                       "elapsed_s": elapsed_before + clock() - t_start}
                history.append(row)
                if last_metrics["abs_rel"] < best_abs_rel:
                    best_abs_rel, best_epoch = last_metrics["abs_rel"], epoch
                    save("best.pt", last_metrics, epoch)
                save("last.pt", last_metrics, epoch)
                _write_curves(out_dir, history)
                if cfg.tensorboard:
                    _write_tensorboard(cfg.tensorboard, row)
                reserve_s = 1.5 * (clock() - t_val) + 1.0
                if cfg.progress:
                    tqdm.write(f"epoch {epoch + 1}: loss {row.get('train_loss', float('nan')):.4f}  "
                               f"val AbsRel {last_metrics['abs_rel']:.4f}  d1 {last_metrics['d1']:.4f}  "
                               f"RMSE {last_metrics['rmse']:.3f}  unc-Spearman "
                               f"{last_metrics['frame_spearman']:.3f}  ({row['epoch_s']:.0f}s)")
            reserve_s = broadcast_float(info, reserve_s, device)
            if out_of_time or (budget_s and progress_now() >= 1.0):
                break

    if cfg.tensorboard and info.is_main:
        from edgedepth.train.tensorboard import close as close_tensorboard

        close_tensorboard(cfg.tensorboard)
    elapsed = elapsed_before + clock() - t_start
    result = RunResult(out_dir=out_dir, best_checkpoint=out_dir / "best.pt",
                       last_checkpoint=out_dir / "last.pt",
                       best_metrics={}, last_metrics=last_metrics, history=history,
                       epochs_completed=epoch + 1, steps=step, elapsed_s=elapsed, stop_reason=stop_reason,
                       curves_png=out_dir / "curves.png", best_epoch=best_epoch)
    if info.is_main:
        best = history[[h["epoch"] for h in history].index(best_epoch)] if best_epoch in \
            [h["epoch"] for h in history] else {}
        result.best_metrics = {k[4:]: v for k, v in best.items() if k.startswith("val_")}
        summary = {"best_epoch": best_epoch, "best_metrics": result.best_metrics,
                   "last_metrics": last_metrics,
                   "epochs_completed": epoch + 1, "steps": step, "elapsed_s": elapsed,
                   "stop_reason": stop_reason, "world_size": info.world_size, "device": str(device),
                   "train_frames": len(train_frames), "val_frames": len(val_frames), "config": cfg.to_dict()}
        (out_dir / "run.json").write_text(json.dumps(summary, indent=2, default=str))
    return result


def _ema_model(model, decay: float, resume: Optional[Dict[str, Any]]):
    """torch's AveragedModel with an EMA of parameters and buffers, or None when decay is 0. A resumed
    run continues the average it saved (as the checkpoint's state_dict)."""
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if resume is not None and resume.get("train_state_dict"):
        ema.module.load_state_dict(resume["state_dict"])
        ema.n_averaged.fill_(max(1, int(resume.get("ema", {}).get("updates", 1))))
    return ema


def _write_tensorboard(log_dir: str, row: Dict[str, float]) -> None:
    from edgedepth.errors import MissingDependencyError
    from edgedepth.train.tensorboard import log_epoch

    try:
        log_epoch(log_dir, row)
    except (ImportError, OSError, ValueError, MissingDependencyError) as exc:  # curves never stop training
        log.warning("could not write TensorBoard events to %s: %s", log_dir, exc)


def _write_curves(out_dir: Path, history: List[Dict[str, float]]) -> None:
    from edgedepth.train.plots import plot_history

    try:
        plot_history(history, out_dir / "curves.png")
    except (ImportError, OSError, ValueError) as exc:  # a plot must never stop training
        log.warning("could not draw training curves: %s", exc)
