"""Contract 1 — the BDI-II label scale and label distributions.

Everything that knows the scale (64 integer scores 0..63, the severity bands of the BDI-II manual) imports it
from here: the trainer (targets, metrics), the TorchServe handler and the service (response). Functions accept
numpy arrays or torch tensors and work on the last axis, so a batch ``[..., 64]`` is handled in one call.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_SCORE = 0
MAX_SCORE = 63
NUM_BINS = MAX_SCORE - MIN_SCORE + 1  # 64 bins, one per integer score

#: The scores 0..63 as floats, the support of every label distribution.
SCORES = np.arange(MIN_SCORE, MAX_SCORE + 1, dtype=np.float64)

#: Default σ of the Gaussian label distribution (docs/method.md §2; deep-LDL practice for ages).
DEFAULT_SIGMA = 2.0


@dataclass(frozen=True)
class SeverityBand:
    name: str
    low: int  # inclusive
    high: int  # inclusive


#: BDI-II manual cut-offs (Beck, Steer & Brown 1996).
SEVERITY_BANDS: tuple[SeverityBand, ...] = (
    SeverityBand("minimal", 0, 13),
    SeverityBand("mild", 14, 19),
    SeverityBand("moderate", 20, 28),
    SeverityBand("severe", 29, 63),
)

Array = Any  # np.ndarray or torch.Tensor


def _is_tensor(x) -> bool:
    # torch is imported lazily: the gateway uses the label maths without loading torch (≈250 MB). A tensor
    # cannot exist unless torch is already imported, so looking in sys.modules is exact.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _support(like: Array) -> Array:
    if _is_tensor(like):
        import torch

        return torch.arange(NUM_BINS, dtype=like.dtype if like.is_floating_point() else torch.float32,
                            device=like.device) + MIN_SCORE
    return SCORES.copy()


def clamp_score(score):
    """Clamp scores to the scale [0, 63]."""
    if _is_tensor(score):
        return score.clamp(MIN_SCORE, MAX_SCORE)
    return np.clip(score, MIN_SCORE, MAX_SCORE)


def label_distribution(score, sigma: float = DEFAULT_SIGMA):
    """Discrete Gaussian over the 64 bins centred at ``score``: p_k ∝ exp(−(k−y)²/(2σ²)), normalised.

    ``score`` may be a float, a numpy array or a torch tensor of any shape ``S``; the result has shape
    ``S + (64,)`` in the same library (float64 for numpy, the tensor's float dtype for torch).
    Scores outside 0..63 are clamped first (a label must lie on the scale).
    """
    if sigma <= 0:
        raise ValueError("sigma must be positive")
    if _is_tensor(score):
        import torch

        y = clamp_score(score.to(torch.float32 if not score.is_floating_point() else score.dtype))
        k = _support(y)
        logits = -((k - y.unsqueeze(-1)) ** 2) / (2.0 * sigma**2)
        return torch.softmax(logits, dim=-1)  # softmax = exp / sum, numerically stable
    y = clamp_score(np.asarray(score, dtype=np.float64))
    logits = -((SCORES - y[..., None]) ** 2) / (2.0 * sigma**2)
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=-1, keepdims=True)


def expectation(dist):
    """Σ_k k·p_k over the last axis: the predicted score."""
    return (dist * _support(dist)).sum(-1)


def std(dist):
    """Standard deviation of the score under ``dist`` (last axis)."""
    k = _support(dist)
    mu = expectation(dist)
    var = (dist * (k - mu[..., None]) ** 2).sum(-1)
    return var.clamp_min(0).sqrt() if _is_tensor(var) else np.sqrt(np.maximum(var, 0))


def central_interval(dist, mass: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed interval [lo, hi] of integer scores holding at least ``mass`` of the probability.

    lo is the smallest score whose CDF exceeds (1−mass)/2, hi the smallest whose CDF reaches 1−(1−mass)/2.
    Returned as numpy int arrays of the batch shape (0-d for one distribution).
    """
    if not 0 < mass < 1:
        raise ValueError("mass must be in (0, 1)")
    p = dist.detach().cpu().double().numpy() if _is_tensor(dist) else np.asarray(dist, np.float64)
    cdf = np.cumsum(p, axis=-1)
    cdf /= cdf[..., -1:]
    tail = (1.0 - mass) / 2.0
    lo = (cdf > tail - 1e-12).argmax(-1) + MIN_SCORE
    hi = (cdf >= 1.0 - tail - 1e-12).argmax(-1) + MIN_SCORE
    return lo, hi


def severity_of(score) -> str:
    """The BDI-II band of a score (rounded to the nearest integer first, as the questionnaire sums integers)."""
    s = int(np.clip(round(float(score)), MIN_SCORE, MAX_SCORE))
    for band in SEVERITY_BANDS:
        if band.low <= s <= band.high:
            return band.name
    raise AssertionError("bands cover the scale")  # pragma: no cover


def band_probabilities(dist):
    """Probability mass of each severity band, last axis → ``[..., len(SEVERITY_BANDS)]`` (order of SEVERITY_BANDS)."""
    parts = [dist[..., b.low - MIN_SCORE : b.high - MIN_SCORE + 1].sum(-1) for b in SEVERITY_BANDS]
    if _is_tensor(dist):
        return sys.modules["torch"].stack(parts, -1)
    return np.stack(parts, -1)


def bhattacharyya_overlap(p, q):
    """Σ_k sqrt(p_k q_k) over the last axis: 1 for equal distributions, 0 for disjoint ones.

    Used as the pair weight of the label-aware histogram loss (docs/method.md §3).
    """
    if _is_tensor(p):
        return (p.clamp_min(0) * q.clamp_min(0)).sqrt().sum(-1)
    return np.sqrt(np.clip(p, 0, None) * np.clip(q, 0, None)).sum(-1)


def point_distribution(score):
    """A score as a distribution on its two nearest bins (linear interpolation), so expectation == score.

    How a regression head's scalar output enters the prediction contract: it has no learned uncertainty, and
    unlike a Gaussian it does not bias the expectation near the ends of the scale.
    """
    import torch

    if _is_tensor(score):
        y = clamp_score(score if score.is_floating_point() else score.float()) - MIN_SCORE
        lo = y.floor().clamp(0, NUM_BINS - 1)
        frac = y - lo
        hi = (lo + 1).clamp(max=NUM_BINS - 1)
        out = torch.zeros(*y.shape, NUM_BINS, dtype=y.dtype, device=y.device)
        out.scatter_add_(-1, lo.long().unsqueeze(-1), (1 - frac).unsqueeze(-1))
        out.scatter_add_(-1, hi.long().unsqueeze(-1), frac.unsqueeze(-1))
        return out
    return point_distribution(torch.as_tensor(np.asarray(score, dtype=np.float64))).numpy()
