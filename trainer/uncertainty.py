"""Whether a model's uncertainty means what it says: interval coverage and width, Brier score, reliability.

All functions take per-video arrays (no per-video output is logged). Sources of the formulas:
- coverage: the fraction of videos whose true score lies in the predicted interval [low, high] (inclusive), with
  its Wilson score 95 % interval (Wilson 1927; better than ±1.96·√(p(1−p)/n) at the small n of a test split);
- Brier score of the severity-band probabilities: mean over videos of Σ_b (p_b − 1[true band = b])² (Brier 1950,
  the multi-category form; 0 is perfect, a uniform guess over 4 bands scores 0.75);
- NLL: mean −log p(round(true score)) of the video distribution (the quantity the temperature minimises);
- reliability: the (video, band) probabilities pooled and binned; per bin the mean predicted probability and the
  observed frequency of the band (a calibrated model lies on the diagonal).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from djldml import labels
from djldml.calibration import Calibration
from djldml.prediction import VideoPrediction

Z95 = 1.959963984540054  # standard normal 97.5 % quantile
NLL_FLOOR = 1e-12  # probability floor of the NLL (a bin with exactly zero mass would give +inf)


def wilson_interval(successes: int, n: int, z: float = Z95) -> list[float]:
    """Wilson score interval [low, high] of a binomial proportion (n ≥ 1)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def band_index(true) -> np.ndarray:
    """Index in labels.SEVERITY_BANDS of each true score (int [n])."""
    return np.array([[b.name for b in labels.SEVERITY_BANDS].index(labels.severity_of(t)) for t in np.ravel(true)])


def brier_score(band_probabilities: np.ndarray, true) -> float:
    """Multi-category Brier score; ``band_probabilities`` float [n, 4] in SEVERITY_BANDS order."""
    p = np.asarray(band_probabilities, np.float64)
    onehot = np.eye(p.shape[1])[band_index(true)]
    return float(((p - onehot) ** 2).sum(1).mean())


def interval_metrics(true, low, high, distributions: np.ndarray, band_probabilities: np.ndarray,
                     mass: float) -> dict[str, Any]:
    """Coverage (with Wilson interval), mean width (high − low, BDI-II points), Brier score and NLL."""
    t = np.asarray(true, np.float64)
    lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
    covered = (lo <= t) & (t <= hi)
    d = np.asarray(distributions, np.float64)
    k = np.clip(np.rint(t).astype(int) - labels.MIN_SCORE, 0, labels.NUM_BINS - 1)
    nll = -np.log(np.maximum(d[np.arange(len(t)), k], NLL_FLOOR))
    return {"interval_mass": mass, "coverage": float(covered.mean()), "covered": int(covered.sum()), "n": len(t),
            "coverage_ci95": wilson_interval(int(covered.sum()), len(t)), "mean_width": float((hi - lo).mean()),
            "brier": brier_score(band_probabilities, t), "nll": float(nll.mean())}


def reliability_bins(band_probabilities: np.ndarray, true, n_bins: int = 5) -> list[dict[str, float]]:
    """Equal-width bins of the pooled band probabilities: {low, high, count, mean_predicted, observed} per
    non-empty bin."""
    p = np.asarray(band_probabilities, np.float64)
    onehot = np.eye(p.shape[1])[band_index(true)]
    p, o = p.ravel(), onehot.ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = which == b
        if m.any():
            out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(m.sum()),
                        "mean_predicted": float(p[m].mean()), "observed": float(o[m].mean())})
    return out


def uncertainty_report(results: list, calibration: Calibration | None) -> dict[str, Any]:
    """Coverage, width, Brier, NLL and reliability bins of the uncalibrated predictions ("before") and, when a
    calibration applies, of the served ones ("after"), with the calibration's record. ``results``: objects with
    ``true``, ``prediction`` (as served) and ``uncalibrated`` (trainer.evaluate.VideoResult)."""
    true = np.array([r.true for r in results])

    def measured(preds: list[VideoPrediction]) -> dict[str, Any]:
        bands = np.array([list(p.band_probabilities.values()) for p in preds])
        return {**interval_metrics(true, [p.interval[0] for p in preds], [p.interval[1] for p in preds],
                                   np.array([p.distribution for p in preds]), bands, preds[0].interval_mass),
                "reliability": reliability_bins(bands, true)}

    report: dict[str, Any] = {"before": measured([r.uncalibrated for r in results])}
    if calibration is not None:
        report["after"] = measured([r.prediction for r in results])
        report["calibration"] = calibration.to_dict()
    return report
