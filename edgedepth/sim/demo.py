"""`edgedepth demo`: the whole loop once, on built-in defaults, on a laptop-class CPU in minutes.

synthesise -> train -> export -> calibrate (INT8) -> publish (signed) -> devices install it -> live loop
on a synthetic camera whose world has shifted -> hard frames selected -> upload daemon -> ingest server
-> next round built -> fine-tune -> gate -> publish -> devices update (health-checked swap).

It is a one-strategy, one-seed fleet simulation: the same FleetRun code as `edgedepth simulate`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List

from edgedepth.sim.config import SimConfig, quick_config
from edgedepth.sim.fleet import stream_clock

log = logging.getLogger(__name__)


def demo_config(workdir: str = "edgedepth-demo", quick: bool = False) -> SimConfig:
    if quick:
        return quick_config(workdir=workdir, strategies=["hard"], calibrate=True, daemon="subprocess",
                            progress=False)
    # one round of the simulation's recipe (20 uploads per device, 1200 fine-tune steps) on shorter streams
    # (4 devices x 1000 frames instead of 2500) and a quicker round-0 model, to stay within minutes
    return SimConfig(workdir=workdir, seeds=[0], strategies=["hard"], rounds=1, devices=4,
                     frames_per_device=1000, budget_per_device=20, base_frames=400, base_epochs=15,
                     eval_frames=48, gate_frames=48, calibrate=True, daemon="subprocess")


def run_demo(cfg: SimConfig, say: Callable[[str], None] = print) -> dict:
    """Run the demo; returns a summary dict (also what `edgedepth demo` prints)."""
    import torch

    from edgedepth.sim.assets import prepare_assets
    from edgedepth.sim.cycle import FleetRun
    from edgedepth.sim.fleet import derive_seed, render_clip, sigterm_as_exit
    from edgedepth.sim.report import plot
    from edgedepth.sim.simulate import _bar, _record, _write, device_clips

    cfg = replace(cfg, strategies=["hard"], seeds=cfg.seeds[:1], rounds=1).validate()
    torch.set_num_threads(cfg.threads)
    t0 = time.monotonic()
    stages: List[Dict[str, object]] = []

    def stage(name: str) -> None:
        now = time.monotonic() - t0
        if stages:
            stages[-1]["seconds"] = round(now - float(stages[-1]["start"]), 1)
        stages.append({"stage": name, "start": now})
        say(f"[{now:6.1f} s] {name}")

    stage(f"synthesise data, train the round-0 model ({cfg.model} {cfg.size[0]}x{cfg.size[1]}), export"
          + (", calibrate INT8" if cfg.calibrate else "") + f"  (cached in {cfg.workdir}/shared)")
    assets = prepare_assets(cfg, say)
    seed = cfg.seeds[0]
    stage("publish the round-0 bundle (signed) and install it on the devices")
    run = FleetRun(cfg, assets, "hard", seed, assets.base_bundle, assets.base_metrics, say)
    stack = contextlib.ExitStack()
    stack.enter_context(sigterm_as_exit())
    try:
        stage("start the ingest server (127.0.0.1)")
        run.start()
        stage(f"render the shifted world: {cfg.devices} synthetic cameras x {cfg.frames_per_device} frames")
        clips = device_clips(cfg, seed, 1, cfg.progress)
        stage("run the live loop on every device (headless), select hard frames, spool them; upload "
              f"through the daemon ({cfg.daemon})")
        bar = _bar(cfg.devices * cfg.frames_per_device, "devices", cfg.progress)
        try:
            rec = run.collect(1, clips, stream_clock(1), bar.update)
        finally:
            bar.close()
        run.improve(1, progress=lambda s: stage({"build": "build the next round from the ingest store",
                                                 "train": "fine-tune from the current model",
                                                 "gate": "gate the candidate",
                                                 "publish": "export, calibrate, sign and publish it"}[s]))
        stage("devices poll the registry and swap the new model in (health-checked)")
        clip = render_clip(cfg.mix, derive_seed(seed, 999), max(4, 2 * cfg.health_frames), cfg.size[0],
                           cfg.size[1], cfg.scene_length, cfg.segment_length)
        updates = run.final_update(clip, stream_clock(2))
    finally:
        run.stop()
        stack.close()
    stage("report")
    result = {"config": cfg.to_dict(), "base": assets.base_metrics, "runs": {"hard": {str(seed): [
        _record(r) for r in run.records]}}, "final_update": {"hard": {str(seed): updates}}}
    result["plot"] = str(plot(result, Path(cfg.workdir) / "demo.png"))
    stages[-1]["seconds"] = round(time.monotonic() - t0 - float(stages[-1]["start"]), 1)
    result["stages"] = stages
    result["total_s"] = time.monotonic() - t0
    result["summary"] = summarise(result, rec)
    _write(Path(cfg.workdir) / "demo.json", result)
    return result


def summarise(result: dict, rec) -> dict:
    """The figures the demo's closing table shows."""
    seed = next(iter(result["runs"]["hard"]))
    r = result["runs"]["hard"][seed][-1]
    devs = r["devices"]
    frames = sum(d["frames"] for d in devs)
    return {
        "before": result["base"], "after": r["deployed_metrics"], "candidate": r["candidate_metrics"],
        "promoted": r["promoted"], "version": r["version"], "gate_reasons": r["gate"].get("reasons", []),
        "fps_per_device": sum(d["fps"] for d in devs) / max(1, len(devs)),
        "infer_ms_p50": sum(d["infer_ms_p50"] for d in devs) / max(1, len(devs)),
        "frames": frames, "selected": sum(d["selected"] for d in devs),
        "uploaded": r["uploaded"], "selected_domains": r["selected_domains"],
        "round": {k: r["build"][k] for k in ("train", "val", "replay", "duplicates")},
        "devices_after": result["final_update"]["hard"][seed],
    }


def summary_table(result: dict) -> str:
    s = result["summary"]
    rows = [("", "before", "after", "change")]
    for group, label in (("shifted", "shifted domains"), ("original", "original domain")):
        for metric, name in (("abs_rel", "AbsRel"), ("d1", "δ1")):
            b, a = s["before"][group][metric], s["after"][group][metric]
            change = f"{(a - b) / b * 100:+.1f}%" if b else "n/a"
            rows.append((f"{name} ({label})", f"{b:.3f}", f"{a:.3f}", change))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    doms = ", ".join(f"{d} {n}" for d, n in sorted(s["selected_domains"].items(), key=lambda kv: -kv[1]))
    def swap(d: dict) -> str:
        if not d.get("swap"):
            return ""
        if d["swap"].get("healthy"):
            return " (healthy)"
        return " (ROLLED BACK: " + str(d["swap"].get("reason", "")) + ")"

    versions = ", ".join(f"{d['device']} -> v{d['version']}{swap(d)}" for d in s["devices_after"])
    lines += [
        f"fleet: {s['frames']} frames at {s['fps_per_device']:.0f} fps per device (inference p50 "
        f"{s['infer_ms_p50']:.2f} ms); {s['selected']} selected ({doms}); {s['uploaded']} uploaded",
        f"round: {s['round']['train']} train frames (incl. {s['round']['replay']} replay), "
        f"{s['round']['val']} val, {s['round']['duplicates']} near-duplicates dropped",
        "gate: " + (f"PROMOTED as version {s['version']}" if s["promoted"] else
                    "REFUSED - " + "; ".join(s["gate_reasons"])),
        f"devices: {versions}",
    ]
    return "\n".join(lines)
