"""Each loss against a slow, obviously-correct reference, an independent oracle, and a float64 gradient check."""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import HistogramLoss

from djldml import labels
from djldml.losses import (
    OBJECTIVES,
    JointObjective,
    LabelAwareHistogramLoss,
    LDLLoss,
    RegressionLoss,
    head_for,
    soft_histogram,
)
from djldml.network import NetOutput

# pytorch-metric-learning indexes with a list of lists, which torch flags as deprecated; the oracle still holds.
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")


def gaussian_reference(y: float, sigma: float) -> list[float]:
    w = [math.exp(-((k - y) ** 2) / (2 * sigma**2)) for k in range(64)]
    return [x / sum(w) for x in w]


def ldl_reference(logits, scores, sigma, l1_weight):
    total = 0.0
    for row, y in zip(logits.tolist(), scores.tolist(), strict=True):
        m = max(row)
        z = sum(math.exp(v - m) for v in row)
        q = [math.exp(v - m) / z for v in row]
        p = gaussian_reference(y, sigma)
        kl = sum(pk * math.log(pk / qk) for pk, qk in zip(p, q, strict=True) if pk > 0)
        expected = sum(k * qk for k, qk in enumerate(q))
        total += kl + l1_weight * abs(expected - y)
    return total / len(scores)


def histogram_reference(emb, scores, n_bins, sigma, hard):
    """Pairs, nodes and weights in plain Python loops."""
    e = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in emb.tolist()]
    ys = scores.tolist()
    delta = 2.0 / n_bins
    nodes = [-1 + r * delta for r in range(n_bins + 1)]
    h_pos, h_neg = [0.0] * len(nodes), [0.0] * len(nodes)
    w_pos = w_neg = 0.0
    for i in range(len(e)):
        for j in range(i + 1, len(e)):
            s = sum(a * b for a, b in zip(e[i], e[j], strict=True))
            if hard:
                w = 1.0 if ys[i] == ys[j] else 0.0
            else:
                pi, pj = gaussian_reference(ys[i], sigma), gaussian_reference(ys[j], sigma)
                w = sum(math.sqrt(a * b) for a, b in zip(pi, pj, strict=True))
            for r, t in enumerate(nodes):
                share = max(0.0, 1.0 - abs(s - t) / delta)
                h_pos[r] += w * share
                h_neg[r] += (1 - w) * share
            w_pos += w
            w_neg += 1 - w
    h_pos = [h / w_pos for h in h_pos]
    h_neg = [h / w_neg for h in h_neg]
    return sum(h_neg[r] * sum(h_pos[: r + 1]) for r in range(len(nodes)))


@pytest.mark.parametrize("l1_weight", [0.0, 0.3])
@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.5])
def test_ldl_matches_reference(sigma, l1_weight):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 64, generator=g, dtype=torch.float64) * 3
    scores = torch.tensor([0.0, 63.0, 10.0, 10.4, 31.7, 5.0, 48.0], dtype=torch.float64)
    got = LDLLoss(sigma, l1_weight)(logits, scores)
    assert got.item() == pytest.approx(ldl_reference(logits, scores, sigma, l1_weight), rel=1e-9, abs=1e-12)


def test_ldl_equals_torch_kl_div():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(9, 64, generator=g)
    scores = torch.randint(0, 64, (9,), generator=g).float()
    p = labels.label_distribution(scores, 2.0)
    oracle = F.kl_div(F.log_softmax(logits, 1), p, reduction="batchmean")
    assert LDLLoss(2.0)(logits, scores).item() == pytest.approx(oracle.item(), rel=1e-5)


def test_ldl_is_zero_when_prediction_equals_target():
    scores = torch.tensor([3.0, 40.0], dtype=torch.float64)
    logits = labels.label_distribution(scores, 2.0).log()
    assert LDLLoss(2.0)(logits, scores).item() == pytest.approx(0.0, abs=1e-12)


def test_ldl_gradcheck():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 64, generator=g, dtype=torch.float64, requires_grad=True)
    scores = torch.tensor([1.0, 20.0, 33.3, 62.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: LDLLoss(2.0, 0.5)(x, scores), (logits,))


@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_regression_matches_reference_and_gradcheck(kind):
    g = torch.Generator().manual_seed(4)
    pred = (torch.rand(6, generator=g, dtype=torch.float64) * 63).requires_grad_()
    scores = torch.tensor([0.0, 5.0, 12.0, 30.0, 44.0, 63.0], dtype=torch.float64)
    diffs = [a - b for a, b in zip(pred.tolist(), scores.tolist(), strict=True)]
    want = sum(abs(d) if kind == "l1" else d * d for d in diffs) / len(diffs)
    assert RegressionLoss(kind)(pred, scores).item() == pytest.approx(want, rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: RegressionLoss(kind)(x, scores), (pred,))


def test_soft_histogram_interpolates_between_nodes():
    h = soft_histogram(torch.tensor([-1.0, 0.25, 1.0]), torch.ones(3), n_bins=4)  # nodes -1,-.5,0,.5,1
    assert h.tolist() == pytest.approx([1 / 3, 0.0, 0.5 / 3, 0.5 / 3, 1 / 3])


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("n_bins", [5, 100])
def test_histogram_matches_reference(hard, n_bins):
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(10, 6, generator=g, dtype=torch.float64)
    scores = torch.tensor([3, 3, 4, 10, 10, 11, 30, 30, 31, 63], dtype=torch.float64)
    got = LabelAwareHistogramLoss(n_bins, 2.0, hard)(emb, scores)
    assert got.item() == pytest.approx(histogram_reference(emb, scores, n_bins, 2.0, hard), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_bins", [10, 100])
def test_hard_histogram_equals_pytorch_metric_learning(seed, n_bins):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(24, 16, generator=g)
    # every label at least twice: PML keeps only pairs whose anchor has a positive (see the class docstring)
    scores = torch.randint(0, 6, (12,), generator=g).repeat(2)[torch.randperm(24, generator=g)]
    ours = LabelAwareHistogramLoss(n_bins, hard=True)(emb, scores.float())
    oracle = HistogramLoss(n_bins=n_bins)(emb, scores)
    assert ours.item() == pytest.approx(oracle.item(), rel=1e-5, abs=1e-7)


def test_soft_weights_are_label_overlaps():
    loss = LabelAwareHistogramLoss(sigma=2.0)
    w = loss.pair_weights(torch.tensor([20.0, 20.0, 21.0, 40.0], dtype=torch.float64))
    assert w[0, 1].item() == pytest.approx(1.0)
    assert w[0, 2].item() == pytest.approx(math.exp(-1 / 32), rel=1e-6)  # Gaussian overlap exp(-Δ²/8σ²)
    assert w[0, 3].item() < 1e-5


def test_histogram_gradcheck():
    g = torch.Generator().manual_seed(6)
    emb = torch.randn(8, 5, generator=g, dtype=torch.float64, requires_grad=True)
    scores = torch.tensor([1, 2, 2, 9, 15, 15, 40, 41], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: LabelAwareHistogramLoss(10, 2.0)(x, scores), (emb,))


def test_histogram_orders_embeddings_by_score():
    """Embeddings that sort by score have a lower loss than the same embeddings shuffled."""
    scores = torch.arange(0, 64, 4, dtype=torch.float64)
    angle = scores / 63 * math.pi
    ordered = torch.stack([angle.cos(), angle.sin()], 1)
    shuffled = ordered[torch.randperm(len(scores), generator=torch.Generator().manual_seed(0))]
    loss = LabelAwareHistogramLoss(50, 4.0)
    assert loss(ordered, scores) < loss(shuffled, scores)


def test_histogram_degenerate_batches_give_zero_with_graph():
    emb = torch.randn(3, 4, requires_grad=True)
    for scores in (torch.tensor([5.0]), torch.tensor([0.0, 30.0, 63.0])):
        out = LabelAwareHistogramLoss(hard=True)(emb[: len(scores)], scores)
        assert out.item() == 0.0
        out.backward()


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_joint_objective_combines_parts(objective):
    g = torch.Generator().manual_seed(7)
    scores = torch.tensor([2.0, 2.0, 30.0, 31.0])
    emb = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    if head_for(objective) == "regression":
        out = NetOutput(logits=None, score=torch.rand(4, generator=g) * 63, embedding=emb)
        main = RegressionLoss("l1")(out.score, scores)
    else:
        out = NetOutput(logits=torch.randn(4, 64, generator=g), score=None, embedding=emb)
        main = LDLLoss(2.0)(out.logits, scores)
    result = JointObjective(objective, dml_weight=0.7, n_bins=20)(out, scores)
    want = main
    if objective.endswith("dml"):
        want = main + 0.7 * LabelAwareHistogramLoss(20, 2.0)(emb, scores)
        assert set(result.parts) == {"main", "dml", "total"}
    assert result.total.item() == pytest.approx(want.item(), rel=1e-6)


def test_joint_objective_rejects_wrong_head():
    out = NetOutput(logits=None, score=torch.zeros(2), embedding=torch.ones(2, 3))
    with pytest.raises(ValueError, match="distribution head"):
        JointObjective("djldml")(out, torch.zeros(2))
    with pytest.raises(ValueError):
        JointObjective("nope")
