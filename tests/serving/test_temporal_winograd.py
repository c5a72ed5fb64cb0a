"""djldml.temporal_winograd: the engine's Winograd F(m, 3) convolutions compute what the direct ones do.

Reference values are the direct ``torch.nn.Conv3d`` in float64 on the same weights and inputs; the rewritten
module runs in float32 like the engine, so what is allowed is float32 rounding (1e-5 of the output's scale)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from djldml import runtime, temporal_winograd
from djldml.clips import to_tensor
from djldml.inference import clip_distributions
from djldml.model_card import file_sha256
from djldml.model_file import MODEL_FILENAME, save_model
from djldml.network import build_network
from djldml.temporal_winograd import MIN_CHANNEL_PAIRS, EngineNetwork, TemporalWinogradConv3d, rewrite_features

from .test_runtime import assert_within_bounds, peaked_network


def conv(c_in: int, c_out: int, bias: bool = True, padding=(1, 1, 1), **kw) -> torch.nn.Conv3d:
    torch.manual_seed(0)
    return torch.nn.Conv3d(c_in, c_out, 3, padding=padding, bias=bias, **kw).eval()


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("frames", [4, 8, 16])
@pytest.mark.parametrize(("bias", "padding"), [(True, (1, 1, 1)), (False, (1, 1, 1)), (True, (1, 0, 2))])
def test_same_output_as_the_direct_convolution(m, frames, bias, padding):
    layer = conv(8, 16, bias, padding)
    x = torch.randn(2, 8, frames, 9, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = torch.nn.functional.conv3d(x.double(), layer.weight.double(),
                                          None if layer.bias is None else layer.bias.double(), 1, padding)
        got = TemporalWinogradConv3d(layer, m)(x)
    assert got.shape == want.shape
    assert float((got.double() - want).abs().max()) <= 1e-5 * float(want.abs().max())


def test_f2_handles_two_frames_and_rejects_what_it_cannot_stand_in_for():
    layer = conv(4, 4)
    x = torch.randn(1, 4, 2, 5, 5)
    with torch.no_grad():
        assert torch.allclose(TemporalWinogradConv3d(layer, 2)(x), layer(x), atol=1e-5)
    for bad in (conv(4, 4, stride=2), conv(4, 4, padding=(0, 1, 1)), conv(4, 4, groups=2), conv(4, 4, dilation=2),
                torch.nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 1, 1))):
        assert not temporal_winograd.supported(bad)
        with pytest.raises(ValueError):
            TemporalWinogradConv3d(bad, 2)
    with pytest.raises(ValueError):
        TemporalWinogradConv3d(layer, 3)
    for frames in (6, 3, 1):  # not a multiple of m: refused, never a wrong number of frames
        with pytest.raises(ValueError, match="multiple of 4"):
            TemporalWinogradConv3d(layer, 4)(torch.randn(1, 4, frames, 5, 5))


def test_which_layers_of_c3d_are_rewritten_and_the_smaller_presets_untouched():
    net = build_network("c3d")
    features, rewritten = rewrite_features(net.features, 16)
    convs = [i for i, layer in enumerate(net.features) if isinstance(layer, torch.nn.Conv3d)]
    assert rewritten == convs[1:6]  # conv2-conv4b; not conv1 (3 x 64 channel pairs: below MIN_CHANNEL_PAIRS)
    assert [features[i].m for i in rewritten] == [4, 4, 4, 4, 4]  # they see 16, 8, 8, 4, 4 frames
    # conv5a/b see 2 frames: F(2,3) would do as many multiplications as the direct convolution (4 per 2 frames)
    assert features[convs[0]] is net.features[convs[0]]  # the rest is shared, not copied
    for preset in ("c3d-small", "c3d-tiny"):
        assert rewrite_features(build_network(preset).features, 16)[1] == []
    assert rewrite_features(net.features, 15)[1] == []  # odd frame count: nothing tiles
    assert net.features[3].in_channels * net.features[3].out_channels == MIN_CHANNEL_PAIRS


def test_after_an_unknown_layer_nothing_more_is_rewritten():
    features = torch.nn.Sequential(conv(64, 128), torch.nn.Upsample(scale_factor=(1, 2, 2)), conv(128, 128))
    assert rewrite_features(features, 8)[1] == [0]


def test_engine_network_of_a_wide_network_serves_pytorchs_distribution():
    """A c3d-small at twice its width (its 64 -> 128 layers and up are rewritten): through OpenVINO, peaked head,
    the served bounds of issue 11 against the unrewritten network in PyTorch."""
    clips = np.random.default_rng(0).integers(0, 256, (3, 16, 112, 112, 3), dtype=np.uint8)
    net = peaked_network("c3d-small", clips, width=0.25)
    assert EngineNetwork(net, 16).rewritten  # the test would mean nothing without a rewritten layer
    want = clip_distributions(net, clips)
    got = clip_distributions(runtime.compile_openvino(net), clips)
    assert_within_bounds(got, want)
    x = to_tensor(clips)
    with torch.no_grad():
        assert torch.allclose(EngineNetwork(net, 16)(x), runtime._HeadOutput(net)(x), rtol=1e-4, atol=1e-4)



@pytest.mark.parametrize(("width", "converted"), [(0.25, True), (0.125, False)])
def test_an_ir_from_before_the_rewrite(width, converted, tmp_path, monkeypatch, caplog):
    """An IR written before this layout (archives exported earlier) is converted again at load when the network
    has layers to rewrite (else it would serve the slower network), and used as it is when it has none."""
    torch.manual_seed(0)
    net = build_network("c3d-small", width=width).eval()
    save_model(net, tmp_path / MODEL_FILENAME)
    with monkeypatch.context() as m:
        m.setattr(temporal_winograd, "LAYOUT", "before")
        m.setattr(temporal_winograd, "MIN_CHANNEL_PAIRS", 10**9)  # the IR of then: nothing rewritten
        runtime.write_ir(net, str(tmp_path), file_sha256(tmp_path / MODEL_FILENAME))
    with caplog.at_level(logging.WARNING, logger="djldml.runtime"):
        served = runtime.load_model_dir(str(tmp_path), "cpu")
    assert served.source == ("converted at load" if converted else "archive IR")
    assert ("predates layout" in caplog.text) is converted
    clips = np.random.default_rng(3).integers(0, 256, (2, 16, 112, 112, 3), dtype=np.uint8)
    assert np.abs(clip_distributions(served, clips) - clip_distributions(net, clips)).max() <= 1e-5
