"""Mirror averaging (the model card's ``inference.mirror_average``): a clip and its mirror image get one
distribution, the mean of the network's on both (djldml.inference.clip_distributions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from djldml.faces import FaceConfig, extract_face_clips
from djldml.inference import clip_distributions, mirror_average
from djldml.model_archive import open_archive
from tests.media import face_video


@pytest.fixture(scope="module")
def net():
    """The trained (SYNTHETIC) demo network: a random one answers nearly uniform distributions."""
    return open_archive(Path(__file__).resolve().parents[1] / "model_store" / "djldml-demo.mar").load_network()


def test_mirror_average_is_the_mean_over_the_clip_and_its_mirror(net):
    clips = extract_face_clips(face_video(seconds=2.0, size=(320, 240)), FaceConfig(fps=25.0, max_clips=3)).clips
    mirrored = np.ascontiguousarray(clips[:, :, :, ::-1])
    plain, flipped = clip_distributions(net, clips), clip_distributions(net, mirrored)
    assert np.abs(plain - flipped).max() > 1e-4  # the network itself tells left from right
    averaged = clip_distributions(net, clips, mirror=True)
    np.testing.assert_allclose(averaged, 0.5 * (plain + flipped), atol=1e-6)
    np.testing.assert_allclose(clip_distributions(net, mirrored, mirror=True), averaged, atol=1e-6)
    np.testing.assert_allclose(averaged.sum(1), 1.0, atol=1e-6)


def test_the_card_decides():
    assert mirror_average({"mirror_average": True}) is True
    assert mirror_average({}) is False and mirror_average(None) is False
