"""`edgedepth simulate`: does selecting hard frames pay? Strategies side by side on the same fleet videos.

For each seed, one FleetRun per strategy (own registry, ingest server and store, devices) advances in
lockstep: every round, each device's video is rendered once and played by that device under every
strategy (so the strategies see identical frames), each fleet uploads at the same budget, then each
builds its round, fine-tunes with the same step budget, gates, publishes, and its devices update.
The round-0 model and the evaluation sets are shared by all strategies and seeds.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from edgedepth.sim.assets import prepare_assets
from edgedepth.sim.config import SimConfig
from edgedepth.sim.cycle import FleetRun
from edgedepth.sim.fleet import derive_seed, render_clip, sigterm_as_exit, stream_clock

log = logging.getLogger(__name__)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=False, dynamic_ncols=True)


def device_clips(cfg: SimConfig, seed: int, r: int, progress: bool = False) -> List[list]:
    """The videos the fleet's devices see in round r (a function of the seed only, not the strategy)."""
    bar = _bar(cfg.devices * cfg.frames_per_device, f"seed {seed} round {r}: render videos", progress)
    try:
        return [render_clip(cfg.mix, derive_seed(seed, r, i, 31), cfg.frames_per_device, cfg.size[0],
                            cfg.size[1], cfg.scene_length, cfg.segment_length, bar.update)
                for i in range(cfg.devices)]
    finally:
        bar.close()


def run_simulation(cfg: SimConfig, say: Callable[[str], None] = print,
                   runs_hook: Optional[Callable[[List[FleetRun]], None]] = None) -> dict:
    """Run the simulation; returns the result dict (also written to WORKDIR/simulation.json)."""
    with sigterm_as_exit():
        return _run_simulation(cfg, say, runs_hook)


def _run_simulation(cfg: SimConfig, say: Callable[[str], None],
                    runs_hook: Optional[Callable[[List[FleetRun]], None]]) -> dict:
    cfg.validate()
    t_start = time.monotonic()
    import torch

    torch.set_num_threads(cfg.threads)
    workdir = Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"[sim] workdir {workdir.resolve()}; strategies {', '.join(cfg.strategies)}; seeds {cfg.seeds}; "
        f"{cfg.rounds} round(s); {cfg.devices} devices x {cfg.frames_per_device} frames/round; budget "
        f"{cfg.budget_per_device} uploads/device/round; fleet mix "
        + ", ".join(f"{d} {p:.0%}" for d, p in sorted(cfg.mix.items(), key=lambda kv: -kv[1])))
    assets = prepare_assets(cfg, say)
    base = assets.base_metrics
    say(f"[sim] round-0 model ({assets.base_checkpoint}): shifted AbsRel {base['shifted']['abs_rel']:.3f} "
        f"d1 {base['shifted']['d1']:.3f}; original AbsRel {base['original']['abs_rel']:.3f} "
        f"d1 {base['original']['d1']:.3f}")
    result: Dict = {"config": cfg.to_dict(), "base": base, "base_train": assets.base_train,
                    "assets": str(assets.root), "runs": {s: {} for s in cfg.strategies}, "final_update": {},
                    "timings": dict(assets.timings)}
    for seed in cfg.seeds:
        runs = [FleetRun(cfg, assets, s, seed, assets.base_bundle, base, say) for s in cfg.strategies]
        try:
            for run in runs:
                run.start()
            if runs_hook is not None:
                runs_hook(runs)
            for r in range(1, cfg.rounds + 1):
                clips = device_clips(cfg, seed, r, cfg.progress)
                start_time = stream_clock(r)
                bar = _bar(cfg.devices * cfg.frames_per_device * len(runs), f"seed {seed} round {r}: fleet",
                           cfg.progress)
                try:
                    for run in runs:
                        rec = run.collect(r, clips, start_time, bar.update)
                        say(f"[sim] seed {seed} round {r} {run.strategy}: {rec.uploaded} frames uploaded "
                            f"({_domains(rec.selected_domains)}), fleet {_fps(rec.devices):.0f} fps/device")
                finally:
                    bar.close()
                del clips
                for run in runs:
                    rec = run.improve(r)
                    m = rec.candidate_metrics
                    say(f"[sim] seed {seed} round {r} {run.strategy}: built {rec.build['train']} train "
                        f"(+{rec.build['val']} val), {rec.train['steps']} steps{_merge(rec.train)}; "
                        f"candidate shifted AbsRel {m['shifted']['abs_rel']:.3f}, original "
                        f"{m['original']['abs_rel']:.3f}; gate "
                        f"{'PROMOTE v' + str(rec.version) if rec.promoted else 'REFUSE'}")
            final_clip = render_clip(cfg.mix, derive_seed(seed, 999), max(4, 2 * cfg.health_frames),
                                     cfg.size[0], cfg.size[1], cfg.scene_length, cfg.segment_length)
            for run in runs:
                result["runs"][run.strategy][str(seed)] = [_record(rec) for rec in run.records]
                result["final_update"].setdefault(run.strategy, {})[str(seed)] = \
                    run.final_update(final_clip, stream_clock(cfg.rounds + 1))
        finally:
            for run in runs:
                run.stop()
        _write(workdir / "simulation.json", result)  # partial results survive an interrupted run
    result["timings"]["total_s"] = time.monotonic() - t_start
    from edgedepth.sim.report import plot

    result["plot"] = str(plot(result, workdir / "simulation.png"))
    _write(workdir / "simulation.json", result)
    return result


def _record(rec) -> dict:
    from dataclasses import asdict

    return asdict(rec)


def _merge(train: dict) -> str:
    merge = train.get("merge")
    return f", WiSE-FT alpha {merge['alpha']:.2f}" if merge else ""


def _domains(counts: Dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    parts = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{d} {v / total:.0%}" for d, v in parts) or "none"


def _fps(devices: List[dict]) -> float:
    vals = [d["fps"] for d in devices if d.get("fps")]
    return sum(vals) / len(vals) if vals else 0.0


def _write(path: Path, result: dict) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(path)
