"""Choose which layers to quantize for onnxruntime's CPU provider, and in which format, by measurement.

Per layer type (stem conv, depthwise 3x3 / 5x5, pointwise, heads, residual Add, Resize; each conv with
the ReLU that follows it, so the ReLU folds into the quantized conv) a model with only that type
quantized is timed against FP32. Types are then added in order of their own gain and every prefix is
timed; the fastest set, in the faster of QDQ and QOperator, wins. Depthwise convolutions are memory
bound and often lose (Q/DQ traffic costs more than INT8 saves) - the table in the report shows it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from edgedepth.calibrate import quantize as q
from edgedepth.calibrate.speed import interleaved_latency

from edgedepth.errors import require

log = logging.getLogger(__name__)


def layer_groups(pre_model: str) -> Dict[str, List[str]]:
    """Layer type -> node names, each conv's following ReLU attached to the conv's group."""
    onnx = require("onnx", "train")
    mp = onnx.load(str(pre_model), load_external_data=False)
    producer = {o: n for n in mp.graph.node for o in n.output}
    relu_after: Dict[str, List[str]] = {}
    for n in mp.graph.node:
        if n.op_type == "Relu" and n.input[0] in producer:
            relu_after.setdefault(producer[n.input[0]].name, []).append(n.name)
    groups = {}
    for kind, names in q.layer_types(pre_model).items():
        if kind == "relu":
            continue
        groups[kind] = names + [r for nm in names for r in relu_after.get(nm, [])]
    return groups


def select_cpu_layout(pre_model: str, ranges_cache: Path, method: str, inputs: np.ndarray,
                      workdir: str, rounds: int = 20, threads: int = 1,
                      accept: Optional[Callable[[str], Tuple[bool, Dict[str, Any]]]] = None
                      ) -> Dict[str, Any]:
    """Measure per layer type, pick the fastest (format, layer set) that `accept` (the gate) passes.

    Returns {"path", "format", "groups", "nodes", "speed", "per_type", "candidates"}.
    """
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    groups = layer_groups(pre_model)
    bench_in = inputs[: max(1, min(len(inputs), rounds))]

    def build(name: str, fmt: str, nodes: Sequence[str]) -> str:
        path = str(work / f"cpu-{fmt}-{name}.onnx")
        q.quantize_cpu(pre_model, path, ranges_cache, method, fmt, nodes)
        return path

    singles = {g: build(f"only-{g}", "qdq", nodes) for g, nodes in groups.items()}
    t1 = interleaved_latency([pre_model] + list(singles.values()), bench_in, rounds, threads=threads)
    fp32_ms = t1[pre_model]["median_ms"]
    per_type = {}
    for g, path in singles.items():
        ms = t1[path]["median_ms"]
        per_type[g] = {"nodes": len(groups[g]), "fp32_ms": round(fp32_ms, 3),
                       "only_this_int8_ms": round(ms, 3), "speedup": round(fp32_ms / ms, 3),
                       "saved_ms": round(fp32_ms - ms, 3)}
    order = sorted(groups, key=lambda g: -per_type[g]["saved_ms"])
    candidates: Dict[str, Dict[str, Any]] = {}
    for k in range(1, len(order) + 1):
        chosen = order[:k]
        nodes = [n for g in chosen for n in groups[g]]
        candidates["+".join(chosen)] = {"groups": chosen, "nodes": nodes, "format": "qdq",
                                        "path": build(f"prefix{k}", "qdq", nodes)}
    t2 = interleaved_latency([pre_model] + [c["path"] for c in candidates.values()], bench_in, rounds,
                             threads=threads)
    best_key = min(candidates, key=lambda key: t2[candidates[key]["path"]]["median_ms"])
    best = candidates[best_key]
    qop = dict(best, format="qoperator", path=build("best-qoperator", "qoperator", best["nodes"]))
    candidates[best_key + " (qoperator)"] = qop
    t3 = interleaved_latency([pre_model, best["path"], qop["path"]], bench_in, rounds, threads=threads)
    for cand in candidates.values():
        src = t3 if cand["path"] in t3 else t2
        ref = src[pre_model]["median_ms"]
        cand["median_ms"] = src[cand["path"]]["median_ms"]
        cand["fp32_ms"] = ref
        cand["speedup"] = ref / cand["median_ms"]
    ranked = sorted(candidates.items(), key=lambda kv: -kv[1]["speedup"])
    summary = {key: {"groups": c["groups"], "format": c["format"], "int8_ms": round(c["median_ms"], 3),
                     "fp32_ms": round(c["fp32_ms"], 3), "speedup": round(c["speedup"], 3)}
               for key, c in ranked}
    result: Dict[str, Any] = {"per_type": per_type, "candidates": summary, "threads": threads,
                              "rounds": rounds, "gate_tries": []}
    for key, cand in ranked:
        if cand["speedup"] <= 1.0 and result["gate_tries"]:
            break
        ok, info = accept(cand["path"]) if accept else (True, {})
        result["gate_tries"].append({"candidate": key, "passed": ok, **info})
        if ok:
            result.update(path=cand["path"], format=cand["format"], groups=cand["groups"],
                          nodes_quantized=len(cand["nodes"]), speedup=cand["speedup"],
                          fp32_ms=cand["fp32_ms"], int8_ms=cand["median_ms"], chosen=key)
            return result
    key, cand = ranked[0]
    result.update(path=cand["path"], format=cand["format"], groups=cand["groups"],
                  nodes_quantized=len(cand["nodes"]), speedup=cand["speedup"], fp32_ms=cand["fp32_ms"],
                  int8_ms=cand["median_ms"], chosen=key, gate_failed=True)
    return result


def new_workdir(parent: Optional[str] = None) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="edgedepth-cpu-", dir=parent)
