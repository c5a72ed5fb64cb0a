"""The committed demo archive (model_store/djldml-demo.mar, made by `make demo-model`) is what `make serve` runs:
it must load, say everywhere that it is a synthetic demo, and give a valid prediction on a real face video."""

from pathlib import Path

import numpy as np
import pytest

from djldml import labels
from djldml.faces import FaceConfig, extract_face_clips
from djldml.prediction import predict_video
from service.backends.in_process import InProcessBackend
from tests.media import face_video

DEMO_MAR = Path(__file__).resolve().parents[1] / "model_store" / "djldml-demo.mar"


@pytest.fixture(scope="module")
def backend():
    assert DEMO_MAR.is_file(), "model_store/djldml-demo.mar is missing: run `make demo-model` and commit it"
    b = InProcessBackend(DEMO_MAR, device="cpu")
    yield b
    b.close()


def test_demo_model_says_it_is_synthetic(backend):
    info = backend.model_info()
    assert info.name == "djldml-demo"
    assert info.synthetic_demo is True
    assert "SYNTHETIC" in info.description
    assert len(info.sha256) == 64


def test_demo_model_predicts_on_a_real_face_video(backend):
    clips = extract_face_clips(face_video(seconds=2.0), FaceConfig(max_clips=4))
    dist = backend.clip_distributions(clips.clips)
    assert dist.shape == (len(clips), labels.NUM_BINS)
    pred = predict_video(dist, clips.start_times)
    assert pred.distribution.sum() == pytest.approx(1.0)
    assert 0.0 <= pred.score <= labels.MAX_SCORE
    assert pred.score == pytest.approx(float((pred.distribution * np.arange(labels.NUM_BINS)).sum()))
