"""Calibration of the video distribution (djldml/calibration.py), its fitting (trainer/calibrate.py), and the
figures that judge uncertainty and screening (trainer/uncertainty.py, trainer/screening.py), on small synthetic
arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from djldml import labels
from djldml.calibration import Calibration, calibration_of, score_gaussian, temper
from djldml.errors import ModelError
from djldml.model_card import ModelCard
from djldml.prediction import predict_video
from trainer.calibrate import fit_calibration, fit_conformal, fit_sigma, fit_temperature
from trainer.calibration_file import read_calibration
from trainer.evaluate import VideoResult, format_report
from trainer.screening import cutoff_metrics, roc_auc, screening_metrics
from trainer.uncertainty import brier_score, interval_metrics, reliability_bins, uncertainty_report, wilson_interval


def overconfident_world(n: int, seed: int, sigma_true: float = 6.0, sigma_model: float = 1.5):
    """Videos whose predicted distribution is a Gaussian of σ=sigma_model around the prediction while the truth
    lies σ=sigma_true away: an overconfident model, the textbook case for calibration."""
    rng = np.random.default_rng(seed)
    true = rng.integers(8, 56, n).astype(float)
    pred = true + rng.normal(0, sigma_true, n)
    return true, labels.label_distribution(pred, sigma_model)


def results_of(true, dists, calibration=None) -> list[VideoResult]:
    out = []
    for i, (t, d) in enumerate(zip(true, dists, strict=True)):
        raw = predict_video(d[None])
        served = predict_video(d[None], calibration=calibration) if calibration else raw
        out.append(VideoResult(f"v{i}", f"s{i}", float(t), served, 1, raw if calibration else None))
    return out


# --- the calibration record ---------------------------------------------------------------------------------------

def test_temperature_tempers_the_distribution_and_the_interval_follows():
    d = labels.label_distribution(30.0, 3.0)
    wide = Calibration("temperature", temperature=4.0)
    p = predict_video(d[None], calibration=wide)
    assert p.std == pytest.approx(labels.std(temper(d, 4.0)))
    assert p.std == pytest.approx(2 * labels.std(d), rel=1e-3)  # a Gaussian's σ becomes σ·√T
    assert p.interval == tuple(int(x) for x in labels.central_interval(temper(d, 4.0), 0.9))
    assert p.score == pytest.approx(30.0, abs=1e-4)  # symmetric: the expectation stays
    assert np.allclose(temper(d, 1.0), d) and temper(d, 0.01).argmax() == 30


def test_conformal_sets_the_interval_around_the_score_and_keeps_the_distribution():
    d = labels.label_distribution(np.array([20.0, 22.0]), 2.0)
    cal = Calibration("conformal", half_width=7.5)
    p, raw = predict_video(d, calibration=cal), predict_video(d)
    assert p.interval == (math.ceil(p.score - 7.5), math.floor(p.score + 7.5))
    assert np.array_equal(p.distribution, raw.distribution) and p.band_probabilities == raw.band_probabilities
    assert predict_video(labels.label_distribution(1.0, 2.0)[None], calibration=cal).interval[0] == 0
    assert Calibration("conformal", half_width=math.inf).interval(d[0], 20.0, 0.9) == (0, 63)


def test_gaussian_replaces_the_spread_around_the_score():
    flat = np.full(64, 1 / 64) * 0.5 + labels.label_distribution(40.0, 1.0) * 0.5  # broad, with a mode
    raw = predict_video(flat[None])
    p = predict_video(flat[None], calibration=Calibration("gaussian", sigma=3.0))
    np.testing.assert_allclose(p.distribution, score_gaussian(raw.score, 3.0))
    assert p.score == pytest.approx(raw.score, abs=1e-9) and p.std == pytest.approx(3.0, abs=0.05)
    # the point score is kept exactly, also near the ends of the scale where the Gaussian is truncated
    scores = np.array([0.3, 1.0, 2.8, 31.5, 61.0, 62.7])
    for sigma in (1.0, 4.0, 12.0):
        np.testing.assert_allclose(labels.expectation(score_gaussian(scores, sigma)), scores, atol=1e-9)
    assert labels.std(score_gaussian(30.0, 4.0)) == pytest.approx(4.0, abs=1e-6)


def test_records_round_trip_and_malformed_ones_refuse_the_card():
    for cal in (Calibration("temperature", temperature=0.7, fitted_on={"split": "dev"}),
                Calibration("gaussian", sigma=3.5), Calibration("conformal", half_width=6.0),
                Calibration("conformal", half_width=math.inf)):
        back = calibration_of({"calibration": json.loads(json.dumps(cal.to_dict()))})
        assert back == cal
    for bad in ({"method": "platt"}, {"method": "temperature"}, {"method": "temperature", "temperature": -1},
                {"method": "gaussian", "sigma": 0}, {"method": "conformal", "half_width": 3, "extra": 1}, [1]):
        with pytest.raises(ModelError):
            calibration_of({"calibration": bad})
        with pytest.raises(ModelError):
            ModelCard.from_dict({"name": "m", "version": "1", "synthetic_demo": True,
                                 "inference": {"calibration": bad}})
    assert calibration_of({"mirror_average": True}) is None  # an old card: uncalibrated, as before


# --- fitting --------------------------------------------------------------------------------------------------------

def test_fitted_calibrations_bring_held_out_coverage_near_nominal():
    """Fit on one sample of an overconfident world, measure on another: coverage goes from far below 90 % to
    85–95 % (600 held-out videos: the binomial sd at 90 % is 1.2 points)."""
    dev_true, dev_d = overconfident_world(300, seed=1)
    test_true, test_d = overconfident_world(600, seed=2)
    before = uncertainty_report(results_of(test_true, test_d), None)["before"]
    assert before["coverage"] < 0.6
    for method in ("temperature", "gaussian", "conformal"):
        cal = fit_calibration(results_of(dev_true, dev_d), method, split="dev")
        assert cal.fitted_on["split"] == "dev" and cal.fitted_on["n_videos"] == 300
        after = uncertainty_report(results_of(test_true, test_d, cal), cal)["after"]
        assert 0.85 <= after["coverage"] <= 0.95, (method, after["coverage"])
        assert after["mean_width"] < 30 and after["nll"] <= before["nll"] + 1e-9
    # the fitted values are the known ones of this world
    assert fit_sigma([labels.expectation(d) for d in dev_d], dev_true) == pytest.approx(6.0, rel=0.15)
    assert fit_temperature(dev_d, dev_true) > 3  # 1.5 → ≈6 needs T ≈ (6/1.5)² / … ≫ 1


def test_conformal_quantile_is_the_finite_sample_rank():
    scores, true = np.zeros(9), np.arange(1, 10, dtype=float)  # errors 1..9
    assert fit_conformal(scores, true, 0.9) == 9.0  # ⌈10·0.9⌉ = 9th smallest
    assert fit_conformal(scores, true, 0.5) == 5.0
    assert fit_conformal(scores[:5], true[:5], 0.9) == math.inf  # ⌈6·0.9⌉ = 6 > 5: too few videos


def test_fit_needs_videos_and_read_calibration_errors(tmp_path):
    true, d = overconfident_world(1, seed=0)
    with pytest.raises(ValueError):
        fit_calibration(results_of(true, d), "gaussian")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ModelError):
        read_calibration(tmp_path / "bad.json")


# --- figures --------------------------------------------------------------------------------------------------------

def test_interval_metrics_brier_and_reliability():
    true = np.array([5.0, 15.0, 25.0, 40.0])
    m = interval_metrics(true, [0, 10, 30, 35], [10, 20, 40, 45], np.full((4, 64), 1 / 64),
                         np.tile([0.25, 0.25, 0.25, 0.25], (4, 1)), 0.9)
    assert m["coverage"] == 0.75 and m["covered"] == 3 and m["mean_width"] == 10.0
    assert m["brier"] == pytest.approx(0.75) and m["nll"] == pytest.approx(math.log(64))
    perfect = np.eye(4)[[0, 1, 2, 3]]
    assert brier_score(perfect, [5, 15, 25, 40]) == 0.0
    bins = reliability_bins(perfect, [5, 15, 25, 40], n_bins=5)
    assert [(b["mean_predicted"], b["observed"]) for b in bins] == [(0.0, 0.0), (1.0, 1.0)]
    lo, hi = wilson_interval(11, 12)
    assert lo == pytest.approx(0.646, abs=1e-3) and hi == pytest.approx(0.985, abs=1e-3)  # Wilson 1927


def test_screening_matches_sklearn_and_constants_are_chance():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 50, 80).astype(float)
    pred = true + rng.normal(0, 8, 80)
    pred[:5] = np.round(pred[:5])  # some ties
    for cut in (14, 20):
        pos = np.rint(true) >= cut
        assert roc_auc(pos, pred) == pytest.approx(roc_auc_score(pos, pred))
        m = cutoff_metrics(true, pred, cut)
        called = np.rint(pred) >= cut
        assert m["sensitivity"] == pytest.approx((called & pos).sum() / pos.sum())
        assert m["specificity"] == pytest.approx((~called & ~pos).sum() / (~pos).sum())
    s = screening_metrics(true, {"model": pred, "train_mean": np.full(80, 22.0)})
    assert s["at_least_moderate"]["train_mean"] == {**s["at_least_moderate"]["train_mean"], "roc_auc": 0.5,
                                                    "sensitivity": 1.0, "specificity": 0.0}
    assert s["at_least_mild"]["model"]["roc_auc"] > 0.8
    assert cutoff_metrics([1.0, 2.0], [1.0, 30.0], 20)["sensitivity"] is None  # no positives: undefined


def test_report_prints_before_after_and_screening():
    dev_true, dev_d = overconfident_world(50, seed=3)
    test_true, test_d = overconfident_world(40, seed=4)
    cal = fit_calibration(results_of(dev_true, dev_d), "gaussian")
    res = results_of(test_true, test_d, cal)
    metrics = {"split": "test", "n_videos": 40, "clips_per_video": 1, "path": {"name": "store"}, "warnings": [],
               "model": {"mae": 1.0, "mae_ci95": [0, 2], "rmse": 1.0, "rmse_ci95": [0, 2], "pearson_r": 0.9},
               "baselines": {}, "uncertainty": uncertainty_report(res, cal),
               "screening": screening_metrics(test_true, {"model": np.array([r.predicted for r in res])})}
    text = format_report(metrics)
    assert "before coverage" in text and "after  coverage" in text and "calibration: gaussian σ=" in text
    assert "BDI ≥ 20 model" in text and "BDI ≥ 14 model" in text
