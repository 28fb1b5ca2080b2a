"""Plain-text table and JSON of a `edgedepth bench` report (edgedepth.bench.suite.BenchReport)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List

from edgedepth.machine import format_machine

COLUMNS = ("runtime", "prec", "p50 ms", "p95 ms", "p99 ms", "fps", "peak MiB", "+model MiB", "AbsRel",
           "delta1", "vs ref")


def _num(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def _cells(row: Dict[str, Any]) -> List[str]:
    lat = row.get("latency_ms") or {}
    mem = row.get("memory") or {}
    acc = row.get("accuracy") or {}
    diff = (row.get("rel_diff_vs") or {}).get("mean_rel_depth_diff")
    return [row["label"], row.get("precision") or "-", _num(lat.get("p50"), ".2f"),
            _num(lat.get("p95"), ".2f"), _num(lat.get("p99"), ".2f"), _num(lat.get("fps"), ".1f"),
            _num(mem.get("peak_rss_mb"), ".0f"),
            _num(mem.get("delta_rss_mb"), ".0f"), _num(acc.get("abs_rel"), ".4f"), _num(acc.get("d1"), ".4f"),
            "ref" if row.get("status") == "ok" and diff is None and acc else _num(diff, ".1e")]


def format_table(rows: List[Dict[str, Any]]) -> str:
    measured = [_cells(r) for r in rows if r["status"] == "ok" and r.get("latency_ms")]
    widths = [max([len(c)] + [len(m[i]) for m in measured]) for i, c in enumerate(COLUMNS)]
    widths[0] = max(widths[0], max((len(r["label"]) for r in rows), default=0))

    def line(cells: List[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))

    out = [line(list(COLUMNS)), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in measured]
    for r in rows:
        if not (r["status"] == "ok" and r.get("latency_ms")):
            out.append(f"{r['label'].ljust(widths[0])}  {r['status']}: {r.get('reason') or 'no figures'}")
    notes = [f"  {r['label']}: {r['note']}" for r in rows if r.get("note") and r["status"] == "ok"]
    notes += [f"  {r['label']}: memory probe failed - {r['memory']['error']}" for r in rows
              if isinstance(r.get("memory"), dict) and "error" in r["memory"]]
    if notes:
        out += ["notes:"] + notes
    return "\n".join(out)


def format_report(report) -> str:
    """The whole report as text: machine, one table per size, speed-ups, the live loop."""
    lines = [format_machine(report.machine),
             f"bundle: {report.bundle} (model {report.model.get('name')} v{report.model.get('version')}, "
             f"size {report.model.get('size')})",
             f"threads: {report.threads} for every runtime; {report.runs} timed runs each in round-robin "
             f"blocks of {report.block} (1 untimed warm-up run per block); latency = one inference, batch 1",
             f"accuracy: {report.data}; metrics at ground-truth resolution; 'vs ref' = mean relative depth "
             "difference to the reference runtime's output",
             "memory: process RSS high-water mark in a fresh subprocess per runtime; +model = above the "
             "imported library"]
    for s in report.sizes:
        done = sorted({r["latency_ms"]["runs"] for r in s.rows if r.get("latency_ms")})
        cut = f" (timing budget reached: {done[0]} of {report.runs} runs each)" if done and \
            done[0] < report.runs else ""
        lines += ["", f"input {s.height}x{s.width}{cut}", format_table(s.rows)]
        ratios = _ratio_lines(s)
        lines += ratios
    if report.loop:
        lp = report.loop
        lines.append("")
        if "error" in lp:
            lines.append(f"live loop: could not be measured - {lp['error']}")
        else:
            rng = lp.get("efficiency_range") or [float("nan")] * 2
            lines.append(f"live loop ({lp['backend']}): pipeline efficiency {lp['efficiency']:.3f} = loop "
                         f"fps / bare backend fps (median of {lp['rounds']} interleaved rounds of "
                         f"{lp['frames_per_round']} frames, per-round range {rng[0]:.3f}..{rng[1]:.3f}; "
                         f"medians loop {lp['loop_fps']:.1f} fps, bare {lp['bare_fps']:.1f} fps; "
                         f"{lp['source']})")
    lines.append(f"\nbench took {report.elapsed_s:.1f} s")
    return "\n".join(lines)


def _ratio_lines(s) -> List[str]:
    base = s.row("pytorch")
    ort = s.row("ort-fp32")
    if base is None or "latency_ms" not in base:
        reason = base.get("reason") if base else "not requested"
        return [f"speed-up vs PyTorch eager: not available ({reason})"]
    out = []
    if ort is not None and "latency_ms" in ort:
        r = base["latency_ms"]["p50"] / ort["latency_ms"]["p50"]
        out.append(f"ONNX Runtime FP32 vs PyTorch eager: {r:.2f}x faster at p50 "
                   f"({ort['latency_ms']['p50']:.2f} ms vs {base['latency_ms']['p50']:.2f} ms, same threads)")
    others = [f"{r['label']} {base['latency_ms']['p50'] / r['latency_ms']['p50']:.2f}x" for r in s.rows
              if r["key"] not in ("pytorch", "ort-fp32") and r.get("latency_ms")]
    if others:
        out.append("speed-up vs PyTorch eager (p50): " + ", ".join(others))
    return out


def _clean(obj: Any) -> Any:
    """NaN/inf -> None so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(report, path: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean(report.to_dict()), indent=2, default=str) + "\n")
    return out
