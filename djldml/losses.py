"""The DJ-LDML training losses (docs/method.md §2–3), one small class each; the docstring states the formula.

- :class:`LDLLoss` — label distribution learning: KL(p ‖ q) between the Gaussian label distribution p of the
  score and the predicted softmax q, plus an optional λ_L1·|E[q] − y| on the expectation (DLDL-v2).
- :class:`LabelAwareHistogramLoss` — the histogram loss of Ustinova & Lempitsky (2016) with every pair
  weighted by the overlap of its two label distributions instead of a hard positive/negative split.
- :class:`RegressionLoss` — L1 or MSE on a scalar score (the ``regression`` ablation).
- :class:`JointObjective` — combines them for the four objectives ``regression``, ``ldl``, ``regression+dml``
  and ``djldml``.

All losses compute in float32 (or float64 when given float64) whatever the autocast dtype of the network, and
return a mean over the batch (the histogram loss: one value for the batch's pairs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import labels
from .network import NetOutput

OBJECTIVES = ("regression", "ldl", "regression+dml", "djldml")


def _float(x: torch.Tensor) -> torch.Tensor:
    """Upcast half/bfloat16 activations (AMP) to float32; leave float32/float64 alone."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class LDLLoss(nn.Module):
    """L = mean_i [ KL(p_i ‖ q_i) + λ_L1 · |Σ_k k·q_i,k − y_i| ].

    p_i = ``labels.label_distribution(y_i, sigma)`` (discrete Gaussian over the 64 scores), q_i = softmax of the
    logits. KL(p‖q) = Σ_k p_k (log p_k − log q_k) with 0·log 0 = 0; the mean over the batch equals
    ``F.kl_div(log_softmax(logits), p, reduction="batchmean")``. ``l1_weight`` = 0 disables the L1 term.
    """

    def __init__(self, sigma: float = labels.DEFAULT_SIGMA, l1_weight: float = 0.0):
        super().__init__()
        self.sigma = float(sigma)
        self.l1_weight = float(l1_weight)

    def forward(self, logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = _float(logits)
        log_q = F.log_softmax(logits, dim=-1)
        p = labels.label_distribution(scores.to(logits.dtype), self.sigma)
        # xlogy gives 0·log 0 = 0 where the Gaussian underflows to exactly 0 far from y.
        kl = (torch.xlogy(p, p) - p * log_q).sum(-1)
        loss = kl.mean()
        if self.l1_weight:
            expected = labels.expectation(log_q.exp())
            loss = loss + self.l1_weight * (expected - scores.to(logits.dtype)).abs().mean()
        return loss


class RegressionLoss(nn.Module):
    """L = mean_i |ŷ_i − y_i| (``kind="l1"``) or mean_i (ŷ_i − y_i)² (``kind="mse"``)."""

    def __init__(self, kind: str = "l1"):
        super().__init__()
        if kind not in ("l1", "mse"):
            raise ValueError(f"regression loss must be 'l1' or 'mse', got {kind!r}")
        self.kind = kind

    def forward(self, predicted: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        predicted = _float(predicted)
        scores = scores.to(predicted.dtype)
        return F.l1_loss(predicted, scores) if self.kind == "l1" else F.mse_loss(predicted, scores)


def soft_histogram(similarities: torch.Tensor, weights: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Weighted soft histogram of values in [−1, 1] on the n_bins + 1 nodes t_r = −1 + r·Δ, Δ = 2/n_bins.

    Each value s adds weight·(1 − |s − t_r|/Δ) to its two nearest nodes (linear interpolation), so the
    histogram is piecewise linear in s and differentiable almost everywhere. Normalised by Σ weights.
    """
    delta = 2.0 / n_bins
    s = similarities.clamp(-1.0, 1.0)
    # Left node index; s = 1 exactly would index node n_bins + 1, so the last interval is closed on the right.
    left = torch.floor((s + 1.0) / delta).clamp(0, n_bins - 1)
    frac = (s + 1.0) / delta - left  # position inside [t_left, t_left+1], in [0, 1]
    idx = left.long()
    hist = torch.zeros(n_bins + 1, dtype=s.dtype, device=s.device)
    hist = hist.scatter_add(0, idx, weights * (1.0 - frac))
    hist = hist.scatter_add(0, idx + 1, weights * frac)
    return hist / weights.sum().clamp_min(torch.finfo(s.dtype).tiny)


class LabelAwareHistogramLoss(nn.Module):
    """Label-aware histogram loss (docs/method.md §3, reconstructed).

    For the unordered pairs i < j of a batch with L2-normalised embeddings e: s_ij = e_i · e_j ∈ [−1, 1] and a
    pair weight w_ij ∈ [0, 1]:

    - soft weights (default): w_ij = Σ_k sqrt(p_i,k · p_j,k), the Bhattacharyya overlap of the two Gaussian
      label distributions (σ = ``sigma``) — 1 for equal scores, exp(−(y_i − y_j)²/(8σ²)) away from the ends;
    - ``hard=True``: w_ij = 1 if y_i = y_j else 0 (Ustinova & Lempitsky's original loss).

    h⁺ = soft_histogram(s, w), h⁻ = soft_histogram(s, 1 − w) on n_bins + 1 nodes from −1 to 1, and
    L = Σ_r h⁻_r · Σ_{q ≤ r} h⁺_q — the estimated probability that a dissimilar pair is more similar than a
    similar one. With hard weights this equals ``pytorch_metric_learning.losses.HistogramLoss(n_bins)`` whenever
    every clip of the batch has at least one equal-label partner (that implementation drops the pairs of two
    clips that have none). A batch with no similar (or no dissimilar) weight gives 0.
    """

    def __init__(self, n_bins: int = 100, sigma: float = labels.DEFAULT_SIGMA, hard: bool = False):
        super().__init__()
        if n_bins < 1:
            raise ValueError("n_bins must be ≥ 1")
        self.n_bins = int(n_bins)
        self.sigma = float(sigma)
        self.hard = bool(hard)

    def pair_weights(self, scores: torch.Tensor) -> torch.Tensor:
        """``[N, N]`` matrix of w_ij (the diagonal is 1 and unused)."""
        if self.hard:
            return (scores[:, None] == scores[None, :]).to(scores.dtype)
        p = labels.label_distribution(scores, self.sigma)
        return labels.bhattacharyya_overlap(p[:, None, :], p[None, :, :]).clamp(0.0, 1.0)

    def forward(self, embeddings: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        e = F.normalize(_float(embeddings), dim=1)
        scores = scores.to(e.dtype)
        i, j = torch.triu_indices(len(e), len(e), offset=1, device=e.device)
        if len(i) == 0:
            return e.sum() * 0.0  # keeps the graph: a batch of one clip has no pairs
        sim = (e[i] * e[j]).sum(-1)
        w = self.pair_weights(scores)[i, j]
        if w.sum() <= 0 or (1.0 - w).sum() <= 0:
            return sim.sum() * 0.0
        h_pos = soft_histogram(sim, w, self.n_bins)
        h_neg = soft_histogram(sim, 1.0 - w, self.n_bins)
        return (h_neg * torch.cumsum(h_pos, 0)).sum()


@dataclass
class LossParts:
    """The total loss and its named parts (detached floats for the metrics log)."""

    total: torch.Tensor
    parts: dict[str, float]


class JointObjective(nn.Module):
    """L = L_main + λ_DML · L_DML (docs/method.md §3, "Joint objective"), for one of :data:`OBJECTIVES`:

    - ``regression``: L_main = RegressionLoss on the regression head's score;  no DML term;
    - ``ldl``: L_main = LDLLoss on the distribution head's logits;              no DML term;
    - ``regression+dml``: regression + λ_DML · LabelAwareHistogramLoss on the embeddings;
    - ``djldml``: LDL + λ_DML · LabelAwareHistogramLoss (the method).

    :func:`head_for` says which network head an objective needs.
    """

    def __init__(
        self,
        objective: str = "djldml",
        sigma: float = labels.DEFAULT_SIGMA,
        l1_weight: float = 0.0,
        dml_weight: float = 1.0,
        n_bins: int = 100,
        hard_pairs: bool = False,
        regression_loss: str = "l1",
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective
        self.dml_weight = float(dml_weight)
        if objective.startswith("regression"):
            self.main: nn.Module = RegressionLoss(regression_loss)
        else:
            self.main = LDLLoss(sigma, l1_weight)
        self.dml = LabelAwareHistogramLoss(n_bins, sigma, hard_pairs) if self.uses_dml else None

    @property
    def uses_dml(self) -> bool:
        return self.objective in ("regression+dml", "djldml")

    def forward(self, out: NetOutput, scores: torch.Tensor) -> LossParts:
        if self.objective.startswith("regression"):
            if out.score is None:
                raise ValueError(f"objective {self.objective!r} needs the network's regression head")
            main = self.main(out.score, scores)
        else:
            if out.logits is None:
                raise ValueError(f"objective {self.objective!r} needs the network's distribution head")
            main = self.main(out.logits, scores)
        parts = {"main": float(main.detach())}
        total = main
        if self.dml is not None:
            dml = self.dml(out.embedding, scores)
            parts["dml"] = float(dml.detach())
            total = total + self.dml_weight * dml
        parts["total"] = float(total.detach())
        return LossParts(total, parts)


def head_for(objective: str) -> str:
    """The :class:`djldml.network.NetConfig` head an objective trains: ``regression`` or ``distribution``."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return "regression" if objective.startswith("regression") else "distribution"
