"""Hard-frame selection, cheap enough for every frame (scripts/bench_loop.py).

The per-pixel work is done by the model when its graph has the 'selection' output
(export/selection_graph.py, `graph_features()`); otherwise by six numpy/OpenCV calls (`features()`).

Signals, on maps downsampled by `stride`:
  (a) uncertainty: mean (and 90th percentile) of exp(u), the model's own expected |log depth error|;
  (b) temporal inconsistency: mean |log D_t - log D_{t-1}| / 2 (~ |D_t - D_{t-1}| / (D_t + D_{t-1})),
      divided by how much the picture changed (mean absolute difference of 16x12 colour thumbnails +
      a floor).
      Depth that flickers while the image stays put means the network is unstable on this input; a
      camera move or a cut changes both and scores low. Smoothed over frames (EWMA), since such
      instability persists;
  (c) novelty: distance of a 64-d unit embedding (8x6 grey thumbnail, zero-mean, + 16-bin histogram of
      predicted log-depth) to the nearest of the last `ring` kept frames; near-duplicates
      (< novelty_min) are never kept twice. Computed only for keep candidates (frames over the threshold),
      as is the 90th percentile unless it is weighted into the score.
score = (mean exp(u) + w_q q90 exp(u)) * (1 + w_t flicker).
(d) epistemic novelty, when the model's bundle ships a reference set (edgedepth.runtime.reference): the
    k-NN distance of the frame's appearance embedding to the model's training frames, in units of the
    reference's own spacing (about 1 on familiar frames). The aleatoric head does not flag unfamiliar
    domains (it is as confident on night or fog as indoors); this does. It scales the score:
    score *= 1 + (min(novelty_ref, novelty_cap) - 1)+, i.e. 1 on training-like frames and up to
    novelty_cap on frames far outside the training data, so an unfamiliar frame needs less predicted
    error to rank high, and the score still orders frames by expected error (it is not novelty alone).
    The cap: k-NN distances far outside the training data do not rank (night at 80 units is not 20
    times more worth a label than fog at 4). Measured on rendered 64x96 frames against 400 indoor
    reference frames: novelty_ref medians indoor 0.99, outdoor 2.25, fog 2.93, night 18.6 (see
    reference.py for the hue histogram that separates outdoor). Recomputed once per scene, not per
    frame (novelty_every, novelty_recompute_change).
(e) optional, `trust_novelty`: beyond that many reference units the aleatoric head's estimate means
    nothing (measured on the fleet simulation's round-0 model: Spearman(mean b, AbsRel) -0.37 on night
    frames, 18.6 units out), so ranking such frames by it picks the wrong ones. They are kept with
    probability `rate`, as the random strategy keeps frames, and their nominal score does not enter the
    threshold. Off by default (`edgedepth run --select-trust-novelty 6`); the fleet simulation uses 6.
The keep threshold adapts: the (1 - rate) quantile of the last `window` scores (after `warmup` frames;
with a reference, `novelty_threshold` can instead set an absolute rule on novelty_ref alone); a token
bucket holds the long-run keep rate at `rate`. With `spend_budget` the quantile's level relaxes (x1.002
per frame, down to the median) while tokens pile up unspent and tightens back while they run out: a
fleet that pays for `rate` uploads gets the next-best frames rather than fewer (measured offline on
the mixed streams: about three times the kept frames at a 3 % rate with 8-frame spacing, at a lower
unseen share).
Budgets (max per hour, minimum spacing in frames and
seconds) apply in every mode; `random` keeps frames at the same rate without looking at them (the
baseline), `none` keeps nothing.
The score multiplies difficulty by a capped novelty factor rather than adding the two: an additive
score lets a familiar-looking but hard frame and an unfamiliar but easy one tie, and ranks frames by
their real error less well. Defaults were chosen on synthetic mixed streams (seeds 6 and 7);
scripts/bench_loop.py measures them on other seeds.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Optional, Tuple

import cv2
import numpy as np

from edgedepth.errors import ConfigError
from edgedepth.preprocess import SELECTION_STRIDE, SELECTION_THUMB, selection_grid, selection_length
from edgedepth.runtime.reference import Reference, appearance_embedding

MODES = ("hard", "random", "none")
EMBED_DIM = 48 + 16  # 8x6 grey thumbnail + 16-bin log-depth histogram
EMB_HALF = 1.0 / math.sqrt(2.0)  # each half has norm 1/sqrt(2): the embedding is a unit vector
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # RGB -> grey, as OpenCV's COLOR_RGB2GRAY


@dataclass
class SelectionConfig:
    mode: str = "hard"
    rate: float = 0.05  # keep the top `rate` fraction of frames (and the same rate for random)
    max_per_hour: Optional[float] = None
    min_spacing_frames: int = 0
    min_spacing_seconds: float = 0.0
    novelty_min: float = 0.05  # closer than this to a kept frame = a near-duplicate, never kept
    temporal_weight: float = 1.0
    q90_weight: float = 0.0
    temporal_smoothing: float = 0.3  # EWMA factor: flicker that persists over frames, not one cut
    image_change_floor: float = 0.01  # thumbnail change (of 1.0) below which the picture "did not change"
    window: int = 1000  # recent scores for the running quantile
    # spend the budget: relax the quantile while the rate budget goes unspent (see score()); off, the
    # selector keeps only the top `rate` of scores and may keep fewer frames than the budget allows
    spend_budget: bool = False
    max_quantile_rate: float = 0.5  # ... down to the median at most
    relax_step: float = 1.002  # factor per frame on the quantile's level
    warmup: int = 200  # frames scored before the first keep (the quantile needs data)
    ring: int = 256  # embeddings of kept frames remembered
    stride: int = SELECTION_STRIDE  # the maps are sampled every `stride` pixels (12x16 of a 96x128 map)
    seed: int = 0
    min_depth: float = 0.1
    max_depth: float = 40.0
    # with a reference set (training-frame embeddings)
    novelty_cap: float = 3.0  # beyond this many reference units a frame is simply out of distribution
    # beyond this many reference units the frame's own uncertainty is not trusted: the frame is sampled
    # at `rate` like the random strategy does, outside the threshold (None = always trusted; see (e))
    trust_novelty: Optional[float] = None
    novelty_threshold: Optional[float] = None  # with a reference: keep frames this far out (None: adaptive)
    # appearance novelty follows the scene, not the frame: recomputed at least every `novelty_every`
    # frames, and sooner once the picture has changed by `novelty_recompute_change` (mean thumbnail change
    # summed over frames since the last computation; a cut triggers it at once)
    novelty_every: int = 30
    novelty_recompute_change: float = 0.15

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown selection mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not 0.0 < self.rate <= 1.0:
            raise ConfigError(f"selection rate must be in (0, 1], got {self.rate}")
        if self.max_per_hour is not None and self.max_per_hour <= 0:
            raise ConfigError("max frames per hour must be positive")
        if self.min_spacing_frames < 0 or self.min_spacing_seconds < 0:
            raise ConfigError("minimum spacing must be >= 0")
        if self.trust_novelty is not None and not self.trust_novelty > 1.0:
            raise ConfigError(f"trust_novelty must be > 1 reference unit (familiar frames read about 1), "
                              f"got {self.trust_novelty}")
        if self.stride < 1:
            raise ConfigError(f"stride must be >= 1 (1 = every pixel), got {self.stride}")
        if self.novelty_every < 1:
            raise ConfigError(f"novelty_every must be >= 1 (1 = every frame), got {self.novelty_every}")


@dataclass
class Decision:
    keep: bool
    score: float
    scores: Dict[str, float] = field(default_factory=dict)
    reason: str = ""


class FrameSelector:
    """score(frame, result) -> Decision. Not thread-safe: call it from one thread (the loop's)."""

    def __init__(self, config: Optional[SelectionConfig] = None, reference: Optional[Reference] = None):
        self.cfg = config or SelectionConfig()
        self.reference = reference
        self.rng = np.random.default_rng(self.cfg.seed)
        self._prev_log_depth: Optional[np.ndarray] = None
        self._eu: Optional[np.ndarray] = None
        self._scores = np.zeros(self.cfg.window, dtype=np.float64)
        self._n_scores = 0
        self._threshold = math.inf
        self._kept = np.zeros((self.cfg.ring, EMBED_DIM), dtype=np.float32)
        self._kept_sq = np.zeros(self.cfg.ring, dtype=np.float32)
        self._emb = np.zeros(EMBED_DIM, dtype=np.float32)
        self._n_kept_emb = 0
        self._keep_times: Deque[float] = deque()
        self._last_keep_seq: Optional[int] = None
        self._last_keep_t: Optional[float] = None
        self._seen = 0
        self.kept = 0
        self.rejected = dict.fromkeys(("invalid", "threshold", "duplicate", "spacing", "budget", "warmup",
                                       "rate"), 0)
        self._log_lo = math.log(self.cfg.min_depth)
        self._bin_scale = 16.0 / (math.log(self.cfg.max_depth) - self._log_lo)
        self._flicker = 0.0
        self._tokens = 0.0  # token bucket: `rate` tokens per frame, one per kept frame
        self._token_cap = max(2.0, self.cfg.rate * self.cfg.window / 4.0)
        self._quantile_rate = self.cfg.rate  # the threshold's level, relaxed while budget goes unspent
        self._prev_thumb: Optional[np.ndarray] = None
        self._novelty_ref: Optional[float] = None  # the last reference novelty, its age in frames and
        self._novelty_age = 0  # how much the picture changed since
        self._novelty_drift = 0.0
        # per-frame work writes into these (features()): no allocation per frame
        self._bufs: Optional[tuple] = None  # exp(u) and two log-depth maps (this frame's, the previous)
        self._thumbs = tuple(np.empty((*SELECTION_THUMB, 3), np.uint8) for _ in range(2))
        self._vectors: Optional[tuple] = None  # graph_features(): this frame's and the previous vector
        self._prev_vector: Optional[np.ndarray] = None
        self._uncertainty: Optional[np.ndarray] = None

    # -- signals: a few calls on every frame, the embedding only for candidates ------------------------
    def features(self, rgb: np.ndarray, depth: np.ndarray, uncertainty: np.ndarray) -> Dict[str, float]:
        """The per-frame signals, in six numpy/OpenCV calls on maps sampled every `stride` pixels.

        Keeps what `embedding()` and `uncertainty_q90()` need, so a frame that becomes a keep candidate
        (a few percent of them) pays for those and the others do not. At the sizes of a fast model's
        maps each call costs more than its arithmetic (scripts/bench_loop.py), hence the fewest calls:
        exp and log read the strided maps directly, and one bilinear resize averages 2x2 pixels per
        thumbnail cell at any frame size."""
        s = self.cfg.stride
        buf = self._bufs
        if buf is None or buf[3] != uncertainty.shape:  # once per map size; later frames write into these
            small = selection_grid(uncertainty.shape, s)
            buf = self._bufs = (*(np.empty(small, np.float32) for _ in range(3)), uncertainty.shape)
            self._prev_log_depth = None
        eu, log_d = buf[0], buf[1] if self._prev_log_depth is not buf[1] else buf[2]
        np.exp(uncertainty[::s, ::s], out=eu)  # exp(u): the expected |log error|
        # the model's depth is >= its min_depth by construction; a non-positive or NaN value makes the
        # sums below non-finite, and score() treats the frame as unscorable
        np.log(depth[::s, ::s], out=log_d)
        thumb = self._thumbs[0] if self._prev_thumb is not self._thumbs[0] else self._thumbs[1]
        cv2.resize(rgb, (SELECTION_THUMB[1], SELECTION_THUMB[0]), dst=thumb, interpolation=cv2.INTER_LINEAR)
        self._eu, self._prev_vector = eu, None
        return self._signals(cv2.sumElems(eu)[0] / eu.size, log_d, thumb)

    def graph_features(self, vector: np.ndarray, map_shape: Tuple[int, ...]) -> Optional[Dict[str, float]]:
        """The same signals from the model's 'selection' output (export/selection_graph.py), where the
        engine did the per-pixel work: two small comparisons with the previous frame's vector remain.
        None when the vector was made for another sampling grid (then `features()` is used)."""
        s = self.cfg.stride
        vector = vector.reshape(-1)
        if vector.size != selection_length(map_shape[-2:], s):
            return None
        gh, gw = selection_grid(map_shape[-2:], s)
        pair = self._vectors
        if pair is None or pair[0].size != vector.size:
            pair = self._vectors = (np.empty(vector.size, np.float32), np.empty(vector.size, np.float32))
        own = pair[0] if self._prev_vector is not pair[0] else pair[1]
        np.copyto(own, vector)  # the backend reuses its output slots; the next frame compares with this
        self._eu, self._prev_vector = None, own  # exp(u) on the grid: from the map if a candidate needs it
        return self._signals(float(own[0]), own[1:1 + gh * gw], own[1 + gh * gw:])

    def _signals(self, uncertainty: float, log_d: np.ndarray, thumb: np.ndarray) -> Dict[str, float]:
        """Temporal inconsistency with the previous prediction, and how much the image itself changed:
        mean |log D_t - log D_t-1| / 2 (= mean |D_t - D_t-1| / (D_t + D_t-1) to first order) and the
        thumbnail's mean absolute change as a fraction of 255. `log_d` and `thumb` become the previous."""
        prev, prev_thumb = self._prev_log_depth, self._prev_thumb
        if prev is not None and prev_thumb is not None and prev.shape == log_d.shape \
                and prev_thumb.dtype == thumb.dtype:  # (both from features(), or both from the graph)
            temporal = 0.5 * cv2.norm(log_d, prev, cv2.NORM_L1) / log_d.size
            image_change = cv2.norm(thumb, prev_thumb, cv2.NORM_L1) * (1.0 / (255.0 * thumb.size))
        else:  # nothing to compare with; 0 * the map's sum is still NaN for a map with NaN or -inf
            temporal, image_change = 0.0 * cv2.sumElems(log_d)[0], 0.0
        self._prev_log_depth, self._prev_thumb = log_d, thumb
        return {
            "uncertainty": uncertainty,
            "temporal": temporal,
            "image_change": image_change,
            # depth that changes while the picture does not: the network is unstable on this input
            "flicker": temporal / (image_change + self.cfg.image_change_floor),
        }

    def uncertainty_q90(self) -> float:
        """90th percentile of exp(u) of the frame last scored."""
        if self._eu is None:
            s = self.cfg.stride
            self._eu = np.exp(self._uncertainty[::s, ::s])
        eu = self._eu.ravel()
        k = int(0.9 * (eu.size - 1))
        return float(np.partition(eu, k)[k])

    def embedding(self) -> np.ndarray:
        """64-d unit vector of the frame last passed to `features()`: 8x6 grey thumbnail (zero-mean) +
        16-bin histogram of predicted log-depth, each half of norm 1/sqrt(2)."""
        prev = self._prev_thumb
        if prev.dtype == np.uint8:  # features(): 12x16x3 RGB
            grey = cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY).astype(np.float32)
        else:  # the graph's: planar RGB, 3x12x16 values 0..255
            grey = np.tensordot(GREY_WEIGHTS, prev.reshape(3, *SELECTION_THUMB), 1).astype(np.float32)
        thumb = cv2.resize(grey, (8, 6), interpolation=cv2.INTER_AREA).ravel()
        log_d = self._prev_log_depth
        bins = ((log_d - self._log_lo) * self._bin_scale).astype(np.int32).ravel()
        np.clip(bins, 0, 15, out=bins)  # depth outside [min_depth, max_depth] counts in the end bins
        hist = np.sqrt(np.bincount(bins, minlength=16)[:16] * (1.0 / bins.size))
        emb = self._emb
        thumb -= thumb.sum() / thumb.size
        norm = float(np.sqrt(thumb @ thumb))
        emb[:48] = thumb * np.float32(EMB_HALF / norm) if norm > 1e-3 else 0.0
        emb[48:] = hist * EMB_HALF
        return emb

    def set_reference(self, reference: Optional[Reference]) -> None:
        """Use (or stop using) a training-frame reference set, e.g. after a model update."""
        self.reference = reference
        self._novelty_ref = None

    def _reference_novelty(self, rgb: np.ndarray, image_change: float) -> float:
        """Novelty against the reference set, reused while the scene stays the same (see
        SelectionConfig.novelty_every; the embedding is about 55 us, the k-NN about 15 us at 600
        reference frames, too much for every frame of a 700 fps loop)."""
        cfg = self.cfg
        self._novelty_age += 1
        self._novelty_drift += image_change
        if (self._novelty_ref is None or self._novelty_age >= cfg.novelty_every
                or self._novelty_drift > cfg.novelty_recompute_change):
            self._novelty_ref = self.reference.novelty(appearance_embedding(rgb))
            self._novelty_age, self._novelty_drift = 0, 0.0
        return self._novelty_ref

    def novelty(self, emb: np.ndarray) -> float:
        """Distance to the nearest kept frame's embedding (2.0 when nothing is kept yet)."""
        n = min(self._n_kept_emb, self.cfg.ring)
        if n == 0:
            return 2.0
        sq = self._kept_sq[:n] - 2.0 * (self._kept[:n] @ emb) + float(emb @ emb)
        return float(np.sqrt(max(0.0, float(sq.min()))))

    # -- decision -----------------------------------------------------------------------------------
    def score(
        self, rgb: np.ndarray, depth: np.ndarray, uncertainty: np.ndarray, seq: int, t: float,
        features: Optional[np.ndarray] = None,
    ) -> Decision:
        """Score one frame and decide whether to keep it. `features`: the model's 'selection' output for
        this frame, if its graph computes one (used when it matches this selector's sampling grid)."""
        cfg = self.cfg
        self._uncertainty = uncertainty
        sig = self.graph_features(features, uncertainty.shape) if features is not None else None
        if sig is None:
            sig = self.features(rgb, depth, uncertainty)
        if not math.isfinite(sig["uncertainty"] + sig["temporal"]):
            # NaN, inf or non-positive depth somewhere (a broken frame or model): nothing to rank, and
            # nothing of it may enter the running state (flicker average, threshold window, the maps
            # the next frame is compared with), or one bad frame would skew every later score
            self._prev_log_depth = None
            self.rejected["invalid"] += 1
            return Decision(False, 0.0, {"score": 0.0, "invalid": 1.0}, "non-finite depth or uncertainty")
        a = cfg.temporal_smoothing
        self._flicker = sig["flicker"] if self._seen == 0 else (1 - a) * self._flicker + a * sig["flicker"]
        difficulty = sig["uncertainty"]
        if cfg.q90_weight:
            sig["uncertainty_q90"] = self.uncertainty_q90()
            difficulty += cfg.q90_weight * sig["uncertainty_q90"]
        score = difficulty * (1.0 + cfg.temporal_weight * self._flicker)
        untrusted = False  # too far from the training data for the uncertainty to mean anything (see (e))
        if self.reference is not None:  # epistemic factor: 1 like the training data, up to novelty_cap
            sig["novelty_ref"] = self._reference_novelty(rgb, sig["image_change"])
            if cfg.trust_novelty is not None and sig["novelty_ref"] >= cfg.trust_novelty:
                untrusted = True  # its score is only recorded: it neither ranks nor sets the threshold
                sig["untrusted"] = 1.0
            score *= 1.0 + max(0.0, min(sig["novelty_ref"], cfg.novelty_cap) - 1.0)
        sig["flicker_smoothed"], sig["score"] = self._flicker, score
        self._seen += 1
        self._tokens = min(self._tokens + cfg.rate, self._token_cap)
        if cfg.spend_budget:
            # the budget is what the fleet can afford to label: while it goes unspent (tokens pile up,
            # e.g. the spacing rule rejects clustered hard frames) the threshold slowly moves down the
            # ranking; while the bucket runs dry it moves back up, never below the top `rate`
            if self._tokens >= 2.0:
                self._quantile_rate = min(cfg.max_quantile_rate, self._quantile_rate * cfg.relax_step)
            elif self._tokens < 1.0:
                self._quantile_rate = max(cfg.rate, self._quantile_rate / cfg.relax_step)
        if not untrusted:  # an unjudged frame's nominal score must not move the threshold
            self._push_score(score)
        if cfg.mode == "none":
            return Decision(False, score, sig, "selection off")
        if cfg.mode == "random":
            if self.rng.random() >= cfg.rate:
                return Decision(False, score, sig, "random")
        elif self.reference is not None and cfg.novelty_threshold is not None:  # an absolute rule
            if sig["novelty_ref"] < cfg.novelty_threshold:
                self.rejected["threshold"] += 1
                return Decision(False, score, sig, "like the training data")
        elif untrusted:  # the model cannot judge this frame: sample it like `random` does
            if self.rng.random() >= cfg.rate:
                self.rejected["threshold"] += 1
                return Decision(False, score, sig, "too far from the training data to judge; not sampled")
        else:
            if self._seen <= cfg.warmup:
                self.rejected["warmup"] += 1
                return Decision(False, score, sig, "warm-up")
            if score <= self._threshold:  # strictly above: a flat stream of equal scores keeps nothing
                self.rejected["threshold"] += 1
                return Decision(False, score, sig, "below threshold")
        # a keep candidate: now the embedding (near-duplicates are never kept twice) and the full record
        emb = self.embedding()
        sig["novelty"] = min(self.novelty(emb), 2.0)
        if "uncertainty_q90" not in sig:
            sig["uncertainty_q90"] = self.uncertainty_q90()
        if cfg.mode != "random" and sig["novelty"] < cfg.novelty_min:
            self.rejected["duplicate"] += 1
            return Decision(False, score, sig, "near-duplicate of a kept frame")
        why = self._budget_refusal(seq, t)
        if why:
            return Decision(False, score, sig, why)
        if cfg.mode == "hard":
            if self._tokens < 1.0:  # never above `rate` in the long run, whatever the threshold does
                self.rejected["rate"] += 1
                return Decision(False, score, sig, "keep rate at its limit")
            self._tokens -= 1.0
        self._accept(emb, seq, t)
        sig["threshold"] = self._threshold if math.isfinite(self._threshold) else 0.0
        return Decision(True, score, sig, "kept")

    def _push_score(self, score: float) -> None:
        """Threshold = the (1 - rate) quantile of the last `window` scores, refreshed every 16 frames
        (a partial sort of the window: too slow for every frame, and the quantile moves slowly)."""
        cfg = self.cfg
        w = cfg.window
        self._scores[self._n_scores % w] = score
        self._n_scores += 1
        n = min(self._n_scores, w)
        if n < min(cfg.warmup, w) or (self._n_scores % 16 and math.isfinite(self._threshold)):
            return
        kth = min(n - 1, int((1.0 - self._quantile_rate) * (n - 1)))
        self._threshold = float(np.partition(self._scores[:n], kth)[kth])

    def _budget_refusal(self, seq: int, t: float) -> str:
        cfg = self.cfg
        if self._last_keep_seq is not None and seq < self._last_keep_seq:
            self._last_keep_seq = None  # the sequence restarted (a new run of the loop): no spacing to keep
        if self._last_keep_t is not None and t < self._last_keep_t:
            self._last_keep_t = None  # the stream clock restarted
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
        self._keep_times.append(t)
        self._last_keep_seq, self._last_keep_t = seq, t
        self.kept += 1
