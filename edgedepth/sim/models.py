"""The workstation steps a simulated round runs on a model: evaluate a checkpoint, export it as a bundle.

Shared by the round-0 assets (edgedepth.sim.assets) and every later round (edgedepth.sim.cycle).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional

log = logging.getLogger(__name__)



def evaluate_model(model: Path, eval_sets: Dict[str, Path], original: str) -> Dict[str, Dict[str, float]]:
    """Metrics per domain, plus 'shifted' (all frames of the non-original domains) and 'original'."""
    from edgedepth.evaluation import evaluate, summarise

    res = evaluate(str(model), [str(p) for p in eval_sets.values()], batch_size=32)
    out = {d: dict(m) for d, m in res.per_domain.items()}
    shifted = [f for f in res.frames if f.domain != original]
    orig = [f for f in res.frames if f.domain == original]
    out["shifted"] = summarise(shifted)
    out["original"] = summarise(orig)
    return out


def export_bundle(checkpoint: Path, bundle: Path, parity_data: Path, extra: Dict[str, dict],
                  calibrate_data: Optional[Path] = None, threads: int = 1,
                  reference_data: Optional[List[Path]] = None, reference_frames: int = 600) -> Path:
    """checkpoint -> BUNDLE (model.onnx, optional INT8 cpu model, metrics.json, lineage.json, manifest);
    with `reference_data` (the model's training sets) also the selector's reference_embeddings.npz."""
    from edgedepth import bundle as bundle_mod
    from edgedepth.export.onnx import export_onnx

    if bundle.exists():
        shutil.rmtree(bundle)
    export_onnx(str(checkpoint), str(bundle), data=str(parity_data), parity_frames=8)
    if calibrate_data is not None:
        from edgedepth.calibrate.pipeline import calibrate_model
        from edgedepth.errors import GateRefused

        try:
            calibrate_model(str(bundle / bundle_mod.MODEL_FP32), str(calibrate_data), target="cpu",
                            n_frames=32, threads=threads, bench_rounds=10)
        except GateRefused as exc:  # the bundle then runs FP32; the report says why
            log.warning("INT8 calibration refused for %s: %s", bundle, exc)
        shutil.rmtree(bundle / ".cache", ignore_errors=True)
    for name, payload in extra.items():
        bundle_mod.write_json_atomic(bundle / name, payload)
    if reference_data:
        from edgedepth.runtime.reference import build_reference, save_reference

        save_reference(bundle, build_reference(reference_data, n=reference_frames))
    bundle_mod.write_manifest(bundle)
    return bundle
