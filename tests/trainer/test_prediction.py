"""The prediction contract (djldml/prediction.py): clip distributions → one video prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from djldml import labels
from djldml.errors import ModelError
from djldml.prediction import predict_video


def test_video_distribution_is_the_mean_of_the_clips():
    clips = labels.label_distribution(np.array([10.0, 20.0, 30.0]), 2.0)
    pred = predict_video(clips)
    assert np.allclose(pred.distribution, clips.mean(0)) and pred.distribution.sum() == pytest.approx(1.0)
    assert pred.score == pytest.approx(20.0, abs=1e-6)  # expectation of the mean = mean of the expectations
    assert pred.clip_scores == pytest.approx([10.0, 20.0, 30.0], abs=1e-6)
    assert pred.severity == "moderate" == labels.severity_of(pred.score)
    assert pred.std == pytest.approx(labels.std(clips.mean(0)))
    assert pred.interval == tuple(int(x) for x in labels.central_interval(clips.mean(0), 0.9))
    assert sum(pred.band_probabilities.values()) == pytest.approx(1.0)
    assert list(pred.band_probabilities) == [b.name for b in labels.SEVERITY_BANDS]


def test_one_clip_is_its_own_video_and_rounding_is_renormalised():
    p = labels.label_distribution(42.0, 3.0).astype(np.float32)[None] * 1.0001
    pred = predict_video(p)
    assert pred.distribution.sum() == pytest.approx(1.0, abs=1e-12)
    assert pred.score == pytest.approx(42.0, abs=1e-3) and pred.severity == "severe"


def test_to_dict_is_json_with_a_timeline():
    clips = labels.label_distribution(np.array([15.0, 16.0]), 2.0)
    d = predict_video(clips, clip_start_times=np.array([0.0, 0.5]), interval_mass=0.8).to_dict()
    json.dumps(d)
    assert d["timeline"] == [{"start_time": 0.0, "score": pytest.approx(15.0, abs=1e-3)},
                             {"start_time": 0.5, "score": pytest.approx(16.0, abs=1e-3)}]
    assert d["interval"]["mass"] == 0.8 and len(d["distribution"]) == 64
    assert predict_video(clips).to_dict()["timeline"] is None


@pytest.mark.parametrize("bad", [np.zeros((0, 64)), np.ones((2, 63)) / 63, np.ones(64) / 64,
                                 np.full((1, 64), np.nan), -np.ones((1, 64))])
def test_bad_input_is_a_model_error(bad):
    with pytest.raises(ModelError) as err:
        predict_video(bad)
    assert err.value.code == "model_error"


def test_start_times_must_match_the_clips():
    with pytest.raises(ModelError):
        predict_video(np.ones((2, 64)) / 64, clip_start_times=np.array([0.0]))
