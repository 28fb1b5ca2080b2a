"""Shared assets of a simulation: data sets, the round-0 model, signing keys (made once, then reused).

Data sets live in WORKDIR/shared/data-<key>/, the model and its bundle in WORKDIR/shared/model-<key>/,
where each <key> hashes the settings that shape it, so a second
run (another strategy set, more seeds, the demo again) reuses the round-0 model instead of retraining.
Evaluation sets use scene seeds no training or fleet stream uses.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

from edgedepth.sim.config import SimConfig

log = logging.getLogger(__name__)

TRAIN_SEED = 11  # round-0 training scenes
GATE_SEED = 7001  # gate regression scenes
EVAL_SEED = 9001  # evaluation scenes (+ domain index)
MERGE_SEED = 7101  # original-domain scenes that choose the WiSE-FT merge weight (edgedepth.train.merge)


@dataclass
class Assets:
    root: Path
    train0: Path  # "rounds/0": the original training set (original domain only)
    gate_set: Path  # original-domain regression set of the gate
    eval_sets: Dict[str, Path]  # domain -> held-out set
    base_checkpoint: Path
    key: Path  # private signing key
    public_key: Path
    base_bundle: Path = Path()
    base_metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    base_train: Dict[str, object] = field(default_factory=dict)
    merge_set: Optional[Path] = None  # original-domain held-out set for the merge (None: the gate set)


def _done(path: Path) -> bool:
    return (path / ".done").is_file()


def _mark(path: Path, info: Optional[dict] = None) -> None:
    (path / ".done").write_text(json.dumps(info or {}, indent=1, default=str))


def _synth(out: Path, domain: str, frames: int, cfg: SimConfig, seed: int) -> Path:
    from edgedepth.data.synth import write_synth_dataset

    if not _done(out):
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        write_synth_dataset(out, domain, frames, cfg.size[0], cfg.size[1], seed, progress=cfg.progress)
        _mark(out)
    return out


def prepare_assets(cfg: SimConfig, say: Callable[[str], None] = log.info) -> Assets:
    """Render the data sets and train the round-0 model unless WORKDIR/shared/<key> already has them."""
    root = Path(cfg.workdir) / "shared" / f"model-{cfg.base_key()}"
    root.mkdir(parents=True, exist_ok=True)
    data = Path(cfg.workdir) / "shared" / f"data-{cfg.data_key()}"
    timings: Dict[str, float] = {}
    t0 = time.monotonic()
    train0 = _synth(data / "train0", cfg.original_domain, cfg.base_frames, cfg, TRAIN_SEED)
    gate_set = _synth(data / "gate", cfg.original_domain, cfg.gate_frames, cfg, GATE_SEED)
    domains = [cfg.original_domain] + cfg.shifted_domains
    eval_sets = {d: _synth(data / "eval" / d, d, cfg.eval_frames, cfg, EVAL_SEED + 101 * i)
                 for i, d in enumerate(domains)}
    merge_set = None
    if cfg.merge != "none" and cfg.merge_frames > 0:
        merge_set = _synth(data / f"merge{cfg.merge_frames}", cfg.original_domain, cfg.merge_frames, cfg,
                           MERGE_SEED)
    timings["synthesise_s"] = time.monotonic() - t0

    t1 = time.monotonic()
    base_dir = root / "base"
    if not _done(base_dir):
        say(f"training the round-0 model ({cfg.model}, {cfg.size[0]}x{cfg.size[1]}, {cfg.base_epochs} epochs "
            f"on {cfg.base_frames} {cfg.original_domain} frames); it is shared by every strategy and seed")
        from edgedepth.train.config import TrainConfig
        from edgedepth.train.loop import train

        result = train(TrainConfig(data=[str(train0)], val=[str(gate_set)], out=str(base_dir),
                                   model=cfg.model, size=cfg.size, epochs=cfg.base_epochs,
                                   batch_size=cfg.batch_size,
                                   lr=2e-3, seed=0, threads=cfg.threads, workers=1, progress=cfg.progress,
                                   frame_weight=0.0,  # the recipe the recorded simulation figures used
                                   name="edgedepth-sim", version="1", training_round=0))
        _mark(base_dir, {"best_metrics": result.best_metrics, "steps": result.steps,
                         "elapsed_s": result.elapsed_s, "best_epoch": result.best_epoch})
    base_info = json.loads((base_dir / ".done").read_text())
    timings["base_train_s"] = time.monotonic() - t1

    keys = root / "keys"
    if not (keys / "signing.key").is_file():
        from edgedepth.registry.keys import generate_keypair

        generate_keypair(keys, force=True)

    from edgedepth.sim.models import evaluate_model, export_bundle

    checkpoint = base_dir / "best.pt"
    t2 = time.monotonic()
    eval_path = root / "base_eval.json"
    if not eval_path.is_file():
        eval_path.write_text(json.dumps(evaluate_model(checkpoint, eval_sets, cfg.original_domain), indent=1))
    base_metrics = json.loads(eval_path.read_text())
    from edgedepth.runtime.reference import EMBEDDING_VERSION

    bundle = root / ("base_bundle_int8" if cfg.calibrate else "base_bundle")
    made_with = {"reference_frames": cfg.reference_frames, "embedding_version": EMBEDDING_VERSION}
    if not _done(bundle) or json.loads((bundle / ".done").read_text()) != made_with:
        say("exporting the round-0 model" + (" and calibrating INT8" if cfg.calibrate else ""))
        export_bundle(checkpoint, bundle, gate_set, {
            "metrics.json": {"eval": base_metrics, "train": base_info},
            "lineage.json": {"round": 0, "train_data": [str(train0)], "checkpoint": str(checkpoint)}},
            calibrate_data=gate_set if cfg.calibrate else None, threads=cfg.threads,
            reference_data=[train0] if cfg.reference_frames else None, reference_frames=cfg.reference_frames)
        _mark(bundle, made_with)  # a dot file: not listed, not published
    timings["export_s"] = time.monotonic() - t2
    return Assets(root=root, train0=train0, gate_set=gate_set, eval_sets=eval_sets,
                  base_checkpoint=checkpoint, key=keys / "signing.key", public_key=keys / "signing.pub",
                  base_bundle=bundle, base_metrics=base_metrics, timings=timings, base_train=base_info,
                  merge_set=merge_set)
