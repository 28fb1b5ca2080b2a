"""Epistemic novelty: how far a frame's appearance is from the frames the model was trained on.

A model's aleatoric uncertainty head does not flag inputs unlike its training data (it learned the noise of
familiar inputs, not what it has never seen). A domain shift (night, fog, a street instead of a room) shows
in plain image statistics, though: brightness, contrast, saturation, colour, hue, texture energy. So each
frame gets a small appearance embedding that keeps exactly those cues (nothing is normalised away),
standardised per dimension with the statistics of a REFERENCE SET of training-frame embeddings that ships
with the model bundle (`reference_embeddings.npz`, written by `build_reference` + `save_reference`). A
frame's novelty is its mean distance to its k nearest reference embeddings, divided by the same quantity
measured within the reference set (leave-one-out median): about 1 on training-like frames, larger the
further out a frame is. Cost: about 55 us for the embedding and 15 us for the k-NN at 600 reference frames
(FrameSelector reuses it for a few frames within a scene).

The saturation-weighted hue histogram is what finds a street or a park among rooms: on the synthetic
domains (64x96, 400 indoor reference frames, 120 test frames each) it raised the AUC of novelty for
outdoor vs indoor frames from 0.75 to 0.95 (night 1.00 and fog 0.98-0.99 either way); the colour thumbnail
and the texture energy were down-weighted at the same time (they vary most among familiar rooms).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import List, Optional, Sequence, Union

import cv2
import numpy as np

from edgedepth.errors import DataError

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference_embeddings.npz"
EMBEDDING_VERSION = 2  # bump when appearance_embedding changes: older reference files are then ignored
THUMB = (4, 3)  # colour thumbnail, width x height
HIST_BINS = 8
HUE_BINS = 6
# dimension groups: global colour/brightness stats 9, grey histogram 8, texture 3, colour thumbnail 36,
# saturation-weighted hue histogram 6
GROUPS = (("stats", 9), ("hist", HIST_BINS), ("texture", 3), ("thumb", THUMB[0] * THUMB[1] * 3),
          ("hue", HUE_BINS))
EMBED_DIM = sum(n for _, n in GROUPS)


def appearance_embedding(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 (EMBED_DIM,) of raw (unstandardised) appearance features.

    OpenCV reductions on a 32x24 thumbnail (about 55 us at 96x128 on a 2-core x86; FrameSelector calls it
    once per scene rather than per frame)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"expected an RGB image HxWx3, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    if h > 96 or w > 128:  # constant cost for any frame size
        rgb = cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_NEAREST)
    small = cv2.resize(rgb, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32) * (1.0 / 255.0)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)  # the BT.601 luma
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)  # float input: H in [0, 360), S = (max - min) / max
    sat = hsv[..., 1]
    n = grey.size
    mean, std = cv2.meanStdDev(small)
    grey_mean, grey_std = cv2.meanStdDev(grey)
    stats = [*mean.ravel(), *std.ravel(), grey_mean[0, 0], grey_std[0, 0], cv2.mean(sat)[0]]
    hist = np.sqrt(np.bincount(np.minimum((grey * HIST_BINS).astype(np.int32), HIST_BINS - 1).ravel(),
                               minlength=HIST_BINS)[:HIST_BINS] * (1.0 / n))
    gx = cv2.norm(grey[:, 1:], grey[:, :-1], cv2.NORM_L1) / grey[:, 1:].size
    gy = cv2.norm(grey[1:], grey[:-1], cv2.NORM_L1) / grey[1:].size
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)[1:-1, 1:-1]  # 4-neighbour Laplacian, interior only
    texture = [gx, gy, cv2.norm(lap, cv2.NORM_L1) / lap.size]
    thumb = cv2.resize(small, THUMB, interpolation=cv2.INTER_AREA).ravel()
    hue_bin = np.minimum((hsv[..., 0] * (HUE_BINS / 360.0)).astype(np.int32), HUE_BINS - 1).ravel()
    hue = np.sqrt(np.bincount(hue_bin, weights=sat.ravel(), minlength=HUE_BINS)[:HUE_BINS] * (1.0 / n))
    return np.concatenate([np.array(stats, np.float32), hist, np.array(texture, np.float32),
                           thumb, hue]).astype(np.float32)


GROUP_WEIGHTS = {"stats": 1.0, "hist": 1.0, "texture": 0.25, "thumb": 0.5, "hue": 2.0}


def _group_weights() -> np.ndarray:
    """Each group weighs GROUP_WEIGHTS[group] in the distance, whatever its number of dimensions."""
    return np.concatenate([np.full(n, GROUP_WEIGHTS[g] / np.sqrt(n), dtype=np.float32) for g, n in GROUPS])


class Reference:
    """Standardised reference embeddings + the scale that makes in-distribution novelty about 1."""

    def __init__(self, embeddings: np.ndarray, k: int = 5):
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != EMBED_DIM or len(emb) < 2:
            raise DataError(f"reference embeddings must be (n >= 2, {EMBED_DIM}), got {emb.shape}")
        self.raw = emb
        self.k = max(1, min(int(k), len(emb) - 1))
        self.mean = emb.mean(axis=0)
        std = emb.std(axis=0)
        self.scale = _group_weights() / np.maximum(std, 0.02 * float(np.median(std)) + 1e-6)
        self.z = (emb - self.mean) * self.scale
        self.z_sq = (self.z * self.z).sum(axis=1)
        # leave-one-out k-NN distance inside the reference set: what "familiar" looks like
        d2 = self.z_sq[:, None] - 2.0 * self.z @ self.z.T + self.z_sq[None, :]
        np.fill_diagonal(d2, np.inf)
        knn = np.sqrt(np.maximum(np.partition(d2, self.k - 1, axis=1)[:, :self.k], 0.0)).mean(axis=1)
        self.unit = float(np.median(knn)) or 1.0

    def novelty(self, emb: np.ndarray) -> float:
        """Mean distance to the k nearest reference frames, in units of the reference's own spacing."""
        z = (emb - self.mean) * self.scale
        d2 = self.z_sq - 2.0 * (self.z @ z) + float(z @ z)
        k = self.k
        near = np.partition(d2, k - 1)[:k] if len(d2) > k else d2
        return float(np.sqrt(np.maximum(near, 0.0)).mean()) / self.unit


def build_reference(dataset_dirs: Sequence[Union[str, Path]], n: int = 600, seed: int = 0) -> np.ndarray:
    """Embeddings of up to `n` frames drawn (seeded) from the training data sets the model was trained on."""
    from edgedepth.data.dataset import open_dataset

    pool = []
    for d in dataset_dirs:
        ds = open_dataset(str(d))
        pool.extend((ds, i) for i in range(len(ds)))
    if len(pool) < 2:
        raise DataError(f"need at least 2 training frames for a reference set, found {len(pool)} in "
                        f"{', '.join(str(d) for d in dataset_dirs)}")
    chosen = random.Random(seed).sample(pool, min(int(n), len(pool)))
    return np.stack([appearance_embedding(ds[i].rgb) for ds, i in chosen])


def save_reference(path: Union[str, Path], embeddings: np.ndarray) -> Path:
    """Write the reference to `path` (a file), or to BUNDLE/REFERENCE_FILE when `path` is a directory."""
    path = Path(path)
    if path.is_dir():
        path = path / REFERENCE_FILE
    with open(path, "wb") as f:
        np.savez_compressed(f, embeddings=np.asarray(embeddings, dtype=np.float32),
                            dim=np.array(EMBED_DIM), version=np.array(EMBEDDING_VERSION))
    return path


def load_reference(path: Union[str, Path, None], k: int = 5) -> Optional[Reference]:
    """The Reference in `path` (a bundle directory or the .npz), or None when there is none.

    A reference written by an older embedding (another version or dimension) is ignored with a warning: the
    device keeps selecting on uncertainty and flicker until a re-exported bundle arrives."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        path = path / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            emb = z["embeddings"]
            version = int(z["version"]) if "version" in z.files else 1
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read reference embeddings {path}: {exc}; re-export the bundle") from exc
    if version != EMBEDDING_VERSION or emb.ndim != 2 or emb.shape[1] != EMBED_DIM:
        log.warning("ignoring reference embeddings %s (embedding version %d, shape %s; this edgedepth reads "
                    "version %d, %d dims): novelty is off until the bundle is re-exported with "
                    "--reference-data", path, version, emb.shape, EMBEDDING_VERSION, EMBED_DIM)
        return None
    return Reference(emb, k=k)


def bundle_of(model_path: str) -> Optional[Path]:
    """The bundle directory a backend's model file lives in."""
    return Path(model_path).parent if model_path else None


__all__: List[str] = ["REFERENCE_FILE", "EMBED_DIM", "appearance_embedding", "Reference", "build_reference",
                      "save_reference", "load_reference", "bundle_of"]
