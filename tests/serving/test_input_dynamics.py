"""The input-dynamics option (djldml.clips.INPUT_DYNAMICS): what to_tensor computes, and that a model trained
with it is served with it — the card carries it, the in-process backend and the TorchServe handler apply it
through the same to_tensor the training loop calls."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from djldml.clips import INPUT_DYNAMICS, to_tensor
from djldml.errors import ModelError
from djldml.inference import input_dynamics
from djldml.model_file import load_model
from djldml.serving import handler
from service.backends.in_process import InProcessBackend
from trainer.config import SYNTHETIC_CONFIG, load_config
from trainer.export import export_model, training_inference

from .conftest import SYNTHETIC_CARD, random_clips
from .test_handler import FakeContext


def test_mean_removed_and_temporal_diff_keep_only_what_moves():
    clips = random_clips(3, seed=4)
    plain = to_tensor(clips)
    mean_removed = to_tensor(clips, dynamics="mean_removed")
    diff = to_tensor(clips, dynamics="temporal_diff")
    assert mean_removed.shape == diff.shape == plain.shape == (3, 3, 16, 112, 112)
    torch.testing.assert_close(mean_removed, plain - plain.mean(2, keepdim=True))
    assert mean_removed.mean(2).abs().max() < 1e-5
    assert torch.equal(diff[:, :, 0], torch.zeros_like(diff[:, :, 0]))
    torch.testing.assert_close(diff[:, :, 1:], plain[:, :, 1:] - plain[:, :, :-1])
    still = np.repeat(clips[:, :1], 16, axis=1)  # a face that does not move: nothing left to see
    for mode in ("mean_removed", "temporal_diff"):
        assert to_tensor(still, dynamics=mode).abs().max() < 1e-6
    # linear in the pixels: commutes with the mirror flip of test-time averaging
    torch.testing.assert_close(to_tensor(clips[:, :, :, ::-1].copy(), dynamics="mean_removed"),
                               mean_removed.flip(-1))
    with pytest.raises(ModelError):
        to_tensor(clips, dynamics="optical_flow")


def test_card_value_defaults_to_the_papers_input_and_rejects_unknown_modes():
    assert input_dynamics(None) == input_dynamics({}) == input_dynamics({"mirror_average": True}) == "none"
    for mode in INPUT_DYNAMICS:
        assert input_dynamics({"input_dynamics": mode}) == mode
    with pytest.raises(ModelError):
        input_dynamics({"input_dynamics": "optical_flow"})
    with pytest.raises(ValueError):
        load_config(SYNTHETIC_CONFIG, {"input_dynamics": "optical_flow"})


@pytest.fixture(scope="module")
def mean_removed_mar(tiny_model_file, tmp_path_factory):
    """The tiny test network exported as `trainer export` would export a run trained with mean_removed."""
    cfg = load_config(SYNTHETIC_CONFIG, {"input_dynamics": "mean_removed"})
    card = {**SYNTHETIC_CARD, "training": cfg.to_dict(), "inference": training_inference(cfg.to_dict())}
    out = tmp_path_factory.mktemp("store") / "mean-removed.mar"
    return export_model(tiny_model_file, out, "mean-removed", "0.1", card)


def test_training_and_both_serving_paths_apply_the_cards_dynamics(mean_removed_mar, tiny_model_file, tmp_path):
    with zipfile.ZipFile(mean_removed_mar) as z:
        card = json.loads(z.read("model_card.json"))
        z.extractall(tmp_path)
    assert card["inference"]["input_dynamics"] == "mean_removed"
    clips = random_clips(4, seed=7)
    net = load_model(tiny_model_file, "cpu")
    # what the training loop and its dev check feed the network: to_tensor(batch, device, None, cfg.input_dynamics)
    expected = net.clip_distributions(to_tensor(clips, "cpu", dynamics="mean_removed")).double().numpy()
    plain = net.clip_distributions(to_tensor(clips, "cpu")).double().numpy()
    assert np.abs(expected - plain).max() > 1e-3  # the option changes what the network sees
    mirror = card["inference"]["mirror_average"]
    if mirror:  # the card of synthetic.toml also asks for mirror averaging; compare like with like
        flipped = net.clip_distributions(to_tensor(clips[:, :, :, ::-1].copy(), "cpu", dynamics="mean_removed"))
        expected = 0.5 * (expected + flipped.double().numpy())
    local = InProcessBackend(mean_removed_mar, device="cpu")
    np.testing.assert_allclose(local.clip_distributions(clips), expected, atol=1e-5)
    served = handler.DJLDMLHandler()
    served.initialize(FakeContext(tmp_path))
    assert served.dynamics == "mean_removed"
    (result,) = handler.inference(served.net, [clips], mirror=served.mirror, dynamics=served.dynamics)
    np.testing.assert_allclose(result, expected, atol=1e-5)
