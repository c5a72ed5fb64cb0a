"""Evaluation: metrics against scikit-learn/scipy, the service's prediction path, baselines, files, warnings."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, root_mean_squared_error

from djldml import model_file
from djldml.inference import clip_distributions
from djldml.network import build_network
from djldml.prediction import predict_video
from trainer.data import evenly_spaced
from trainer.evaluate import bootstrap_intervals, evaluate, format_report, point_metrics

from .fakes import FakePreparedDataset

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    net = build_network("c3d-tiny").eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    model_file.save_model(net, path)
    return path


@pytest.mark.parametrize("seed", range(3))
def test_point_metrics_equal_sklearn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    true, pred = rng.integers(0, 64, 40).astype(float), rng.uniform(0, 63, 40)
    m = point_metrics(true, pred)
    assert m["mae"] == pytest.approx(mean_absolute_error(true, pred), rel=1e-12)
    assert m["rmse"] == pytest.approx(root_mean_squared_error(true, pred), rel=1e-12)
    assert m["pearson_r"] == pytest.approx(pearsonr(true, pred).statistic, rel=1e-9)
    assert point_metrics(true, np.full(40, 9.5))["pearson_r"] is None  # a constant predictor has no r


def test_bootstrap_intervals():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 40, 60)
    preds = {"good": true + rng.normal(0, 2, 60), "mean": np.full(60, true.mean())}
    ci = bootstrap_intervals(true, preds, 500, seed=1, reference="mean")
    assert ci == bootstrap_intervals(true, preds, 500, seed=1, reference="mean")  # seeded
    for name, p in preds.items():
        lo, hi = ci[name]["mae_ci95"]
        assert lo < mean_absolute_error(true, p) < hi
        lo, hi = ci[name]["rmse_ci95"]
        assert lo < root_mean_squared_error(true, p) < hi
    assert ci["good"]["mae_minus_mean_ci95"][1] < 0  # clearly better than the mean: the paired CI excludes 0
    exact = bootstrap_intervals(true, {"x": true + 3.0}, 100)  # every error is 3: no spread at all
    assert exact["x"]["mae_ci95"] == pytest.approx([3.0, 3.0])


def test_evaluate_uses_the_service_prediction_path(model_path, tmp_path):
    data = FakePreparedDataset(n_train=5, n_dev=0, n_test=4, n_frames=24, seed=2)
    # device="cpu": the reference below runs on the CPU, and "auto" would pick a GPU where there is one (TF32
    # convolutions then differ from it in the 8th digit of the MAE, beyond this test's rel=1e-9).
    metrics = evaluate(model_path, data, split="test", out_dir=tmp_path, clips_per_video=3, n_bootstrap=200,
                       device="cpu", progress=False)
    rows = list(csv.DictReader((tmp_path / "predictions.csv").read_text().splitlines()))
    net = model_file.load_model(model_path)
    want = []
    for video, row in zip(data.split("test"), rows, strict=True):
        starts = evenly_spaced(data.clip_starts(video.video_id), 3)
        clips = np.stack([data.read_clip(video.video_id, int(s)) for s in starts])
        pred = predict_video(clip_distributions(net, clips, mirror=True))  # test_time_mirror is on by default
        assert row["video_id"] == video.video_id and int(row["n_clips"]) == len(starts) == 3
        assert float(row["bdi_predicted"]) == pytest.approx(pred.score, abs=1e-4)
        assert row["severity_predicted"] == pred.severity
        want.append(pred.score)
    true = [v.bdi for v in data.split("test")]
    assert metrics["model"]["mae"] == pytest.approx(mean_absolute_error(true, want), rel=1e-9)
    train = [v.bdi for v in data.split("train")]
    assert metrics["baselines"]["train_mean"]["value"] == pytest.approx(np.mean(train))
    assert metrics["baselines"]["train_median"]["value"] == pytest.approx(np.median(train))
    assert metrics["baselines"]["train_median"]["mae"] == pytest.approx(
        mean_absolute_error(true, np.full(4, np.median(train))))
    assert json.loads((tmp_path / "metrics.json").read_text())["model"] == metrics["model"]
    # no run dir: no learning curves; the reliability of the band probabilities always
    assert metrics["plots"] == ["predicted_vs_true.png", "error_histogram.png", "reliability.png"]
    u = metrics["uncertainty"]
    assert "after" not in u and u["before"]["n"] == 4 and u["before"]["interval_mass"] == 0.9  # uncalibrated
    assert set(metrics["screening"]) == {"at_least_mild", "at_least_moderate"}
    assert set(metrics["screening"]["at_least_moderate"]) == {"model", "train_mean", "train_median"}
    for name in metrics["plots"]:
        assert (tmp_path / name).read_bytes()[:8] == PNG
    report = format_report(metrics)
    assert "train_mean" in report and "train_median" in report and metrics["warnings"] == []


def test_evaluate_warns_when_train_and_test_share_subjects(model_path, tmp_path):
    data = FakePreparedDataset(n_train=3, n_dev=0, n_test=2, n_frames=20, shared_subjects=True)
    with pytest.warns(UserWarning, match="appear in both train and test"):
        metrics = evaluate(model_path, data, out_dir=tmp_path, clips_per_video=1, n_bootstrap=10, plots=False,
                           progress=False)
    assert "2 subject(s)" in metrics["warnings"][0]


def test_evaluate_a_run_directory_draws_learning_curves(tmp_path):
    from trainer.config import SYNTHETIC_CONFIG, load_config
    from trainer.train import train

    from .conftest import TINY

    data = FakePreparedDataset(n_train=2, n_dev=1, n_test=2, n_frames=20, seed=1)
    run = train(load_config(SYNTHETIC_CONFIG, {**TINY, "epochs": 1, "out": str(tmp_path / "run")}), data)
    metrics = evaluate(run, data, n_bootstrap=20, progress=False)
    assert metrics["clips_per_video"] == 3  # the run's eval_clips_per_video
    out = run / "eval-test"
    assert (out / "learning_curves.png").read_bytes()[:8] == PNG and (out / "metrics.json").is_file()
