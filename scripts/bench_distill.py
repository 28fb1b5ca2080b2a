#!/usr/bin/env python
"""Distillation benchmark: teacher labels instead of ground truth, metric alignment, and the fleet loop.

Synthetic indoor frames at 64x96 (the network input): LABELLED (teacher training), UNLABELLED (the
students see only their RGB), TEST (held out; its ground truth is used only for scoring).

1. Distillation: `base` is trained on LABELLED (the teacher), labels UNLABELLED through
   `edgedepth train --teacher`, and `small` is trained on those labels alone. Prints the held-out
   d1/AbsRel of both and the gap (target: student d1 within 0.02 of the teacher).
2. Alignment: the same teacher's output turned into relative inverse depth with a random scale and
   shift per frame (a relative teacher), plus metric points on 0.5 % of the pixels with 1 % noise (a
   sparse depth sensor). The relative labels are aligned per frame (robust scale and shift) and a
   `small` student is trained on them (target: d1 within 0.03 of the metric-teacher student). Without
   the points the metric run is refused (the message is printed) and a relative run trains with the
   scale-and-shift-invariant loss; its checkpoint says depth_units "relative" and it is scored after
   per-frame alignment to the ground truth.
3. The fleet simulation (edgedepth simulate) with teacher labels on the uploaded frames instead of their
   ground truth, hard vs random selection at an equal budget, at a reduced scale (printed). Its teacher
   is a `base` trained on labelled frames of every domain the fleet sees (a stand-in for a foundation
   model trained on broad data); the round-0 model the fleet starts from saw indoor frames only.

    python scripts/bench_distill.py [--workdir edgedepth-distill] [--stages distill,align,sim] ...

The defaults are the recorded run (docs/teachers.md): about 50 minutes for the teacher and students and
30 for the simulation on a busy 2-core machine.

Stages whose output is already in WORKDIR (a checkpoint with its run.json, a finished simulation) are
reused. Exit status 0 whether or not the targets are met: the figures are the result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = (64, 96)


def say(text: str) -> None:
    print(text, flush=True)


def synth(out: Path, domain: str, frames: int, seed: int) -> Path:
    from edgedepth.data.synth import write_synth_dataset

    if not (out / "meta.json").is_file():
        write_synth_dataset(out, domain, frames, SIZE[0], SIZE[1], seed, progress=False)
    return out


def rgb_only(src: Path, out: Path) -> Path:
    """The frames of `src` without their depth (what an unlabelled recording gives)."""
    if not (out / "meta.json").is_file():
        shutil.copytree(src / "rgb", out / "rgb", dirs_exist_ok=True)
        shutil.copy(src / "meta.json", out / "meta.json")
    return out


def sparse_points(src: Path, out: Path, fraction: float, noise: float, seed: int) -> Path:
    """`src` with its depth replaced by metric points on `fraction` of the pixels, `noise` relative noise."""
    from edgedepth.data.dataset import open_dataset
    from edgedepth.data.formats import write_meta, write_sample

    if (out / "meta.json").is_file():
        return out
    rng = np.random.default_rng(seed)
    ds = open_dataset(str(src))
    for i in range(len(ds)):
        s = ds[i]
        valid = np.flatnonzero(s.depth > 0)
        n = int(fraction * s.depth.size)
        pick = rng.choice(valid, min(n, valid.size), replace=False)
        pts = np.zeros_like(s.depth)
        pts.flat[pick] = s.depth.flat[pick] * (1 + noise * rng.standard_normal(pick.size))
        write_sample(out, s.name, s.rgb, pts, depth_format="npy")
    write_meta(out, json.loads((src / "meta.json").read_text()))
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgedepth", *args], capture_output=True, text=True)


def train(out: Path, data, model: str, minutes: float, extra=()) -> Path:
    """`edgedepth train` unless OUT already holds a finished run; returns best.pt."""
    if not (out / "run.json").is_file():
        res = cli("train", "--data", ",".join(str(d) for d in data), "--model", model, "--size",
                  f"{SIZE[0]}x{SIZE[1]}", "--minutes", str(minutes), "--out", str(out), "--no-progress",
                  *extra)
        if res.returncode != 0:
            raise SystemExit(f"training {out} failed:\n{res.stderr[-3000:]}")
        for line in res.stdout.splitlines():
            if line.startswith("teacher "):
                say(f"  {line}")
    return out / "best.pt"


def score(model: Path, test: Path, relative: bool = False) -> dict:
    """Held-out metrics of a checkpoint; a relative model is aligned to each frame's ground truth."""
    from edgedepth.data.dataset import open_dataset
    from edgedepth.metrics import frame_metrics, mean_metrics
    from edgedepth.predictor import Predictor
    from edgedepth.teachers.score import aligned_to_ground_truth

    pred = Predictor(str(model))
    ds = open_dataset(str(test))
    rows = []
    samples = [ds[i] for i in range(len(ds))]
    for s0 in range(0, len(samples), 32):
        part = samples[s0:s0 + 32]
        for s, p in zip(part, pred.predict_many([x.rgb for x in part])):
            d = aligned_to_ground_truth(1.0 / p.depth, "disparity", s.depth) if relative else p.depth
            rows.append(frame_metrics(d, s.depth, None, 0.1, 40.0))
    return mean_metrics(rows)


class PerturbedTeacher:
    """A metric teacher's output as relative inverse depth: out = (1/d - shift) / scale, with a random
    scale (log-uniform 0.1..10) and shift (up to +-30 % of the frame's median inverse depth) per frame."""

    kind = "disparity"
    backend = "bench"
    batch_size = 16

    def __init__(self, metric_teacher, seed: int) -> None:
        self.inner, self.seed = metric_teacher, seed
        self.source = f"relative({metric_teacher.source})"
        self.identity = f"{metric_teacher.identity}-perturbed-{seed}"
        self.frames_run = 0

    def predict_many(self, images):
        from edgedepth.teachers.cache import frame_hash

        out = []
        for img, d in zip(images, self.inner.predict_many(images)):
            rng = np.random.default_rng([self.seed, int(frame_hash(img)[:8], 16)])
            inv = 1.0 / d
            scale = float(np.exp(rng.uniform(np.log(0.1), np.log(10.0))))
            shift = float(rng.uniform(-0.3, 0.3) * np.median(inv))
            out.append(((inv - shift) / scale).astype(np.float32))
        self.frames_run += len(images)
        return out


def label(teacher, src: Path, out: Path, target: str):
    from edgedepth.teachers import LabelPolicy, TeacherLabeler, label_folder

    if out.exists():
        shutil.rmtree(out)
    return label_folder(TeacherLabeler(teacher, LabelPolicy(target=target)), src, out)


def fmt(m: dict) -> str:
    return f"d1 {m['d1']:.4f}  AbsRel {m['abs_rel']:.4f}  RMSE {m['rmse']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="edgedepth-distill")
    ap.add_argument("--labelled", type=int, default=800)
    ap.add_argument("--unlabelled", type=int, default=2400)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--teacher-minutes", type=float, default=8.0)
    ap.add_argument("--student-minutes", type=float, default=10.0)
    ap.add_argument("--relative-minutes", type=float, default=2.0)
    ap.add_argument("--stages", default="distill,align,sim",
                    help="Which parts to run (their figures are printed): distill, align, sim. Parts run "
                         "as separate calls on one WORKDIR reuse each other's finished stages.")
    ap.add_argument("--sim-teacher-minutes", type=float, default=6.0)
    ap.add_argument("--sim-frames", type=int, default=1000)
    ap.add_argument("--sim-rounds", type=int, default=2)
    ap.add_argument("--sim-finetune-steps", type=int, default=600)
    args = ap.parse_args()
    stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    if "align" in stages:
        stages.add("distill")  # the aligned student is compared with the metric-teacher student
    t0 = time.monotonic()
    wd = Path(args.workdir)
    data = wd / "data"
    # 1. distillation -----------------------------------------------------------------------------
    m_teacher = m_student = m_aligned = m_relative = None
    if stages & {"distill", "align"}:
        say(f"[data] synthetic indoor frames at {SIZE[0]}x{SIZE[1]}: labelled {args.labelled}, unlabelled "
            f"{args.unlabelled}, held-out test {args.test} (disjoint seeds)")
        labelled = synth(data / "labelled", "indoor", args.labelled, 11)
        unl_full = synth(data / "unlabelled-source", "indoor", args.unlabelled, 12)
        test = synth(data / "test", "indoor", args.test, 13)
        unlabelled = rgb_only(unl_full, data / "unlabelled")
        with_points = sparse_points(unl_full, data / "unlabelled-points", 0.005, 0.01, 5)
        say(f"[1] teacher: base, {args.teacher_minutes:g} min on the labelled frames")
        teacher_ckpt = train(wd / "teacher", [labelled], "base", args.teacher_minutes)
    if "distill" in stages:
        say(f"[1] student: small, {args.student_minutes:g} min on the teacher's labels of the unlabelled "
            "frames (edgedepth train --teacher)")
        student_ckpt = train(wd / "student-metric", [unlabelled], "small", args.student_minutes,
                             ["--teacher", str(teacher_ckpt), "--label-cache", str(wd / "label-cache")])
        m_teacher, m_student = score(teacher_ckpt, test), score(student_ckpt, test)
    if "align" in stages:
        m_aligned, m_relative, refusal, units = alignment(args, wd, teacher_ckpt, with_points, unlabelled,
                                                          test)
    sim_lines, finals = simulation(args, wd, data) if "sim" in stages else ([], {})

    # figures ---------------------------------------------------------------------------------------
    say("")
    if m_teacher is not None:
        say(f"== held-out indoor test ({args.test} frames, ground truth used only here) ==")
        say(f"teacher  (base, trained on ground truth)           {fmt(m_teacher)}")
        say(f"student  (small, teacher labels only)              {fmt(m_student)}")
        gap = m_teacher["d1"] - m_student["d1"]
        say(f"distillation: student d1 - teacher d1 = {-gap:+.4f}  (target: within 0.02) -> "
            + ("PASS" if gap <= 0.02 else "FAIL"))
    if m_aligned is not None:
        say(f"aligned student (relative teacher + 0.5 % points)  {fmt(m_aligned)}")
        gap2 = m_student["d1"] - m_aligned["d1"]
        say(f"alignment: aligned d1 - metric-teacher student d1 = {-gap2:+.4f}  (target: within 0.03) -> "
            + ("PASS" if abs(gap2) <= 0.03 else "FAIL"))
        say(f"relative student (no metric points; scored after per-frame scale/shift to ground truth)  "
            f"{fmt(m_relative)}  depth_units={units}")
        say(f"metric run without metric points: {refusal.split(':')[0]}")
    if sim_lines:
        say("")
        say(f"== fleet simulation, teacher labels on uploaded frames (seed 0, 4 devices x {args.sim_frames} "
            f"frames, {args.sim_rounds} rounds, {args.sim_finetune_steps} fine-tune steps; reduced scale) ==")
        for line in sim_lines:
            say(line)
        say(f"last round shifted AbsRel: hard {finals['hard']:.4f}  random {finals['random']:.4f} -> hard "
            + ("beats" if finals["hard"] < finals["random"] else "does NOT beat") + " random")
    say(f"total time: {time.monotonic() - t0:.0f} s")


def alignment(args, wd: Path, teacher_ckpt: Path, with_points: Path, unlabelled: Path, test: Path):
    from edgedepth.errors import ConfigError
    from edgedepth.teachers import open_teacher

    rel_teacher = PerturbedTeacher(open_teacher(str(teacher_ckpt)), seed=7)
    rep = label(rel_teacher, with_points, wd / "labels-aligned", "metric")
    fits = json.loads((wd / "labels-aligned" / "meta.json").read_text())["frames"]
    npts = [f["alignment"]["points"] for f in fits.values() if "alignment" in f]
    say(f"[2] relative teacher aligned to metric points: {rep.counts}; points per frame "
        f"{min(npts)}..{max(npts)} ({100 * np.mean(npts) / (SIZE[0] * SIZE[1]):.2f} % of the pixels)")
    aligned_ckpt = train(wd / "student-aligned", [wd / "labels-aligned"], "small", args.student_minutes)
    m_aligned = score(aligned_ckpt, test)
    try:
        label(rel_teacher, unlabelled, wd / "labels-refused", "metric")
        refusal = "NOT REFUSED"
    except ConfigError as exc:
        refusal = f"refused: {exc}"
    say(f"[2] metric labels from the relative teacher without metric points: {refusal}")
    rep_rel = label(rel_teacher, unlabelled, wd / "labels-relative", "relative")
    relative_ckpt = train(wd / "student-relative", [wd / "labels-relative"], "small", args.relative_minutes,
                          ["--target", "relative"])
    from edgedepth.checkpoint import load_checkpoint

    units = load_checkpoint(relative_ckpt).get("depth_units")
    m_relative = score(relative_ckpt, test, relative=True)
    say(f"[2] relative run: labels {rep_rel.counts}; checkpoint depth_units = {units!r}")

    return m_aligned, m_relative, refusal, units


def simulation(args, wd: Path, data: Path):
    """Part 3: the fleet simulation with teacher labels (reused when WORKDIR/sim finished with these args)."""
    mix = {"indoor": 0.8, "night": 0.2 / 3, "fog": 0.2 / 3, "outdoor": 0.2 / 3}
    parts = [synth(data / f"sim-teacher-{d}", d, max(40, int(round(args.labelled * p))), 21 + i)
             for i, (d, p) in enumerate(mix.items())]
    counts = ", ".join(f"{p.name[len('sim-teacher-'):]} {len(list((p / 'rgb').iterdir()))}" for p in parts)
    say(f"[3] simulation teacher: base, {args.sim_teacher_minutes:g} min on labelled frames of every "
        f"fleet domain ({counts})")
    sim_teacher = train(wd / "sim-teacher", parts, "base", args.sim_teacher_minutes)
    sim_dir = wd / "sim"
    sim_args = ["--workdir", str(sim_dir), "--seeds", "0", "--strategies", "hard,random",
                "--rounds", str(args.sim_rounds), "--frames", str(args.sim_frames),
                "--finetune-steps", str(args.sim_finetune_steps), "--label-source", "teacher",
                "--teacher", str(sim_teacher), "--no-progress"]
    say("[3] edgedepth simulate " + " ".join(sim_args))
    done = sim_dir / "bench-output.json"
    if not (done.is_file() and json.loads(done.read_text())["args"] == sim_args):
        res = cli("simulate", *sim_args)
        if res.returncode != 0:
            raise SystemExit(f"simulation failed:\n{res.stderr[-3000:]}")
        done.write_text(json.dumps({"args": sim_args, "stdout": res.stdout}))
    sim_lines = json.loads(done.read_text())["stdout"].rstrip().splitlines()
    result = json.loads((sim_dir / "simulation.json").read_text())
    from edgedepth.sim.report import curve

    finals = {s: curve(result, s, "0", "shifted", "abs_rel")[-1] for s in ("hard", "random")}
    return sim_lines, finals


if __name__ == "__main__":
    main()
