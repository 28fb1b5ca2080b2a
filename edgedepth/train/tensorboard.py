"""Training curves for TensorBoard (`edgedepth train --tensorboard DIR`), beside the curves.png.

One event file per run folder, written after every validation (global step = the epoch, as in the
history and the PNG):

    DIR/                    loss/train, loss/<part> (the loss terms), train/lr, val/<metric> (AbsRel,
                            RMSE, RMSE-log, d1, ...), uncertainty/spearman_frame (the ranking the selection
                            relies on: Spearman of per-frame uncertainty with per-frame AbsRel),
                            uncertainty/spearman_mean, uncertainty/spearman_scale, uncertainty/mean,
                            time/epoch_s
    DIR/domain_<name>/      val/<metric> and uncertainty/spearman_frame on that domain's validation frames
                            (when the validation set has more than one domain)

The per-domain folders are TensorBoard runs, so each chart (val/abs_rel, ...) shows one line per domain
over the overall one. `tensorboard --logdir DIR` shows them. Needs the `tensorboard` package (train extra).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from edgedepth.errors import require
from edgedepth.metrics import mean_metrics, spearman

log = logging.getLogger(__name__)

DOMAIN_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "d1", "d2", "d3")
_SPEARMAN = {"frame_spearman": "spearman_frame", "unc_spearman": "spearman_mean",
             "scale_spearman": "spearman_scale", "mean_uncertainty": "mean"}
_writers: Dict[str, Dict[str, object]] = {}


def domain_breakdown(rows: Sequence[Optional[Dict[str, float]]], domains: Sequence[str],
                     frame_uncertainty: Sequence[float]) -> Dict[str, float]:
    """Flat `{metric@domain: value}` (DOMAIN_METRICS and frame_spearman) per validation domain; empty when
    the frames come from one domain only (the overall figures say it all then)."""
    names = sorted({str(d or "unknown") for d in domains})
    if len(names) < 2:
        return {}
    out: Dict[str, float] = {}
    for name in names:
        idx = [i for i, d in enumerate(domains) if str(d or "unknown") == name and rows[i] is not None]
        if not idx:
            continue
        means = mean_metrics(rows[i] for i in idx)
        out.update({f"{m}@{name}": float(means[m]) for m in DOMAIN_METRICS if m in means})
        out[f"frame_spearman@{name}"] = spearman([frame_uncertainty[i] for i in idx],
                                                 [rows[i]["abs_rel"] for i in idx]) if len(idx) > 2 \
            else float("nan")
    return out


def scalars_of(row: Mapping[str, object]) -> Dict[str, Dict[str, float]]:
    """{run ('' = overall, 'domain_<name>'): {tag: value}} from one history row of the training loop."""
    runs: Dict[str, Dict[str, float]] = {"": {}}
    for key, value in row.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or key in ("epoch", "step"):
            continue
        value = float(value)
        if key == "train_loss":
            runs[""]["loss/train"] = value
        elif key.startswith("train_"):
            runs[""][f"loss/{key[6:]}"] = value
        elif key == "lr":
            runs[""]["train/lr"] = value
        elif key in ("epoch_s", "elapsed_s"):
            runs[""][f"time/{key}"] = value
        elif key.startswith("val_"):
            metric, _, domain = key[4:].partition("@")
            run = f"domain_{re.sub(r'[^A-Za-z0-9_.-]+', '_', domain)}" if domain else ""
            tag = f"uncertainty/{_SPEARMAN[metric]}" if metric in _SPEARMAN else f"val/{metric}"
            if metric == "frames":
                continue
            runs.setdefault(run, {})[tag] = value
    return runs


def log_epoch(log_dir, row: Mapping[str, object]) -> None:
    """Append one history row (one epoch) to the event files under `log_dir` and flush them."""
    require("tensorboard", extra="train")
    from torch.utils.tensorboard import SummaryWriter

    root = str(Path(log_dir))
    writers = _writers.setdefault(root, {})
    step = int(row.get("epoch", 0))
    for run, scalars in scalars_of(row).items():
        if not scalars:
            continue
        writer = writers.get(run)
        if writer is None:
            writer = writers[run] = SummaryWriter(log_dir=str(Path(root) / run) if run else root)
        for tag, value in sorted(scalars.items()):
            if np.isfinite(value):
                writer.add_scalar(tag, value, global_step=step)
        writer.flush()


def close(log_dir) -> None:
    """Close the writers of `log_dir` (the event files stay readable while they are open, too)."""
    for writer in _writers.pop(str(Path(log_dir)), {}).values():
        writer.close()
