"""One fleet under one strategy: collect -> build the round -> fine-tune -> gate -> publish -> devices update.

`FleetRun` is the whole improvement loop for one (strategy, seed); `edgedepth simulate` runs several
side by side on the same videos, `edgedepth demo` runs one. Every step is the product's own code:
DepthLoop + FrameSelector + SpoolCollector on the devices, the upload daemon, the ingest server
subprocess, `build_round`, `train`, `gate`, `export_onnx` (+ `calibrate_model`), `publish_bundle`,
ModelUpdater + the loop's health-checked swap.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from edgedepth.rounds.finetune import (  # shared with `edgedepth round train`
    count_frames,
    finetune_train_config,
    gate_target_set,
    new_share_data,
    recipe_from_sim,
    round_val_dirs,
)
from edgedepth.sim.assets import Assets
from edgedepth.sim.config import SimConfig
from edgedepth.sim.fleet import IngestServer, RunStats, SimDevice, derive_seed
from edgedepth.sim.models import evaluate_model, export_bundle

log = logging.getLogger(__name__)

PRIME_GAP_S = 7200.0  # stream time of a round's first frame: after priming, with the hourly budget reset


@dataclass
class RoundRecord:
    """Everything one round did, for the JSON report."""

    round: int
    strategy: str
    seed: int
    devices: List[dict] = field(default_factory=list)
    uploaded: int = 0
    upload_bytes: int = 0  # what the fleet's upload daemons sent this round
    selected_domains: Dict[str, int] = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)
    promoted: bool = False
    version: Optional[str] = None
    candidate_metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    deployed_metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)


class FleetRun:
    """One strategy, one seed: its own registry, ingest store + server, devices and rounds."""

    def __init__(self, cfg: SimConfig, assets: Assets, strategy: str, seed: int, base_bundle: Path,
                 base_metrics: Dict[str, Dict[str, float]], say: Callable[[str], None] = log.info):
        self.cfg, self.assets, self.strategy, self.seed, self.say = cfg, assets, strategy, seed, say
        self.root = Path(cfg.workdir) / "runs" / f"seed{seed}" / strategy
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.registry = str(self.root / "registry")
        names = [f"{strategy}-s{seed}-dev{i}" for i in range(cfg.devices)]
        self.devices = [SimDevice(n, self.root / "devices" / n, self.registry, assets.public_key, threads=1)
                        for n in names]
        self.server = IngestServer(self.root / "store", names, self.root / "ingest.log")
        self.current = assets.base_checkpoint
        self.current_metrics = base_metrics
        self.round_dirs: List[Path] = [assets.train0]
        self.records: List[RoundRecord] = []
        self._dup_order: List[int] = []
        self._publish(base_bundle, notes="round 0")
        for d in self.devices:
            d.token = self.server.tokens[d.name]
            d.check_for_update()  # a fresh device installs the promoted round-0 model

    def _publish(self, bundle: Path, notes: str) -> str:
        from edgedepth.registry.publish import publish_bundle

        entry = publish_bundle(bundle, self.registry, self.assets.key, promote=True, notes=notes)
        return str(entry["version"])

    def start(self) -> "FleetRun":
        self.server.start()
        for d in self.devices:
            d.server = self.server.url
        return self

    def stop(self) -> None:
        self.server.stop()
        for d in self.devices:
            d.close()

    # -- 1. the fleet runs and uploads -------------------------------------------------------------
    def selection(self):
        from edgedepth.runtime.selection import SelectionConfig

        cfg = self.cfg
        mode = {"hard": "hard", "random": "random", "duplicate": "none"}[self.strategy]
        pre_min, pre_max = 0.1, 40.0
        if self.devices and self.devices[0].backend is not None:
            pre = self.devices[0].backend.info.preprocessing
            pre_min, pre_max = pre.min_depth, pre.max_depth
        rate = cfg.rate * cfg.rate_factor
        return SelectionConfig(mode=mode, rate=min(1.0, rate), max_per_hour=float(cfg.budget_per_device),
                               min_spacing_frames=cfg.min_spacing_frames,
                               warmup=min(20, max(1, cfg.frames_per_device // 10)),
                               seed=derive_seed(self.seed, 71), min_depth=pre_min, max_depth=pre_max,
                               spend_budget=cfg.spend_budget, novelty_cap=cfg.novelty_cap,
                               trust_novelty=cfg.trust_novelty)

    def collect(self, r: int, clips: List[list], start_time: float,
                progress: Optional[Callable] = None) -> RoundRecord:
        """Every device checks for an update, plays its clip through the loop, then uploads."""
        from edgedepth.runtime.selection import FrameSelector

        rec = RoundRecord(round=r, strategy=self.strategy, seed=self.seed)
        t0 = time.monotonic()
        for d in self.devices:
            d.check_for_update()
        sel = self.selection()
        primed = None
        if self.strategy == "hard":
            reference = self.reference(self.devices[0].next_backend)
            if reference is not None:  # novelty against the training data: an absolute, calibrated score
                primed = FrameSelector(sel, reference=reference)
            elif self.cfg.prime_frames:  # no reference: start the stream statistics from training frames
                primed = self.primed_selector(sel)
        stats: List[RunStats] = []
        for d, clip in zip(self.devices, clips):
            selector = copy.deepcopy(primed) if primed is not None else sel
            st = d.run(clip, selector, start_time, self.cfg.health_frames, progress, t_offset=PRIME_GAP_S)
            if self.strategy == "duplicate":
                st.spooled = d.spool_copies(self._duplicate_samples(r, self.devices.index(d)), start_time)
            stats.append(st)
        rec.seconds["fleet"] = time.monotonic() - t0
        t1 = time.monotonic()
        self.since = _utc_now()
        for d, st in zip(self.devices, stats):
            up = d.upload(self.cfg.daemon)
            st.uploaded, st.upload_duplicates = up["uploaded"], up["duplicates"]
            st.upload_bytes = int(up.get("bytes", 0))
            st.upload_failed = up["failed"]
        rec.seconds["upload"] = time.monotonic() - t1
        rec.devices = [dict(asdict(st), device=d.name) for d, st in zip(self.devices, stats)]
        rec.uploaded = sum(st.uploaded for st in stats)
        rec.upload_bytes = sum(st.upload_bytes for st in stats)
        for st in stats:
            for k, v in st.selected_domains.items():
                rec.selected_domains[k] = rec.selected_domains.get(k, 0) + v
        if self.strategy == "duplicate":
            rec.selected_domains = {self.cfg.original_domain + " (copies)": sum(s.spooled for s in stats)}
        self.records.append(rec)
        return rec

    def primed_selector(self, sel):
        """A FrameSelector that has already scored a sample of the current model's training frames.

        The selector's stream statistics (atypicality) and score quantiles then start from what the
        model was trained on, as on a device that has been running for a while, instead of from the
        first seconds of a round; "unusual" then means unlike the training data. Priming uses stream
        times before 0 and negative sequence numbers, so it spends none of the round's upload budget.
        """
        from edgedepth.runtime.selection import FrameSelector

        backend = self.devices[0].next_backend
        pre = backend.info.preprocessing
        selector = FrameSelector(sel, reference=self.reference(backend))
        frames = self._prime_frames()
        buf = np.empty(backend.input_shape, dtype=np.float32)
        n = len(frames)
        for j, rgb in enumerate(frames):
            pre.apply(rgb, out=buf)
            depth, unc = backend.infer(buf)
            selector.score(rgb, np.array(depth[0, 0]), np.array(unc[0, 0]), j - n - 1, j / 30.0)
        return selector

    @staticmethod
    def reference(backend):
        """The training-frame reference set shipped in the backend's bundle (None when it has none)."""
        from edgedepth.runtime.reference import bundle_of, load_reference

        return load_reference(bundle_of(getattr(backend, "model_path", "")))

    def _prime_frames(self) -> list:
        """Up to cfg.prime_frames RGB frames drawn (seeded) from every training split the model has seen."""
        from edgedepth.data.dataset import open_dataset

        pool = []
        for d in self.round_dirs:
            ds = open_dataset(str(d))
            pool.extend((ds, i) for i in range(len(ds)))
        rng = random.Random(derive_seed(self.seed, len(self.round_dirs), 41))
        chosen = rng.sample(pool, min(self.cfg.prime_frames, len(pool)))
        return [ds[i].rgb for ds, i in chosen]

    def _duplicate_samples(self, r: int, device_index: int) -> list:
        """Distinct training frames for every (round, device): a seeded permutation consumed in order."""
        from edgedepth.data.dataset import open_dataset

        ds = open_dataset(str(self.assets.train0))
        if not self._dup_order:
            self._dup_order = list(range(len(ds)))
            random.Random(derive_seed(self.seed, 97)).shuffle(self._dup_order)
        b = self.cfg.budget_per_device
        start = ((r - 1) * len(self.devices) + device_index) * b
        idx = [self._dup_order[(start + i) % len(ds)] for i in range(b)]
        return [ds[i] for i in idx]

    # -- 2. build -> train -> gate -> publish ------------------------------------------------------
    def improve(self, r: int, progress: Optional[Callable[[str], None]] = None) -> RoundRecord:
        from edgedepth.gate import default_evaluator, gate
        from edgedepth.rounds.build import RoundConfig, build_round, round_val_dir
        from edgedepth.train.loop import train

        cfg, rec = self.cfg, self.records[-1]
        step = progress or (lambda _s: None)
        t0 = time.monotonic()
        out = self.root / "rounds" / str(r)
        step("build")
        report = build_round(RoundConfig(store=str(self.server.store), out=str(out), since=self.since,
                                         replay=[str(p) for p in self.round_dirs],
                                         replay_fraction=0.0 if cfg.new_share > 0 else cfg.replay_fraction,
                                         val_fraction=cfg.val_fraction,
                                         time_block_s=cfg.time_block_s, seed=derive_seed(self.seed, r, 5),
                                         teacher=cfg.teacher if cfg.label_source == "teacher" else None,
                                         use_uploaded_depth=cfg.label_source != "teacher"))
        rec.build = asdict(report)
        self.round_dirs.append(out)
        rec.seconds["build"] = time.monotonic() - t0

        t1 = time.monotonic()
        step("train")
        data = self.round_dirs if cfg.train_on_all_rounds else self.round_dirs[1:]
        shares: List[float] = []
        if cfg.new_share > 0:  # all of rounds/0 + every round's new frames at a fixed share of each batch
            data, shares = new_share_data(self.round_dirs, cfg.new_share)
        val = round_val_dir(str(out))
        n = count_frames(data)
        run_dir = self.root / "train" / str(r)
        tcfg = finetune_train_config(
            recipe_from_sim(cfg), data, shares, val=[val or str(self.assets.gate_set)], out=run_dir,
            init_from=self.current, frame_weight=0.0,  # as the round-0 model (edgedepth.sim.assets)
            seed=derive_seed(self.seed, r, 13) % 100000, threads=cfg.threads, workers=1, progress=False,
            name="edgedepth-sim", version=f"{self.strategy}-round{r}", training_round=r,
            extra_lineage={"round": str(out), "strategy": self.strategy, "sim_seed": self.seed})
        epochs = tcfg.epochs
        result = train(tcfg)
        candidate = result.last_checkpoint  # a fixed step budget: the last weights, not a val-picked epoch
        protected = round_val_dirs(self.round_dirs[1:-1]) if cfg.protect_rounds else []
        rec.train = {"frames": n, "epochs": epochs, "steps": result.steps, "elapsed_s": result.elapsed_s,
                     "data": [str(p) for p in data], "data_shares": shares,
                     "val": val or str(self.assets.gate_set), "last_metrics": result.last_metrics}
        if cfg.merge == "wise":  # learn without forgetting: see edgedepth.train.merge
            from edgedepth.train.merge import wise_merge

            merged = wise_merge(self.current, candidate, self.assets.merge_set or self.assets.gate_set,
                                run_dir / "merged.pt", tolerance=cfg.gate_tolerance, margin=cfg.merge_margin,
                                anchors=[self.assets.base_checkpoint], protect=protected,
                                protect_tolerance=cfg.protect_tolerance)
            candidate = merged.checkpoint
            rec.train["merge"] = merged.to_dict()
        rec.seconds["train"] = time.monotonic() - t1

        t2 = time.monotonic()
        step("gate")
        target = gate_target_set(self.round_dirs[1:], out, cfg.target_all_rounds)
        g = gate(candidate, self.current, self.assets.gate_set, target, tolerance=cfg.gate_tolerance,
                 min_gain=cfg.gate_min_gain, evaluator=default_evaluator(batch_size=32),
                 protect_sets=protected, protect_tolerance=cfg.protect_tolerance)
        rec.gate = g.to_dict()
        if val is None:
            rec.gate["note"] = "this round has no val split; the target set is its own training data (biased)"
        rec.candidate_metrics = evaluate_model(candidate, self.assets.eval_sets, cfg.original_domain)
        rec.seconds["gate"] = time.monotonic() - t2

        t3 = time.monotonic()
        if g.passed:
            step("publish")
            lineage = json.loads((out / "lineage.json").read_text())
            bundle = export_bundle(candidate, self.root / "bundles" / str(r), self.assets.gate_set, {
                "metrics.json": {"gate": rec.gate, "eval": rec.candidate_metrics, "train": rec.train},
                "lineage.json": {"round": str(out), "strategy": self.strategy, "seed": self.seed,
                                 "init_from": str(self.current), "round_report": lineage["report"],
                                 "train_data": [str(p) for p in data]}},
                calibrate_data=self.assets.gate_set if cfg.calibrate else None, threads=cfg.threads,
                reference_data=list(self.round_dirs) if cfg.reference_frames else None,
                reference_frames=cfg.reference_frames)
            rec.version = self._publish(bundle, notes=f"{self.strategy} round {r}")
            rec.promoted = True
            self.current, self.current_metrics = candidate, rec.candidate_metrics
        rec.deployed_metrics = self.current_metrics
        rec.seconds["publish"] = time.monotonic() - t3
        return rec

    # -- 3. the fleet takes the last model --------------------------------------------------------
    def final_update(self, clip: list, start_time: float) -> List[dict]:
        """Each device polls once more and runs a short clip so the loop swaps the newest model in."""
        out = []
        for d in self.devices:
            found = d.check_for_update()
            sel = self.selection()
            sel.mode = "none"
            st = d.run(clip, sel, start_time, self.cfg.health_frames)
            out.append({"device": d.name, "found": found, "version": d.version, "swap": st.swap,
                        "fps": st.fps})
        return out


def _utc_now() -> str:
    from edgedepth.fleet.store.base import utc_now_iso

    return utc_now_iso()


def mean_sd(values: List[float]):
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return m, sd
