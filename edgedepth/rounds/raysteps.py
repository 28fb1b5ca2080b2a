"""Round building on a Ray cluster: `edgedepth round build --ray ADDRESS` (the `scale` extra).

For a store too big for one machine the two heavy steps run as Ray Data pipelines on the cluster's
workers, each worker opening the store itself (S3, or a directory every node mounts):
1. the embedding for near-duplicate removal (edgedepth.rounds.build.thumbnail of every labelled frame);
2. labelling and encoding of the frames kept: uploaded depth decoded, or a teacher's pseudo-label (the
   teacher is loaded once per worker; `gpus_per_worker` > 0 puts those workers on GPUs).
The driver streams the store's index (metadata only, no pixels), de-duplicates and splits exactly as
`build_round` does (same helpers, same order, same seed), writes the files the workers return and the same
lineage.json, plus the engine used. Ray's scheduler, retries and backpressure do the distribution.
Self-supervised labels are not offered on this path.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from edgedepth.errors import ConfigError, DataError, require
from edgedepth.fsutil import DeferredFsync, write_bytes_atomic
from edgedepth.rounds import build as rb
from edgedepth.rounds import labels
from edgedepth.rounds.spill import scratch_dir
from edgedepth.rounds.splitfiles import SplitFiles

log = logging.getLogger(__name__)
BATCH = 64


def _slim(meta: dict, label: str) -> dict:
    """What the workers and the lineage need of an item (no pixels)."""
    up = rb.uploaded_label(meta)
    entry = meta["files"][up[1]] if up else {}
    return {"id": meta["id"], "rgb": labels.rgb_name(meta), "label": label, "depth": up[1] if up else "",
            "units": entry.get("units") or "", "device_id": str(meta.get("device_id", "?")),
            "captured_at": str(meta["captured_at"]), "score": meta.get("score", 0.0),
            "domain": meta.get("domain"), "intrinsics": json.dumps(meta.get("intrinsics"))}


class _Worker:
    """A Ray Data actor: opens the store once, then embeds or labels batches of items."""

    def __init__(self, store: str, endpoint_url: Optional[str], teacher: Optional[str] = None) -> None:
        from edgedepth.fleet.store import open_store

        self.store = open_store(store, endpoint_url=endpoint_url)
        self.teacher = None
        if teacher:
            from edgedepth.predictor import load_predictor

            self.teacher = load_predictor(teacher)

    def _rgb(self, item_id: str, name: str) -> np.ndarray:
        return labels.read_item_image(self.store, {"id": item_id}, name)


class Embedder(_Worker):
    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        thumbs, ok = [], []
        for item_id, name in zip(batch["id"], batch["rgb"]):
            try:
                thumbs.append(rb.thumbnail(self._rgb(str(item_id), str(name))))
                ok.append(True)
            except (DataError, KeyError, ValueError) as exc:
                log.warning("skipping item %s: %s", str(item_id)[:12], exc)
                thumbs.append(np.zeros(256, np.float32))
                ok.append(False)
        return {"id": batch["id"], "thumb": np.stack(thumbs), "ok": np.array(ok)}


class Labeller(_Worker):
    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        import cv2

        from edgedepth.data.formats import clean_depth

        rgbs, depths, fmts, errors = [], [], [], []
        for i, item_id in enumerate(batch["id"]):
            item_id = str(item_id)
            try:
                rgb = self._rgb(item_id, str(batch["rgb"][i]))
                if batch["depth"][i]:
                    name = str(batch["depth"][i])
                    meta = {"id": item_id, "files": {name: {"units": str(batch["units"][i]) or None}}}
                    depth = labels.read_depth(self.store, meta, name, rgb.shape[:2])
                else:
                    depth = self.teacher.predict(rgb).depth.astype(np.float32)
                d = clean_depth(depth)
                if d.max(initial=0) <= 65.0:
                    enc, fmt = cv2.imencode(".png", np.round(d * 1000).astype(np.uint16))[1].tobytes(), "png"
                else:
                    import io

                    buf = io.BytesIO()
                    np.save(buf, d, allow_pickle=False)
                    enc, fmt = buf.getvalue(), "npy"
                rgbs.append(cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes())
                depths.append(enc)
                fmts.append(fmt)
                errors.append("")
            except (DataError, KeyError, ValueError) as exc:
                rgbs.append(b"")
                depths.append(b"")
                fmts.append("")
                errors.append(str(exc) or type(exc).__name__)
        return {"id": batch["id"], "rgb_png": np.array(rgbs, dtype=object),
                "depth_bytes": np.array(depths, dtype=object), "depth_format": np.array(fmts),
                "error": np.array(errors)}


def _connect(address: str):
    """The ray module (with Ray Data) connected to `address`."""
    ray = require("ray", "scale")
    require("ray.data", "scale")
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    return ray


@DeferredFsync()
def build_round_ray(cfg: "rb.RoundConfig", address: str, workers: int = 2, gpus_per_worker: float = 0.0,
                    progress=None) -> "rb.RoundReport":
    """`build_round` with the embedding and labelling steps on Ray (`address`: a cluster address such as
    ray://head:10001 or auto, or `local` to start one on this machine)."""
    from edgedepth import __version__
    from edgedepth.fleet.store import open_store

    cfg.validate()
    if cfg.self_supervised:
        raise ConfigError("--self-supervised labels are not built on Ray; run without --ray")
    if workers < 1 or gpus_per_worker < 0:
        raise ConfigError("--ray-workers must be >= 1 and --ray-gpus >= 0")
    t0 = time.monotonic()
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not empty; choose a new round folder")
    report = rb.RoundReport(out=str(out))
    records: List[dict] = []
    store = open_store(cfg.store, endpoint_url=cfg.endpoint_url)
    try:
        for meta in store.iter_items(since=cfg.since):  # the index only: metadata, no pixels
            report.ingested += 1
            if progress is not None:
                progress(1)
            up = rb.uploaded_label(meta)
            label = up[0] if up else ("teacher" if cfg.teacher else None)
            if label is None:
                report.unlabelled += 1
                continue
            try:
                rb.group_key(meta, cfg.time_block_s)
                records.append(_slim(meta, label))
            except (DataError, KeyError, ValueError, TypeError) as exc:
                report.unreadable += 1
                log.warning("skipping item %s: %s", str(meta.get("id"))[:12], exc)
    finally:
        store.close()
    if not records:
        raise DataError(f"no labelled frames in the store {cfg.store} ({report.ingested} item(s) read, "
                        f"{report.unlabelled} without depth): upload frames with depth or pass --teacher")
    ray = _connect(address)

    args = (cfg.store, cfg.endpoint_url)
    emb = ray.data.from_items([{"id": r["id"], "rgb": r["rgb"]} for r in records]).map_batches(
        Embedder, fn_constructor_args=args, concurrency=workers, batch_size=BATCH, batch_format="numpy")
    thumbs: Dict[str, Optional[np.ndarray]] = {}
    for row in emb.iter_rows():
        thumbs[str(row["id"])] = np.asarray(row["thumb"], np.float32) if row["ok"] else None
    report.unreadable += sum(1 for t in thumbs.values() if t is None)
    cands = [r for r in records if thumbs.get(r["id"]) is not None]
    cands.sort(key=lambda r: (r["captured_at"], r["id"]))  # as build_round: a fixed order
    scores = [float(r["score"]) if isinstance(r["score"], (int, float)) and np.isfinite(r["score"]) else 0.0
              for r in cands]
    keep = rb.dedupe([thumbs[r["id"]] for r in cands], scores, cfg.dedupe_distance)
    report.duplicates = len(cands) - len(keep)
    cands = [dict(cands[i], score=scores[i]) for i in keep]
    sides = rb.split_groups(cands, cfg.val_fraction, cfg.time_block_s, cfg.seed)
    side_of = {r["id"]: s for r, s in zip(cands, sides)}
    by_id = {r["id"]: r for r in cands}

    gpu = {"num_gpus": gpus_per_worker} if gpus_per_worker > 0 else {}
    lab = ray.data.from_items(cands).map_batches(
        Labeller, fn_constructor_args=(*args, cfg.teacher), concurrency=workers, batch_size=BATCH,
        batch_format="numpy", **gpu)
    rows: Dict[str, List[dict]] = {"train": [], "val": []}
    groups: Dict[str, set] = {"train": set(), "val": set()}
    for row in lab.iter_rows():
        r = by_id[str(row["id"])]
        if row["error"]:
            report.unreadable += 1
            log.warning("skipping item %s: %s", r["id"][:12], row["error"])
            continue
        side = side_of[r["id"]]
        root = out if side == "train" else out / rb.VAL_DIR
        name = rb._frame_name(r["id"])
        write_bytes_atomic(root / "rgb" / f"{name}.png", bytes(row["rgb_png"]))
        write_bytes_atomic(root / "depth" / f"{name}.{row['depth_format']}", bytes(row["depth_bytes"]))
        rows[side].append(dict(name=name, domain=r["domain"], label=r["label"], item=r["id"],
                               device_id=r["device_id"], captured_at=r["captured_at"], score=r["score"],
                               intrinsics=json.loads(r["intrinsics"]), replay_of=None))
        groups[side].add(rb.group_key(r, cfg.time_block_s))
        report.labelled[r["label"]] = report.labelled.get(r["label"], 0) + 1
        report.devices[r["device_id"]] = report.devices.get(r["device_id"], 0) + 1
    if not rows["train"] and not rows["val"]:
        raise DataError(f"no frame of {cfg.store} could be read; see the warnings above")
    with scratch_dir(out) as work:
        files = SplitFiles(work, lineage_keys=("item", "label", "domain", "device_id", "captured_at",
                                               "replay_of"))
        try:
            for side in rows:  # in the order build_round writes them
                for r in sorted(rows[side], key=lambda x: (x["captured_at"], x["item"])):
                    files.add(side, r)
            replay_sources = rb.write_splits(cfg, out, files, groups, report)
            report.seconds = time.monotonic() - t0
            lineage = {
                "format": rb.FORMAT, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "code_version": __version__,
                "config": {k: (list(v) if isinstance(v, (list, tuple)) else v)
                           for k, v in asdict(cfg).items()},
                "engine": {"ray": address, "workers": workers, "gpus_per_worker": gpus_per_worker},
                "teacher": {"path": cfg.teacher, "sha256": _sha(cfg.teacher)} if cfg.teacher else None,
                "self_supervision": None, "replay_sources": replay_sources, "report": asdict(report),
            }
            files.write_lineage(out / rb.LINEAGE, lineage)
        finally:
            files.close()
    log.info(report.summary())
    return report


def _sha(path: str) -> str:
    from edgedepth.fsutil import file_sha256

    return file_sha256(path)
