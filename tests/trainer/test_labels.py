"""The BDI-II label contract (djldml/labels.py), checked against plain formulas written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from djldml import labels


def test_scale():
    assert (labels.MIN_SCORE, labels.MAX_SCORE, labels.NUM_BINS) == (0, 63, 64)
    assert labels.SCORES.tolist() == list(range(64))


@pytest.mark.parametrize("sigma", [0.5, 2.0, 5.0])
def test_label_distribution_sums_to_one_and_matches_the_formula(sigma):
    ys = np.array([0.0, 7.3, 31.5, 63.0])
    p = labels.label_distribution(ys, sigma)
    assert p.shape == (4, 64) and np.allclose(p.sum(-1), 1.0, atol=1e-12)
    for y, row in zip(ys, p, strict=True):
        w = [math.exp(-((k - y) ** 2) / (2 * sigma**2)) for k in range(64)]
        assert row == pytest.approx([x / sum(w) for x in w], rel=1e-9, abs=1e-300)
    t = labels.label_distribution(torch.tensor(ys), sigma)  # torch path agrees with numpy
    assert torch.allclose(t, torch.from_numpy(p), atol=1e-12)
    assert torch.allclose(t.sum(-1), torch.ones(4, dtype=t.dtype))


@pytest.mark.parametrize("y", [12.0, 20.0, 20.4, 33.7, 51.0])
def test_expectation_of_a_distribution_centred_at_y_is_y(y):
    """Away from the ends (≥ 6σ), truncation is negligible: E[p_y] = y and std = σ."""
    p = labels.label_distribution(y, 2.0)
    assert labels.expectation(p) == pytest.approx(y, abs=1e-6)
    assert labels.std(p) == pytest.approx(2.0, abs=1e-3)
    assert int(np.argmax(p)) == round(y)


def test_truncation_pulls_the_expectation_inward_at_the_ends():
    assert labels.expectation(labels.label_distribution(0.0, 2.0)) > 0.5
    assert labels.expectation(labels.label_distribution(63.0, 2.0)) < 62.5


def test_out_of_scale_scores_are_clamped_and_sigma_must_be_positive():
    assert np.allclose(labels.label_distribution(-5.0), labels.label_distribution(0.0))
    assert np.allclose(labels.label_distribution(90.0), labels.label_distribution(63.0))
    with pytest.raises(ValueError):
        labels.label_distribution(3.0, 0.0)


def test_expectation_and_std_by_hand():
    p = np.zeros(64)
    p[[10, 20]] = 0.5
    assert labels.expectation(p) == pytest.approx(15.0)
    assert labels.std(p) == pytest.approx(5.0)
    assert labels.expectation(torch.tensor(p)).item() == pytest.approx(15.0)


def test_bands_cover_the_scale_in_order():
    bands = labels.SEVERITY_BANDS
    assert [b.name for b in bands] == ["minimal", "mild", "moderate", "severe"]
    assert bands[0].low == 0 and bands[-1].high == 63
    assert all(a.high + 1 == b.low for a, b in zip(bands, bands[1:], strict=False))
    cases = {0: "minimal", 13: "minimal", 13.4: "minimal", 13.6: "mild", 14: "mild", 19: "mild", 20: "moderate",
             28: "moderate", 29: "severe", 63: "severe", 70: "severe", -3: "minimal"}
    for score, band in cases.items():
        assert labels.severity_of(score) == band, score


def test_band_probabilities_sum_the_band_masses():
    p = np.random.default_rng(0).dirichlet(np.ones(64), size=3)
    got = labels.band_probabilities(p)
    want = np.stack([p[:, :14].sum(1), p[:, 14:20].sum(1), p[:, 20:29].sum(1), p[:, 29:].sum(1)], 1)
    assert np.allclose(got, want) and np.allclose(got.sum(1), 1.0)
    assert torch.allclose(labels.band_probabilities(torch.tensor(p)), torch.tensor(want))


def test_central_interval_by_hand():
    point = np.zeros(64)
    point[17] = 1.0
    assert tuple(map(int, labels.central_interval(point, 0.9))) == (17, 17)
    uniform = np.full(64, 1 / 64)  # CDF(k) = (k+1)/64: > 0.05 from k = 3, ≥ 0.95 from k = 60
    assert tuple(map(int, labels.central_interval(uniform, 0.9))) == (3, 60)
    with pytest.raises(ValueError):
        labels.central_interval(uniform, 1.0)


@pytest.mark.parametrize("mass", [0.5, 0.8, 0.9, 0.95])
def test_central_interval_is_equal_tailed_and_tight(mass):
    tail = (1 - mass) / 2
    dists = np.random.default_rng(1).dirichlet(np.full(64, 0.3), size=50)
    lo, hi = labels.central_interval(dists, mass)
    for p, a, b in zip(dists, lo, hi, strict=True):
        assert p[a : b + 1].sum() >= mass - 1e-9  # holds at least `mass`
        assert p[:a].sum() <= tail + 1e-9 and p[b + 1 :].sum() <= tail + 1e-9  # each tail at most (1−mass)/2
        assert p[: a + 1].sum() > tail - 1e-9 and p[:b].sum() < 1 - tail + 1e-9  # and no tighter interval does


def test_bhattacharyya_overlap():
    p = labels.label_distribution(np.array([20.0, 20.0, 23.0]), 2.0)
    assert labels.bhattacharyya_overlap(p[0], p[1]) == pytest.approx(1.0)
    assert labels.bhattacharyya_overlap(p[0], p[2]) == pytest.approx(math.exp(-9 / 32), rel=1e-6)  # exp(−Δ²/8σ²)
    a, b = np.zeros(64), np.zeros(64)
    a[0], b[1] = 1.0, 1.0
    assert labels.bhattacharyya_overlap(a, b) == 0.0


@pytest.mark.parametrize("score", [0.0, 0.25, 17.5, 62.9, 63.0])
def test_point_distribution_keeps_the_score(score):
    p = labels.point_distribution(score)
    assert p.sum() == pytest.approx(1.0) and (p > 0).sum() <= 2
    assert labels.expectation(p) == pytest.approx(score, abs=1e-9)
    assert labels.expectation(labels.point_distribution(torch.tensor([score, 70.0]))).tolist() == pytest.approx(
        [score, 63.0])
