"""Fixtures for the data browser tests and benchmark: a store of real items, rounds, a registry."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from edgedepth.spool import SCHEMA, compute_item_id

DEVICES = ("cam-north", "cam-south", "jetson-07")
DOMAINS = ("indoor", "outdoor", "night")


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _npy(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, arr.astype(np.float32), allow_pickle=False)
    return out.getvalue()


def scene(i: int, h: int = 96, w: int = 128) -> Tuple[np.ndarray, np.ndarray]:
    """A readable synthetic frame: a floor/wall scene with a box, and its metric depth."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = h * (0.35 + 0.2 * rng.random())
    depth = np.where(yy > horizon, 1.0 + 12.0 * (h - yy) / (h - horizon + 1e-3), 14.0).astype(np.float32)
    depth = np.clip(depth, 0.6, 14.0)
    bx, by, bw, bh = int(rng.integers(10, w - 50)), int(horizon - 10), int(rng.integers(20, 40)), 40
    depth[by:by + bh, bx:bx + bw] = float(rng.uniform(1.2, 4.0))
    base = np.array([rng.integers(60, 200) for _ in range(3)], np.float32)
    shade = (1.0 - depth / 16.0)[..., None]
    rgb = np.clip(base * (0.35 + 0.65 * shade) + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    return rgb, depth


def make_item(i: int, device: Optional[str] = None, domain: Optional[str] = None, with_pred: bool = True,
              captured: Optional[str] = None,
              corrupt_rgb: bool = False) -> Tuple[str, Dict[str, bytes], dict]:
    rgb, depth = scene(i)
    files = {"rgb.png": b"\x89PNG not really" if corrupt_rgb else _png(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
             "depth.png": _png(np.clip(depth * 1000, 0, 65535).astype(np.uint16))}
    kinds = {"rgb.png": ("rgb", None), "depth.png": ("depth_sensor", "mm_uint16")}
    if with_pred:
        pred = depth * (1.0 + 0.15 * np.sin(np.arange(depth.shape[1]) / 9.0))[None, :]
        edges = np.abs(cv2.Laplacian(np.log(depth), cv2.CV_32F, ksize=3))
        unc = cv2.GaussianBlur(edges, (7, 7), 2) + np.abs(np.log(pred / depth)) + 0.02
        files["pred.npy"], kinds["pred.npy"] = _npy(pred), ("depth_pred", "m_float32")
        files["uncertainty.npy"], kinds["uncertainty.npy"] = _npy(unc), ("uncertainty", None)
    entries = {}
    for name, data in files.items():
        kind, units = kinds[name]
        entries[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "kind": kind,
                         "offset": 0, "units": units}
    item_id = compute_item_id(entries)
    device = device or DEVICES[i % len(DEVICES)]
    meta = {
        "schema": SCHEMA, "id": item_id, "files": entries, "device_id": device,
        "model": {"name": "edgedepth-small", "version": str(3 + i % 2), "sha256": "ab" * 32},
        "captured_at": captured or f"2026-11-24T{8 + i % 10:02d}:{i % 60:02d}:00.000Z",
        "score": round(0.05 + (i * 37 % 100) / 40.0, 4),
        "scores": {"uncertainty": round(0.02 + (i * 13 % 50) / 100.0, 4),
                   "temporal": round((i * 7 % 30) / 300.0, 4),
                   "novelty": round((i * 11 % 20) / 10.0, 4)},
        "selection": "hard" if i % 5 else "random", "source": f"csi://{i % 2}",
        "domain": domain or DOMAINS[i % len(DOMAINS)], "width": 128, "height": 96,
        "labels": ["depth_sensor"],
        "intrinsics": [[100.0, 0.0, 64.0], [0.0, 100.0, 48.0], [0.0, 0.0, 1.0]],
    }
    return item_id, files, meta


def make_store(root: Path, n: int = 12, corrupt: int = -1) -> List[dict]:
    """A local store with `n` items (item `corrupt`, if >= 0, has an RGB file that does not decode)."""
    from edgedepth.fleet.store.local import LocalStore

    store = LocalStore(root, min_free_bytes=0)
    metas = []
    try:
        for i in range(n):
            item_id, files, meta = make_item(i, corrupt_rgb=i == corrupt,
                                             with_pred=i % 4 != 3)
            meta["received_at"] = f"2026-11-24T{8 + i % 10:02d}:{i % 60:02d}:30.000000Z"
            store.put_item(item_id, files, meta)
            metas.append(store.get_meta(item_id))
    finally:
        store.close()
    return metas


def make_rounds(root: Path, metas: List[dict]) -> Path:
    """rounds/0 (the first half of the items, with a gate result) and rounds/1 (the rest, no gate)."""
    half = len(metas) // 2
    for r, part in enumerate((metas[:half], metas[half:])):
        d = root / str(r)
        d.mkdir(parents=True)
        frames = [{"name": m["id"][:24], "split": "val" if k % 4 == 0 else "train", "item": m["id"],
                   "label": "depth_sensor", "domain": m["domain"], "device_id": m["device_id"],
                   "captured_at": m["captured_at"], "replay_of": None} for k, m in enumerate(part)]
        report = {"out": str(d), "ingested": len(part), "labelled": {"depth_sensor": len(part)},
                  "unlabelled": 0,
                  "unreadable": 0, "duplicates": 0, "train": sum(f["split"] == "train" for f in frames),
                  "val": sum(f["split"] == "val" for f in frames), "replay": 0,
                  "domains": {"indoor": len(part)}, "devices": {"cam-north": len(part)}}
        (d / "lineage.json").write_text(json.dumps({"format": "edgedepth.round/1",
                                                    "created_at": "2026-11-25T09:00:00Z",
                                                    "config": {"store": "store", "since": None, "seed": 0},
                                                    "report": report, "frames": frames}))
        if r == 0:
            (d / "gate.json").write_text(json.dumps(gate_result(True)))
    return root


def gate_result(passed: bool) -> dict:
    checks = [{"metric": "abs_rel", "baseline": 0.182, "candidate": 0.151, "change": -0.17, "rule": "improve",
               "ok": True},
              {"metric": "d1", "baseline": 0.71, "candidate": 0.74 if passed else 0.60,
               "change": 0.04 if passed else -0.15, "rule": "no drop > 2%", "ok": passed}]
    return {"passed": passed, "verdict": "promote" if passed else "refuse", "candidate": "cand.pt",
            "baseline": "base.pt", "tolerance": 0.02, "min_gain": 0.0,
            "reasons": [] if passed else ["d1 dropped"],
            "sets": [{"name": "target", "dataset": "rounds/0/val", "baseline": {}, "candidate": {},
                      "checks": checks, "passed": passed}]}


def make_registry(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    versions = [{"version": "3", "created_at": "2026-11-20T10:00:00Z", "promoted": True, "notes": "baseline",
                 "model": {"name": "edgedepth-small"}, "metrics": {"abs_rel": 0.182, "d1": 0.71}},
                {"version": "4", "created_at": "2026-11-25T10:00:00Z", "promoted": True, "notes": "round 0",
                 "model": {"name": "edgedepth-small"}, "metrics": {"eval": {"abs_rel": 0.151, "d1": 0.74},
                                                                   "gate": gate_result(True)}}]
    (root / "index.json").write_text(json.dumps({"format": "edgedepth-registry/1", "versions": versions}))
    (root / "versions" / "4").mkdir(parents=True)
    (root / "versions" / "4" / "lineage.json").write_text(json.dumps({"round": "rounds/0"}))
    return root


def synthetic_meta(i: int) -> dict:
    """Metadata of an index-only item (no files on disk), for the 100,000-item benchmark."""
    item_id = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
    files = {"rgb.jpg": {"sha256": item_id, "bytes": 20000, "kind": "rgb", "offset": 0},
             "depth.png": {"sha256": item_id, "bytes": 30000, "kind": "depth_gt", "offset": 0,
                           "units": "mm_uint16"}}
    day, sec = divmod(i * 7, 86400)
    clock = f"{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"
    stamp = f"2026-{10 + day // 28:02d}-{1 + day % 28:02d}T{clock}"
    return {"schema": SCHEMA, "id": item_id, "files": files, "device_id": f"dev-{i % 40:02d}",
            "model": {"name": "edgedepth", "version": str(1 + i // 25000), "sha256": "cd" * 32},
            "captured_at": stamp + ".000Z", "received_at": stamp + ".500000Z",
            "score": (i * 7919 % 100003) / 1000.0,
            "scores": {"uncertainty": (i * 31 % 997) / 997.0, "temporal": (i * 17 % 499) / 4990.0,
                       "novelty": (i * 13 % 211) / 105.5},
            "selection": "random" if i % 10 == 0 else "hard", "source": f"csi://{i % 2}",
            "domain": ("indoor", "outdoor", "night", "fog")[i % 4], "width": 320, "height": 240,
            "labels": ["depth_gt"] if i % 3 else [], "stored_bytes": 50000}


def upload_body(item_id: str, meta: dict, files: Dict[str, bytes]) -> bytes:
    """The ingest server's upload body (a flat tar of <id>.json and <id>.<name>) of an item."""
    import tarfile

    buf = io.BytesIO()
    members = [(f"{item_id}.json", json.dumps(meta).encode())]
    members += [(f"{item_id}.{n}", d) for n, d in files.items()]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
