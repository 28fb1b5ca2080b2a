#!/usr/bin/env python
"""Fast study of fine-tuning recipes for the fleet simulation: learn the shifted
domains from a round's frames without forgetting the original one.

Reuses the simulation's shared assets (round-0 checkpoint, gate regression set, evaluation sets; made
by `python scripts/simulate.py`, or here on first use) and fine-tunes the round-0 model in memory (the
product's loss, augmentation, schedule, frozen BatchNorm; ~20-50 s a trial on one thread) on

    hard / random     what the strategies deliver after 2 rounds of the recorded simulation, rendered like the
                      fleet's video (2 frames per 15-frame scene)
    hard2 / random2   the same for the simulation as it runs today (seed 0)
    dir:R1[+R2...]    the new (non-replay) frames of real simulation round folders

plus replay from the round-0 training set, then prints, for the fine-tune (a=1) and for WiSE-FT
interpolation theta0 + a (theta - theta0) at the largest a within tolerance on the gate set and on a
192-frame original-domain "merge set", the shifted and original AbsRel on the evaluation sets and their
change vs round 0. Results are appended to CACHE/results.jsonl (with the whole WiSE-FT curve).

    python scripts/finetune_study.py --recipes base,s25-all-600 --scenarios hard,random --seeds 0,1
    python scripts/finetune_study.py --recipes base --set lr=1e-3 --curve
    python scripts/finetune_study.py --list

Why the simulation's recipe is what it is (tiny, 64x96): forgetting shows up as a handful of
low-contrast indoor frames that a fine-tune starts reading as fog, so the mean AbsRel of a 48- or
64-frame set swings by several % between runs and a small gate set does not predict the evaluation set.
With a small replay sample (3x the new frames), WiSE-FT, L2-SP or a frozen encoder trade shifted-domain
gain for original-domain regression; replaying the WHOLE round-0 training set with the new frames at a
fixed 25% of every batch (s25-all-600) learns the shifted domains and also improves the original one,
since the round-0 model is under-trained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SCENARIOS = {
    # domain -> new training frames (what a strategy's 2 rounds deliver after de-duplication and the
    # val split; measured in the simulation's round folders)
    "hard": {"night": 55, "fog": 45, "outdoor": 10, "indoor": 45},  # the recorded simulation's rounds
    "random": {"night": 17, "fog": 17, "outdoor": 16, "indoor": 110},
    "hard2": {"night": 30, "fog": 32, "indoor": 4},  # seed 0 today, if round 2 collected like round 1
    "random2": {"night": 10, "fog": 6, "outdoor": 11, "indoor": 91},  # seed 0 today, rounds 1+2
}


@dataclass
class Recipe:
    steps: int = 300
    lr: float = 5e-4
    batch_size: int = 16
    replay: float = 3.0  # replay frames per new frame (from the round-0 training set)
    new_share: Optional[float] = None  # fixed share of new frames in every batch (None: uniform mix)
    freeze_bn: bool = True
    freeze: str = "none"  # none | encoder | stem
    l2sp: float = 0.0
    weight_decay: float = 1e-4
    augment: bool = True
    warmup: float = 0.03
    final_lr_fraction: float = 0.02
    prio: float = 0.0  # share of replay drawn by regression (loss now - loss of the initial model)
    prio_every: int = 25  # steps between re-scoring the replay pool
    replay_all: bool = False  # replay pool = the whole round-0 training set (train_on_all_rounds)


RECIPES: Dict[str, Recipe] = {
    "base": Recipe(),
    "lr2e-4": Recipe(lr=2e-4),
    "lr1e-3": Recipe(lr=1e-3),
    "lr2e-3": Recipe(lr=2e-3),
    "steps600": Recipe(steps=600),
    "steps600-lr1e-3": Recipe(steps=600, lr=1e-3),
    "replay6": Recipe(replay=6.0),
    "half": Recipe(new_share=0.5),
    "half-lr1e-3": Recipe(new_share=0.5, lr=1e-3),
    "dec": Recipe(freeze="encoder"),
    "dec-lr2e-3": Recipe(freeze="encoder", lr=2e-3),
    "stem": Recipe(freeze="stem"),
    "l2sp1": Recipe(l2sp=1.0),
    "l2sp10": Recipe(l2sp=10.0),
    "l2sp10-lr1e-3": Recipe(l2sp=10.0, lr=1e-3),
    "bn": Recipe(freeze_bn=False),
    "s25-all-600": Recipe(replay_all=True, new_share=0.25, steps=600, lr=1e-3),
    "s25-all-900": Recipe(replay_all=True, new_share=0.25, steps=900, lr=1e-3),
    "s15-all-900": Recipe(replay_all=True, new_share=0.15, steps=900, lr=1e-3),
    "s40-all-600": Recipe(replay_all=True, new_share=0.4, steps=600, lr=1e-3),
    "s40-all-900-lr2e-3": Recipe(replay_all=True, new_share=0.4, steps=900, lr=2e-3),
    "s25-all-600-bn": Recipe(replay_all=True, new_share=0.25, steps=600, lr=1e-3, freeze_bn=False),
    "s25-all-900-lr2e-3": Recipe(replay_all=True, new_share=0.25, steps=900, lr=2e-3),
    "all-600-lr1e-3": Recipe(replay_all=True, steps=600, lr=1e-3),
    "all-900-lr1e-3": Recipe(replay_all=True, steps=900, lr=1e-3),
    "all-600-lr2e-3": Recipe(replay_all=True, steps=600, lr=2e-3),
    "all-300-lr1e-3": Recipe(replay_all=True, steps=300, lr=1e-3),
    "prio-all-600-lr1e-3": Recipe(replay_all=True, steps=600, lr=1e-3, new_share=0.25, prio=0.5),
    "all-half-lr1e-3": Recipe(replay_all=True, new_share=0.5, lr=1e-3),
    "prio-half-lr1e-3": Recipe(replay_all=True, new_share=0.5, lr=1e-3, prio=0.5),
    "prio1-half-lr1e-3": Recipe(replay_all=True, new_share=0.5, lr=1e-3, prio=1.0),
    "prio-lr1e-3": Recipe(replay_all=True, new_share=0.25, lr=1e-3, prio=0.5),
    "bn-lr1e-3": Recipe(freeze_bn=False, lr=1e-3),
    "half-bn-lr1e-3": Recipe(new_share=0.5, freeze_bn=False, lr=1e-3),
    "half-steps600-lr1e-3": Recipe(new_share=0.5, steps=600, lr=1e-3),
    "noaug": Recipe(augment=False),
}
MERGE = None
ALPHAS = [round(a, 2) for a in np.linspace(0.0, 1.0, 21)]


def _cfg(model: str = "tiny"):
    from edgedepth.sim.config import SimConfig

    return SimConfig(progress=False, model=model)


def render_frames(counts: Dict[str, int], seed: int, size: Tuple[int, int], cache: Path, tag: str):
    """counts[domain] frames, 2 per 15-frame scene (frames 3 and 11, as min_spacing 8 allows)."""
    from edgedepth.data.synth import DOMAINS, SceneStream
    from edgedepth.sim.fleet import derive_seed
    from edgedepth.train.torchdata import Frames

    path = cache / f"{tag}-s{seed}-{size[0]}x{size[1]}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return Frames(z["rgb"], z["depth"], list(z["names"]), list(z["domains"]))
    rgb, depth, names, doms = [], [], [], []
    for d, n in sorted(counts.items()):
        stream = SceneStream(d, derive_seed(seed, DOMAINS.index(d), 4242), size[0], size[1], scene_length=15)
        got = 0
        while got < n:
            f = stream.next()
            if stream.frame_in_scene - 1 in (3, 11):
                rgb.append(f.rgb)
                depth.append(f.depth.astype(np.float32))
                names.append(f"{d}_{got}")
                doms.append(d)
                got += 1
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, rgb=np.stack(rgb), depth=np.stack(depth), names=np.array(names), domains=np.array(doms))
    return Frames(np.stack(rgb), np.stack(depth), names, doms)


def round_frames(spec: str, size: Tuple[int, int]):
    """The new (non-replay) training frames of simulation round folders: 'DIR[+DIR...]'."""
    from edgedepth.train.torchdata import Frames, load_frames

    parts = [load_frames(p, size[0], size[1], workers=1) for p in spec.split("+")]
    parts = [f.subset([i for i, n in enumerate(f.names) if not n.startswith("replay_")]) for f in parts]
    return Frames.concat(parts)


def merge_set(size, n: int = 192, seed: int = 7101):
    """An original-domain held-out set for choosing a (larger than the gate's 48 frames)."""
    from edgedepth.data.synth import render_frame
    from edgedepth.sim.fleet import derive_seed
    from edgedepth.train.torchdata import Frames

    fr = [render_frame("indoor", derive_seed(seed, i, 71), size[0], size[1]) for i in range(n)]
    return Frames(np.stack([f.rgb for f in fr]), np.stack([f.depth.astype(np.float32) for f in fr]),
                  [str(i) for i in range(n)], ["indoor"] * n)


def load_eval(assets, size):
    from edgedepth.train.torchdata import load_frames

    h, w = size
    sets = {d: load_frames(str(p), h, w, workers=1) for d, p in assets.eval_sets.items()}
    gate = load_frames(str(assets.gate_set), h, w, workers=1)
    train0 = load_frames(str(assets.train0), h, w, workers=1)
    return sets, gate, train0


def score(model, frames, pre) -> Tuple[float, float]:
    from edgedepth.train.loop import validate

    m = validate(model, frames, pre, torch.device("cpu"), 64)
    return m["abs_rel"], m["d1"]


def evaluate_all(model, sets, gate, pre, original: str) -> Dict[str, float]:
    from edgedepth.train.torchdata import Frames

    shifted = Frames.concat([f for d, f in sets.items() if d != original])
    out = {}
    out["shifted"], out["shifted_d1"] = score(model, shifted, pre)
    out["original"], out["original_d1"] = score(model, sets[original], pre)
    out["gate"], out["gate_d1"] = score(model, gate, pre)
    if MERGE is not None:
        out["merge"], out["merge_d1"] = score(model, MERGE, pre)
    for d, f in sets.items():
        if d != original:
            out[d] = score(model, f, pre)[0]
    return out


def finetune(model, recipe: Recipe, new, replay, seed: int):
    """The product's training step (edgedepth.train.loop) in memory, plus the recipe's options."""
    from edgedepth.train.augment import Augment, normalise, to_unit_float
    from edgedepth.train.loop import CosineSchedule
    from edgedepth.train.losses import DepthLoss
    from edgedepth.train.regularize import L2SP, freeze_parameters
    from edgedepth.train.torchdata import Frames, batch_tensors

    torch.manual_seed(seed)
    freeze_parameters(model, recipe.freeze)
    reg = L2SP(model, recipe.l2sp) if recipe.l2sp > 0 else None
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": recipe.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=recipe.lr)
    sched = CosineSchedule(recipe.lr, recipe.warmup, recipe.final_lr_fraction)
    loss_fn = DepthLoss(grad_weight=0.5, mode="nll", frame_weight=0.0)
    aug = Augment() if recipe.augment else None
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    pre = model._pre
    data = Frames.concat([new, replay]) if len(replay) else new
    n_new = len(new)
    bs = recipe.batch_size
    order: List[int] = []
    base_err = replay_errors(model, replay, pre) if recipe.prio > 0 else None
    prio_p = None
    for step in range(recipe.steps):
        if recipe.prio > 0 and step % recipe.prio_every == 0:
            gain = np.maximum(replay_errors(model, replay, pre) - base_err, 0.0) + 1e-4
            prio_p = gain / gain.sum()
        if recipe.new_share is None:
            if len(order) < bs:
                order += list(rng.permutation(len(data)))
            idx, order = np.array(order[:bs]), order[bs:]
        else:
            k = int(round(bs * recipe.new_share))
            r = bs - k
            k_p = int(round(r * recipe.prio)) if prio_p is not None else 0
            rep = np.concatenate([rng.integers(0, len(replay), r - k_p),
                                  rng.choice(len(replay), k_p, p=prio_p) if k_p else np.zeros(0, np.int64)])
            idx = np.concatenate([rng.integers(0, n_new, k), n_new + rep.astype(np.int64)])
        model.train()
        if recipe.freeze_bn:
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        sched.apply(opt, step / recipe.steps)
        rgb, depth = batch_tensors(data, idx, "cpu")
        x = to_unit_float(rgb)
        if aug is not None:
            x, depth = aug(x, depth, gen)
        x = normalise(x, pre.mean, pre.std)
        valid = (depth >= pre.min_depth) & (depth <= pre.max_depth)
        pred, unc = model(x)
        loss, _ = loss_fn(pred, unc, depth, valid)
        if reg is not None:
            loss = loss + reg()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@torch.no_grad()
def replay_errors(model, frames, pre) -> np.ndarray:
    """Per-frame mean |log pred - log gt| (what forgetting looks like, frame by frame)."""
    from edgedepth.train.loop import predict_frames

    was = model.training
    d, _ = predict_frames(model, frames, pre, torch.device("cpu"), 64)
    model.train(was)
    g = frames.depth
    m = (g >= pre.min_depth) & (g <= pre.max_depth)
    e = np.abs(np.log(np.clip(d, pre.min_depth, None)) - np.log(np.where(m, g, 1.0))) * m
    return e.sum(axis=(1, 2)) / np.maximum(m.sum(axis=(1, 2)), 1)


def load_base(path):
    from edgedepth.checkpoint import load_checkpoint
    from edgedepth.models import build_model
    from edgedepth.preprocess import Preprocessing

    ck = load_checkpoint(path)
    model = build_model(ck["model_config"])
    model.load_state_dict(ck["state_dict"])
    model._pre = Preprocessing.from_dict(ck["preprocessing"])
    return model


def wise_curve(model0_state, ft_state, model, sets, gate, pre, original, alphas=ALPHAS):
    from edgedepth.train.regularize import interpolate_state

    rows = []
    for a in alphas:
        model.load_state_dict(interpolate_state(model0_state, ft_state, a))
        rows.append((a, evaluate_all(model, sets, gate, pre, original)))
    model.load_state_dict(ft_state)
    return rows


def pick(rows, base, tol, key="gate"):
    """Largest a with gate AbsRel <= base*(1+tol) and gate d1 >= base*(1-tol)."""
    ok = [(a, m) for a, m in rows
          if m[key] <= base[key] * (1 + tol) and m[key + "_d1"] >= base[key + "_d1"] * (1 - tol)]
    return max(ok, key=lambda r: r[0]) if ok else rows[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="base")
    ap.add_argument("--scenarios", default="hard,random")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--tol", type=float, default=0.02, help="gate tolerance used to choose a")
    ap.add_argument("--set", action="append", default=[], help="override a recipe field: name=value")
    ap.add_argument("--cache", default="edgedepth-sim/study")
    ap.add_argument("--curve", action="store_true", help="print the whole WiSE-FT curve")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--model", default="tiny", help="round-0 model size (a shared asset per size)")
    args = ap.parse_args(argv)
    if args.list:
        for k, v in RECIPES.items():
            print(k, asdict(v))
        return 0
    torch.set_num_threads(1)
    from edgedepth.sim.assets import prepare_assets

    cfg = _cfg(args.model)
    assets = prepare_assets(cfg, print)
    sets, gate, train0 = load_eval(assets, cfg.size)
    global MERGE
    MERGE = merge_set(cfg.size)
    model = load_base(assets.base_checkpoint)
    pre = model._pre
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    base = evaluate_all(model, sets, gate, pre, cfg.original_domain)
    print(f"round 0: shifted {base['shifted']:.4f} original {base['original']:.4f} gate {base['gate']:.4f} "
          + " ".join(f"{d} {base[d]:.3f}" for d in sets if d != cfg.original_domain), flush=True)
    out = Path(args.cache) / "results.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.recipes.split(","):
        recipe = RECIPES[name]
        for kv in args.set:
            k, v = kv.split("=", 1)
            typ = type(getattr(Recipe(), k)) if getattr(Recipe(), k) is not None else float
            recipe = replace(recipe, **{k: (v if typ is str else (v == "1" or v == "True") if typ is bool
                                            else typ(v))})
        label = name + ("[" + ",".join(args.set) + "]" if args.set else "")
        for scen in args.scenarios.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                t0 = time.monotonic()
                new = (round_frames(scen[4:], cfg.size) if scen.startswith("dir:")
                       else render_frames(SCENARIOS[scen], 100 + seed, cfg.size, Path(args.cache), scen))
                rng = np.random.default_rng(seed + 7)
                n_rep = len(train0) if recipe.replay_all else int(round(recipe.replay * len(new)))
                pick_rep = rng.choice(len(train0), min(n_rep, len(train0)), replace=False)
                replay = train0.subset(np.sort(pick_rep))
                model.load_state_dict(theta0)
                finetune(model, recipe, new, replay, seed)
                ft = {k: v.clone() for k, v in model.state_dict().items()}
                rows = wise_curve(theta0, ft, model, sets, gate, pre, cfg.original_domain)
                a_star, m_star = pick(rows, base, args.tol)
                a_m, m_m = pick(rows, base, args.tol, "merge")
                m1 = rows[-1][1]

                def rel(m, k):
                    return (m[k] - base[k]) / base[k] * 100

                dt = time.monotonic() - t0
                print(f"{label:24s} {scen:6s} s{seed}  ft: shifted {m1['shifted']:.3f} "
                      f"({rel(m1, 'shifted'):+.1f}%) orig {rel(m1, 'original'):+.1f}% "
                      f"gate {rel(m1, 'gate'):+.1f}% | wise a={a_star:.2f}: "
                      f"shifted {m_star['shifted']:.3f} ({rel(m_star, 'shifted'):+.1f}%) orig "
                      f"{rel(m_star, 'original'):+.1f}% gate {rel(m_star, 'gate'):+.1f}% "
                      f"[n{m_star['night']:.3f} f{m_star['fog']:.3f} o{m_star['outdoor']:.3f}] | "
                      f"merge-set a={a_m:.2f}: "
                      f"shifted {rel(m_m, 'shifted'):+.1f}% orig {rel(m_m, 'original'):+.1f}% ({dt:.0f}s)",
                      flush=True)
                if args.curve:
                    for a, m in rows:
                        print(f"    a={a:.2f} shifted {rel(m, 'shifted'):+.1f}% orig "
                              f"{rel(m, 'original'):+.1f}% gate {rel(m, 'gate'):+.1f}% merge "
                              f"{rel(m, 'merge'):+.1f}% gate_d1 {rel(m, 'gate_d1'):+.1f}%")
                with out.open("a") as fh:
                    fh.write(json.dumps({"recipe": label, "config": asdict(recipe), "scenario": scen,
                                         "seed": seed, "tol": args.tol, "base": base, "ft": m1,
                                         "alpha": a_star, "wise": m_star, "alpha_merge": a_m,
                                         "wise_merge": m_m, "seconds": dt,
                                         "curve": [(a, m) for a, m in rows]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
