"""Contract 3 — prediction: per-clip distributions ``[N, 64]`` → one video prediction.

The video distribution is the mean of the clip distributions; the score is its expectation; std, the central
interval, the severity band and band probabilities follow from it. ``trainer evaluate`` and the service both
call :func:`predict_video`, so the figures the trainer reports are the figures the service would give. A model
card's calibration (:mod:`djldml.calibration`) is applied here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import labels
from .calibration import Calibration
from .errors import ModelError

DEFAULT_INTERVAL_MASS = 0.9


@dataclass
class VideoPrediction:
    distribution: np.ndarray  # float64 [64], sums to 1
    score: float  # expectation of distribution, in [0, 63]
    std: float
    interval: tuple[int, int]  # central interval holding interval_mass
    interval_mass: float
    severity: str  # band of the (rounded) score
    band_probabilities: dict[str, float]  # band name → probability, in SEVERITY_BANDS order
    clip_scores: np.ndarray  # float64 [N], expectation of each clip's distribution
    clip_start_times: np.ndarray | None = field(default=None)  # seconds, when known

    def to_dict(self) -> dict:
        """JSON-ready form (lists and floats)."""
        timeline = None
        if self.clip_start_times is not None:
            timeline = [{"start_time": float(t), "score": float(s)}
                        for t, s in zip(self.clip_start_times, self.clip_scores, strict=True)]
        return {
            "bdi_score": self.score,
            "distribution": [float(p) for p in self.distribution],
            "std": self.std,
            "interval": {"mass": self.interval_mass, "low": self.interval[0], "high": self.interval[1]},
            "severity": self.severity,
            "band_probabilities": self.band_probabilities,
            "clip_scores": [float(s) for s in self.clip_scores],
            "timeline": timeline,
        }


def predict_video(
    clip_distributions: np.ndarray,
    clip_start_times: np.ndarray | None = None,
    interval_mass: float = DEFAULT_INTERVAL_MASS,
    calibration: Calibration | None = None,
) -> VideoPrediction:
    """Aggregate ``[N, 64]`` clip distributions (N ≥ 1) into one :class:`VideoPrediction`.

    ``calibration``: the model card's (:func:`djldml.calibration.calibration_of`); it transforms the video
    distribution (temperature) or sets the interval (conformal) — None: uncalibrated. ModelError on malformed
    distributions."""
    d = np.asarray(clip_distributions, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != labels.NUM_BINS or len(d) == 0:
        raise ModelError(f"expected clip distributions [N≥1, {labels.NUM_BINS}], got {d.shape}")
    if not np.isfinite(d).all() or (d < -1e-6).any():
        raise ModelError("clip distributions contain negative or non-finite values")
    d = np.clip(d, 0.0, None)
    d /= d.sum(axis=1, keepdims=True)  # float32 softmax outputs sum to 1 only up to rounding
    video = d.mean(axis=0)
    video /= video.sum()
    if calibration is not None:
        video = calibration.distribution(video)
    score = float(labels.expectation(video))
    if calibration is not None:
        lo, hi = calibration.interval(video, score, interval_mass)
    else:
        lo_hi = labels.central_interval(video, interval_mass)
        lo, hi = int(lo_hi[0]), int(lo_hi[1])
    bands = labels.band_probabilities(video)
    if clip_start_times is not None:
        clip_start_times = np.asarray(clip_start_times, dtype=np.float64)
        if clip_start_times.shape != (len(d),):
            raise ModelError("one start time per clip expected")
    return VideoPrediction(
        distribution=video,
        score=score,
        std=float(labels.std(video)),
        interval=(int(lo), int(hi)),
        interval_mass=interval_mass,
        severity=labels.severity_of(score),
        band_probabilities={b.name: float(p) for b, p in zip(labels.SEVERITY_BANDS, bands, strict=True)},
        clip_scores=np.asarray(labels.expectation(d), dtype=np.float64),
        clip_start_times=clip_start_times,
    )
