"""Network shapes for every preset; the full-size C3D is checked on the meta device (shapes, no arithmetic)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from djldml import model_file
from djldml.inference import clip_distributions
from djldml.network import PRESETS, build_network, count_parameters

CLIP = (3, 16, 112, 112)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("head", ["distribution", "regression"])
def test_output_shapes(name, head):
    config = PRESETS[name]
    small = config.width < 0.5
    with torch.device("cpu" if small else "meta"):  # meta: the 78 M-parameter C3D without memory or compute
        net = build_network(name, head=head).eval()
        x = torch.zeros(2, *CLIP) if small else torch.empty(2, *CLIP)
        with torch.no_grad():
            out = net(x)
    assert out.embedding.shape == (2, config.embedding_dim)
    if head == "distribution":
        assert out.logits.shape == (2, 64) and out.score is None
    else:
        assert out.score.shape == (2,) and out.logits is None
    if small:
        assert torch.allclose(out.embedding.norm(dim=1), torch.ones(2), atol=1e-5)
        dist = net.clip_distributions(x)
        assert dist.shape == (2, 64) and torch.allclose(dist.sum(1), torch.ones(2), atol=1e-5)


def test_c3d_has_the_paper_layout():
    with torch.device("meta"):
        net = build_network("c3d")
    convs = [m.out_channels for m in net.features if isinstance(m, nn.Conv3d)]
    assert convs == [64, 128, 256, 256, 512, 512, 512, 512]
    fcs = [m for m in net.fc if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in fcs] == [(8192, 4096), (4096, 4096)]
    assert 70e6 < count_parameters(net) < 85e6


def test_model_file_round_trip_and_batching(tmp_path):
    torch.manual_seed(0)
    net = build_network("c3d-tiny").eval()
    model_file.save_model(net, tmp_path / "m.pt")
    loaded = model_file.load_model(tmp_path / "m.pt")
    clips = torch.randint(0, 256, (3, 16, 112, 112, 3), dtype=torch.uint8).numpy()
    a = clip_distributions(net, clips, batch_size=3)
    b = clip_distributions(loaded, clips, batch_size=1)
    assert a.shape == (3, 64) and abs(a - b).max() < 1e-6
