"""PNG chart of a bench report: per input size, latency bars (p50, with a p99 whisker) per runtime,
accuracy written beside each bar, the runtimes that did not run listed with their reason."""

from __future__ import annotations

import math
from pathlib import Path

from edgedepth.errors import require


def write_chart(report, path: str) -> Path:
    matplotlib = require("matplotlib", "train")
    matplotlib.use("Agg")  # no display on servers and devices
    import matplotlib.pyplot as plt

    sizes = report.sizes
    heights = [max(2.0, 0.55 * sum(1 for r in s.rows if r.get("latency_ms"))
                   + 0.18 * sum(1 for r in s.rows if not r.get("latency_ms")) + 1.2) for s in sizes]
    fig, axes = plt.subplots(len(sizes), 1, figsize=(11, sum(heights) + 0.9), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, s in zip(axes[:, 0], sizes):
        rows = [r for r in s.rows if r.get("latency_ms")]
        missing = [r for r in s.rows if not r.get("latency_ms")]
        labels = [f"{r['label']}" for r in rows]
        p50 = [r["latency_ms"]["p50"] for r in rows]
        p99 = [r["latency_ms"]["p99"] for r in rows]
        y = list(range(len(rows)))[::-1]
        colors = ["#4c72b0" if r["engine"] == "pytorch" else "#dd8452" if r["engine"] == "opencv"
                  else "#55a868" if r["precision"] != "int8" else "#8172b2" for r in rows]
        ax.barh(y, p50, color=colors, height=0.6, label="p50")
        ax.errorbar(p99, y, xerr=[[max(0.0, b - a) for a, b in zip(p50, p99)], [0] * len(rows)],
                    fmt="|", color="black", capsize=0, lw=1.2)
        ax.set_yticks(y)
        ax.set_yticklabels(labels)
        if p50 and max(p99) / max(min(p50), 1e-9) > 30:
            ax.set_xscale("log")
        top = max(p99) if p99 else 1.0
        for yi, r, a, b in zip(y, rows, p50, p99):
            acc = r.get("accuracy") or {}
            text = f"p50 {a:.1f} / p99 {b:.1f} ms"
            if acc:
                text += f"   AbsRel {acc['abs_rel']:.3f}  \u03b41 {acc['d1']:.3f}"
            ax.text(b * (1.05 if ax.get_xscale() == "log" else 1.0) + (0 if ax.get_xscale() == "log"
                    else 0.01 * top), yi, text, va="center", fontsize=8)
        right = top * (40 if ax.get_xscale() == "log" else 2.1)
        ax.set_xlim(right=right if math.isfinite(right) else None)
        label = "latency per frame, ms (batch 1); bar = p50, whisker = p99"
        if missing:
            label += "\n" + "\n".join(f"not run - {r['label']}: {r['status']}, {str(r.get('reason'))[:95]}"
                                       for r in missing)
        ax.set_xlabel(label, loc="left", fontsize=8)
        ax.set_title(f"input {s.height}x{s.width}, {report.threads} threads, {report.runs} runs/runtime "
                     f"(round-robin, medians)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"edgedepth bench: {report.model.get('name')} ({report.model.get('size')}) on "
                 f"{report.machine.get('cpu')}", fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
