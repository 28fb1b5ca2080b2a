"""Hard-frame selection, cheap enough for every frame (well under a millisecond at 224x224).

Signals, all on a downsampled map:
  (a) uncertainty: mean and 90th percentile of exp(u), the model's own expected relative error;
  (b) temporal inconsistency with the previous prediction: mean |D_t - D_{t-1}| / (D_t + D_{t-1});
  (c) novelty: distance of a tiny embedding (8x8 grey thumbnail + log-depth histogram, each unit-norm)
      to the nearest frame already kept (a bounded ring), so near-duplicates are not kept twice.
score = (mean exp(u) + 0.5 q90 exp(u) + w_t temporal) * min(1, novelty / novelty_ref).
The keep threshold adapts: a running quantile of recent scores keeps the top `rate` fraction.
Budgets (max per hour, minimum spacing in frames and seconds) apply in every mode; `random` keeps
frames at the same rate without looking at them (the baseline), `none` keeps nothing.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Optional

import cv2
import numpy as np

from edgedepth.errors import ConfigError

MODES = ("hard", "random", "none")
EMBED_DIM = 64 + 16


@dataclass
class SelectionConfig:
    mode: str = "hard"
    rate: float = 0.05  # keep the top `rate` fraction of frames (and the same rate for random)
    max_per_hour: Optional[float] = None
    min_spacing_frames: int = 0
    min_spacing_seconds: float = 0.0
    novelty_min: float = 0.05  # closer than this to a kept frame = a near-duplicate, never kept
    novelty_ref: float = 0.25  # at or beyond this distance novelty does not lower the score
    temporal_weight: float = 1.0
    window: int = 600  # recent scores for the running quantile
    warmup: int = 20  # frames scored before the first keep (the quantile needs data)
    ring: int = 256  # embeddings of kept frames remembered
    stride: int = 4  # downsampling of depth/uncertainty maps
    seed: int = 0
    min_depth: float = 0.1
    max_depth: float = 40.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown selection mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not 0.0 < self.rate <= 1.0:
            raise ConfigError(f"selection rate must be in (0, 1], got {self.rate}")
        if self.max_per_hour is not None and self.max_per_hour <= 0:
            raise ConfigError("max frames per hour must be positive")
        if self.min_spacing_frames < 0 or self.min_spacing_seconds < 0:
            raise ConfigError("minimum spacing must be >= 0")


@dataclass
class Decision:
    keep: bool
    score: float
    scores: Dict[str, float] = field(default_factory=dict)
    reason: str = ""


class FrameSelector:
    """score(frame, result) -> Decision. Not thread-safe: call it from one thread (the loop's)."""

    def __init__(self, config: Optional[SelectionConfig] = None):
        self.cfg = config or SelectionConfig()
        self.rng = np.random.default_rng(self.cfg.seed)
        self._prev_depth: Optional[np.ndarray] = None
        self._scores = np.zeros(self.cfg.window, dtype=np.float64)
        self._n_scores = 0
        self._threshold = math.inf
        self._kept = np.zeros((self.cfg.ring, EMBED_DIM), dtype=np.float32)
        self._n_kept_emb = 0
        self._keep_times: Deque[float] = deque()
        self._last_keep_seq: Optional[int] = None
        self._last_keep_t: Optional[float] = None
        self._seen = 0
        self.kept = 0
        self.rejected = {"threshold": 0, "duplicate": 0, "spacing": 0, "budget": 0, "warmup": 0}
        self._log_lo = math.log(self.cfg.min_depth)
        self._bin_scale = 16.0 / (math.log(self.cfg.max_depth) - self._log_lo)
        self._luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)

    # -- signals ------------------------------------------------------------------------------------
    def embed(self, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """80-d unit vector: 8x8 zero-mean grey thumbnail and a 16-bin log-depth histogram (Hellinger)."""
        grey = cv2.resize(rgb, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32) @ self._luma
        grey -= grey.mean()
        norm = float(np.linalg.norm(grey))
        if norm > 1e-6:
            grey /= norm
        s = self.cfg.stride
        bins = (np.log(np.maximum(depth[::s, ::s], self.cfg.min_depth)) - self._log_lo) * self._bin_scale
        hist = np.bincount(np.clip(bins.astype(np.int32), 0, 15).ravel(), minlength=16).astype(np.float32)
        hist = np.sqrt(hist / max(1.0, float(hist.sum())))
        return np.concatenate([grey.ravel(), hist]) * np.float32(1 / math.sqrt(2))

    def novelty(self, emb: np.ndarray) -> float:
        n = min(self._n_kept_emb, self.cfg.ring)
        if n == 0:
            return 2.0
        diff = self._kept[:n] - emb
        return float(np.sqrt(np.min(np.einsum("ij,ij->i", diff, diff))))

    def signals(self, rgb: np.ndarray, depth: np.ndarray, uncertainty: np.ndarray) -> Dict[str, float]:
        s = self.cfg.stride
        u = np.exp(uncertainty[::s, ::s])
        flat = u.ravel()
        k = int(0.9 * (flat.size - 1))
        q90 = float(np.partition(flat, k)[k])
        d = np.ascontiguousarray(depth[::s, ::s], dtype=np.float32)
        if self._prev_depth is not None and self._prev_depth.shape == d.shape:
            temporal = float(np.mean(np.abs(d - self._prev_depth) / np.maximum(d + self._prev_depth, 1e-6)))
        else:
            temporal = 0.0
        self._prev_depth = d
        return {"uncertainty": float(u.mean()), "uncertainty_q90": q90, "temporal": temporal}

    # -- decision -----------------------------------------------------------------------------------
    def score(
        self, rgb: np.ndarray, depth: np.ndarray, uncertainty: np.ndarray, seq: int, t: float
    ) -> Decision:
        cfg = self.cfg
        sig = self.signals(rgb, depth, uncertainty)
        emb = self.embed(rgb, depth)
        nov = self.novelty(emb)
        difficulty = sig["uncertainty"] + 0.5 * sig["uncertainty_q90"] + cfg.temporal_weight * sig["temporal"]
        score = difficulty * min(1.0, nov / cfg.novelty_ref)
        sig.update({"novelty": min(nov, 2.0), "difficulty": difficulty, "score": score})
        self._seen += 1
        self._push_score(score)
        if cfg.mode == "none":
            return Decision(False, score, sig, "selection off")
        if cfg.mode == "random":
            if self.rng.random() >= cfg.rate:
                return Decision(False, score, sig, "random")
        else:
            if self._seen <= cfg.warmup:
                self.rejected["warmup"] += 1
                return Decision(False, score, sig, "warm-up")
            if score <= self._threshold:  # strictly above: a flat stream of equal scores keeps nothing
                self.rejected["threshold"] += 1
                return Decision(False, score, sig, "below threshold")
            if nov < cfg.novelty_min:
                self.rejected["duplicate"] += 1
                return Decision(False, score, sig, "near-duplicate of a kept frame")
        why = self._budget_refusal(seq, t)
        if why:
            return Decision(False, score, sig, why)
        self._accept(emb, seq, t)
        sig["threshold"] = self._threshold if math.isfinite(self._threshold) else 0.0
        return Decision(True, score, sig, "kept")

    def _push_score(self, score: float) -> None:
        w = self.cfg.window
        self._scores[self._n_scores % w] = score
        self._n_scores += 1
        n = min(self._n_scores, w)
        if n >= min(self.cfg.warmup, w) and (self._n_scores % 8 == 0 or not math.isfinite(self._threshold)):
            self._threshold = float(np.quantile(self._scores[:n], 1.0 - self.cfg.rate))

    def _budget_refusal(self, seq: int, t: float) -> str:
        cfg = self.cfg
        if self._last_keep_seq is not None and seq - self._last_keep_seq < cfg.min_spacing_frames:
            self.rejected["spacing"] += 1
            return f"closer than {cfg.min_spacing_frames} frames to the last kept frame"
        if self._last_keep_t is not None and t - self._last_keep_t < cfg.min_spacing_seconds:
            self.rejected["spacing"] += 1
            return f"closer than {cfg.min_spacing_seconds:g} s to the last kept frame"
        if cfg.max_per_hour is not None:
            while self._keep_times and t - self._keep_times[0] >= 3600.0:
                self._keep_times.popleft()
            if len(self._keep_times) >= cfg.max_per_hour:
                self.rejected["budget"] += 1
                return f"hourly budget of {cfg.max_per_hour:g} frames used"
        return ""

    def _accept(self, emb: np.ndarray, seq: int, t: float) -> None:
        self._kept[self._n_kept_emb % self.cfg.ring] = emb
        self._n_kept_emb += 1
        self._keep_times.append(t)
        self._last_keep_seq, self._last_keep_t = seq, t
        self.kept += 1
