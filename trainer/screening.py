"""Figures clinicians read: sensitivity, specificity and ROC AUC of a BDI-II cut-off, per predictor.

A video is *positive* when its true score is at least the cut-off (BDI-II manual: ≥ 14 "at least mild",
≥ 20 "at least moderate"); the predictor calls it positive when its score, rounded as the questionnaire's integer
sum is (labels.severity_of), is at least the cut-off. ROC AUC ranks videos by the predicted score: the
Mann–Whitney estimate P(score_pos > score_neg) + ½ P(tie) (Hanley & McNeil 1982) — a constant predictor gets 0.5.
Plain numpy (no scikit-learn at run time; the tests compare with scikit-learn's roc_auc_score).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: name → cut-off (inclusive) on the BDI-II, from the manual's bands (djldml.labels.SEVERITY_BANDS)
CUTOFFS = {"at_least_mild": 14, "at_least_moderate": 20}


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for boolean ``positive``; None when a class is empty."""
    pos, neg = np.asarray(score, np.float64)[positive], np.asarray(score, np.float64)[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def cutoff_metrics(true, predicted, cutoff: int) -> dict[str, Any]:
    """Sensitivity, specificity (None when undefined), ROC AUC and the class counts at ``cutoff``."""
    t = np.asarray(true, np.float64)
    p = np.asarray(predicted, np.float64)
    positive = np.rint(t) >= cutoff
    called = np.rint(p) >= cutoff
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return {"cutoff": cutoff, "n_positive": n_pos, "n_negative": n_neg,
            "sensitivity": float((called & positive).sum() / n_pos) if n_pos else None,
            "specificity": float((~called & ~positive).sum() / n_neg) if n_neg else None,
            "roc_auc": roc_auc(positive, p)}


def screening_metrics(true, predictions: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """{cut-off name: {predictor name: cutoff_metrics}} for every cut-off of :data:`CUTOFFS`."""
    return {name: {who: cutoff_metrics(true, p, cut) for who, p in predictions.items()}
            for name, cut in CUTOFFS.items()}
