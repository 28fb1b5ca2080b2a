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
EMBED_DIM = 48 + 16  # 8x6 grey thumbnail + 16-bin log-depth histogram
EMB_HALF = 1.0 / math.sqrt(2.0)  # each half has norm 1/sqrt(2): the embedding is a unit vector


@dataclass
class SelectionConfig:
    mode: str = "hard"
    rate: float = 0.05  # keep the top `rate` fraction of frames (and the same rate for random)
    max_per_hour: Optional[float] = None
    min_spacing_frames: int = 0
    min_spacing_seconds: float = 0.0
    novelty_min: float = 0.05  # closer than this to a kept frame = a near-duplicate, never kept
    temporal_weight: float = 1.0
    q90_weight: float = 0.5
    temporal_smoothing: float = 0.3  # EWMA factor: flicker that persists over frames, not one cut
    window: int = 600  # recent scores for the running quantile
    rate_control: bool = True  # steer the quantile so the achieved keep rate meets `rate`
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
        self._kept_sq = np.zeros(self.cfg.ring, dtype=np.float32)
        self._keep_seqs: Deque[int] = deque(maxlen=self.cfg.window)
        self._q = self.cfg.rate
        self._emb = np.zeros(EMBED_DIM, dtype=np.float32)
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
        self._temporal = 0.0

    # -- signals (everything from one downsampled pass) --------------------------------------------
    def features(self, rgb: np.ndarray, depth: np.ndarray, uncertainty: np.ndarray):
        """(signals dict, 64-d embedding) computed with shared intermediates."""
        s = self.cfg.stride
        # uncertainty: exp(u) is the expected |log error|
        u = uncertainty[::s, ::s]
        eu = np.exp(u).ravel()
        k = int(0.9 * (eu.size - 1))
        q90 = float(np.partition(eu, k)[k])
        # temporal inconsistency with the previous prediction
        d = np.maximum(depth[::s, ::s], np.float32(self.cfg.min_depth))
        prev = self._prev_depth
        temporal = (
            float(np.mean(np.abs(d - prev) / (d + prev)))
            if prev is not None and prev.shape == d.shape
            else 0.0
        )
        self._prev_depth = d
        # appearance: one 16x12 thumbnail feeds the embedding and the descriptor
        small = cv2.resize(rgb, (16, 12), interpolation=cv2.INTER_AREA).astype(np.float32)
        grey = small @ self._luma
        thumb = cv2.resize(grey, (8, 6), interpolation=cv2.INTER_AREA).ravel()
        # predicted log-depth histogram (16 bins over the model's range)
        logd = np.log(d)
        hist = np.bincount(
            np.clip(((logd - self._log_lo) * self._bin_scale).astype(np.int32), 0, 15).ravel(), minlength=16
        ).astype(np.float32)
        hist *= np.float32(1.0 / max(1.0, float(hist.sum())))
        emb = self._emb
        t = thumb - thumb.mean()
        norm = float(np.sqrt(t @ t))
        emb[:48] = t * np.float32(EMB_HALF / norm) if norm > 1e-3 else 0.0
        emb[48:] = np.sqrt(hist) * np.float32(EMB_HALF)
        sig = {"uncertainty": float(eu.mean()), "uncertainty_q90": q90, "temporal": temporal}
        return sig, emb

    def novelty(self, emb: np.ndarray) -> float:
        """Distance to the nearest kept frame's embedding (2.0 when nothing is kept yet)."""
        n = min(self._n_kept_emb, self.cfg.ring)
        if n == 0:
            return 2.0
        sq = self._kept_sq[:n] - 2.0 * (self._kept[:n] @ emb) + float(emb @ emb)
        return float(np.sqrt(max(0.0, float(sq.min()))))

    # -- decision -----------------------------------------------------------------------------------
    def score(
        self, rgb: np.ndarray, depth: np.ndarray, uncertainty: np.ndarray, seq: int, t: float
    ) -> Decision:
        cfg = self.cfg
        sig, emb = self.features(rgb, depth, uncertainty)
        nov = self.novelty(emb)
        a = cfg.temporal_smoothing
        tmp = sig["temporal"]
        self._temporal = tmp if self._seen == 0 else (1 - a) * self._temporal + a * tmp
        score = sig["uncertainty"] + cfg.q90_weight * sig["uncertainty_q90"]
        score += cfg.temporal_weight * self._temporal
        sig.update({"novelty": min(nov, 2.0), "temporal_smoothed": self._temporal, "score": score})
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
        """Running (1 - q) quantile of recent scores; q is steered so the keep rate meets `rate`.

        Kept frames make their look-alikes score lower (novelty), so hard frames that arrive in runs
        would leave the budget unused at q = rate; a slow controller raises q until the achieved rate
        over the window matches the target (bounded to [rate/4, 4 rate])."""
        cfg = self.cfg
        w = cfg.window
        self._scores[self._n_scores % w] = score
        self._n_scores += 1
        n = min(self._n_scores, w)
        if n < min(cfg.warmup, w) or (self._n_scores % 8 and math.isfinite(self._threshold)):
            return
        if cfg.rate_control and cfg.mode == "hard" and self._seen > cfg.warmup + w // 4:
            achieved = sum(1 for s in self._keep_seqs if s > self._seen - w) / float(min(w, self._seen))
            self._q *= math.exp(0.05 * (cfg.rate - achieved) / cfg.rate)
            self._q = min(max(self._q, cfg.rate / 4.0), min(1.0, 4.0 * cfg.rate))
        kth = min(n - 1, int((1.0 - self._q) * (n - 1)))
        self._threshold = float(np.partition(self._scores[:n], kth)[kth])

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
        slot = self._n_kept_emb % self.cfg.ring
        self._kept[slot] = emb
        self._kept_sq[slot] = float(emb @ emb)
        self._n_kept_emb += 1
        self._keep_seqs.append(self._seen)
        self._keep_times.append(t)
        self._last_keep_seq, self._last_keep_t = seq, t
        self.kept += 1
