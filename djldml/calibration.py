"""Calibration of the video distribution: what a model card's ``inference.calibration`` says and how it applies.

Fitted by ``trainer calibrate`` on the development split (held-out subjects, never the test split) and applied by
:func:`djldml.prediction.predict_video`, the one place every prediction is made — the service (both backends)
and ``trainer evaluate`` alike. Two methods (docs/training.md, "Calibration", has what each measured):

- ``temperature``: the video distribution p (the mean of the clip distributions) becomes
  p_T(k) ∝ p(k)^(1/T) (Guo et al. 2017, "On calibration of modern neural networks", applied to the
  probabilities rather than the logits because the video distribution is a mixture). T < 1 sharpens, T > 1
  widens; the score, std, interval and band probabilities all follow from p_T. T minimises the negative
  log-likelihood of the development scores.
- ``gaussian``: the video distribution becomes a discrete Gaussian over the 64 scores, p(k) ∝ exp(−(k−c)²/2σ²),
  whose centre c is chosen so that its expectation is the model's score (:func:`score_gaussian`; near the ends of
  the scale c lies beyond the score, as the scale truncates the Gaussian), with σ fitted by maximum likelihood on
  the development scores: the point score is kept exactly, and the spread is what the development errors say,
  not what the network's distribution head says.
- ``conformal``: split-conformal widening (Lei et al. 2018, "Distribution-free predictive inference for
  regression"): the interval is [score − q, score + q] on the integer scale, q the ⌈(n+1)·mass⌉-th smallest
  absolute error of the n development videos. The distribution (and so the band probabilities) is unchanged.

A card without the record is served uncalibrated, exactly as before. The TorchServe handler never applies it (it
returns clip distributions); the card reader validates it, so a malformed record refuses the archive at load.
Packed into the .mar with the card reader: keep it runnable on Python 3.9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import labels
from .errors import ModelError

METHODS = ("temperature", "gaussian", "conformal")


@dataclass(frozen=True)
class Calibration:
    method: str  # "temperature" or "conformal"
    temperature: float = 1.0  # T of p_T ∝ p^(1/T) ("temperature")
    sigma: float = 0.0  # σ in BDI-II points of the Gaussian around the score ("gaussian")
    half_width: float = 0.0  # q in BDI-II points: interval = score ± q ("conformal"; inf → the whole scale)
    interval_mass: float = 0.9  # the nominal coverage the calibration was fitted for
    fitted_on: dict[str, Any] = field(default_factory=dict)  # split, n_videos, coverage before/after on it, ...

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ModelError(f"calibration: method must be one of {METHODS}, got {self.method!r}")
        if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature < math.inf):  # noqa: UP038
            raise ModelError("calibration: temperature must be a positive finite number")
        if self.method == "gaussian" and not (isinstance(self.sigma, (int, float))  # noqa: UP038
                                              and 0 < self.sigma < math.inf):
            raise ModelError("calibration: sigma must be a positive finite number")
        if not (isinstance(self.half_width, (int, float)) and self.half_width >= 0):  # noqa: UP038
            raise ModelError("calibration: half_width must be ≥ 0")
        if not (isinstance(self.interval_mass, float) and 0 < self.interval_mass < 1):
            raise ModelError("calibration: interval_mass must be in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"method": self.method, "interval_mass": self.interval_mass, "fitted_on": self.fitted_on}
        if self.method == "temperature":
            d["temperature"] = self.temperature
        elif self.method == "gaussian":
            d["sigma"] = self.sigma
        else:  # JSON has no infinity: an unbounded widening is written as null
            d["half_width"] = None if math.isinf(self.half_width) else self.half_width
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """ModelError unless ``d`` is a record written by :meth:`to_dict`."""
        if not isinstance(d, dict) or "method" not in d:
            raise ModelError("calibration must be an object with a method")
        known = {"method", "temperature", "sigma", "half_width", "interval_mass", "fitted_on"}
        if set(d) - known:
            raise ModelError(f"calibration: unknown keys {sorted(set(d) - known)}")
        if d["method"] == "temperature" and "temperature" not in d:
            raise ModelError("calibration: temperature missing")
        if d["method"] == "gaussian" and "sigma" not in d:
            raise ModelError("calibration: sigma missing")
        if d["method"] == "conformal" and "half_width" not in d:
            raise ModelError("calibration: half_width missing")
        half = d.get("half_width", 0.0)
        return cls(method=d["method"], temperature=d.get("temperature", 1.0), sigma=d.get("sigma", 0.0),
                   half_width=math.inf if half is None else half,
                   interval_mass=float(d.get("interval_mass", 0.9)), fitted_on=dict(d.get("fitted_on") or {}))

    def distribution(self, video: np.ndarray) -> np.ndarray:
        """The calibrated video distribution (float64 [64], sums to 1); unchanged for ``conformal``."""
        if self.method == "gaussian":
            return score_gaussian(float(labels.expectation(video)), self.sigma)
        if self.method != "temperature" or self.temperature == 1.0:
            return video
        return temper(video, self.temperature)

    def interval(self, distribution: np.ndarray, score: float, mass: float) -> tuple[int, int]:
        """The interval of a (calibrated) video distribution with expectation ``score``, integer scores."""
        if self.method == "conformal" and mass == self.interval_mass:
            if math.isinf(self.half_width):
                return labels.MIN_SCORE, labels.MAX_SCORE
            low = max(labels.MIN_SCORE, math.ceil(score - self.half_width - 1e-9))
            high = min(labels.MAX_SCORE, math.floor(score + self.half_width + 1e-9))
            return int(low), int(max(low, high))
        lo, hi = labels.central_interval(distribution, mass)
        return int(lo), int(hi)


def temper(p: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1/T) renormalised over the last axis (float64). Computed from p / max p so that a small T never
    underflows every bin to zero."""
    p = np.asarray(p, np.float64)
    q = np.power(p / p.max(axis=-1, keepdims=True), 1.0 / temperature)
    return q / q.sum(axis=-1, keepdims=True)


def _gaussian(centre: np.ndarray, sigma: float) -> np.ndarray:
    """p(k) ∝ exp(−(k − c)²/2σ²) over the 64 scores for each centre c (float64 [..., 64]; c not clamped)."""
    z = -((labels.SCORES - np.asarray(centre, np.float64)[..., None]) ** 2) / (2.0 * sigma**2)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def score_gaussian(score, sigma: float) -> np.ndarray:
    """The discrete Gaussian of width ``sigma`` whose expectation equals ``score`` (float or float [n] → float64
    [..., 64]). The expectation grows monotonically with the centre, so the centre is found by bisection (80
    halvings of a range of 63 + 2·(100σ + 100) points: below float64 resolution). A score within about 0.05 of
    either end needs a centre beyond that range at σ ≳ 12; its expectation then stops short by < 0.1 point."""
    s = np.clip(np.asarray(score, np.float64), labels.MIN_SCORE + 1e-9, labels.MAX_SCORE - 1e-9)
    lo = np.full(s.shape, labels.MIN_SCORE - 100.0 * sigma - 100.0)
    hi = np.full(s.shape, labels.MAX_SCORE + 100.0 * sigma + 100.0)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        below = labels.expectation(_gaussian(mid, sigma)) < s
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return _gaussian(0.5 * (lo + hi), sigma)


def calibration_of(card_inference: dict[str, Any] | None) -> Calibration | None:
    """The calibration a model card's ``inference`` section records (absent: None, served uncalibrated).
    ModelError when the record is malformed."""
    record = (card_inference or {}).get("calibration")
    return None if record is None else Calibration.from_dict(record)
