"""Pretrained backbones: Sports-1M C3D (the PyTorch port's ``c3d.pickle`` layout) and this project's own layout,
loaded by an explicit mapping; the weights' input normalisation carried through training, the card and serving.

The Sports-1M state dicts are built here at random, in that layout (no download)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from djldml import inference as inference_module
from djldml.clips import SPORTS1M_C3D, InputNormalisation, input_normalisation, to_tensor
from djldml.errors import ModelError
from djldml.inference import clip_distributions
from djldml.model_card import ModelCard
from djldml.model_file import load_model, model_dict
from djldml.network import (
    SPORTS1M_CONVS,
    PretrainedWeightsError,
    build_network,
    load_pretrained_backbone,
    pretrained_mapping,
)
from trainer.__main__ import main as cli_main
from trainer.config import SYNTHETIC_CONFIG, load_config
from trainer.normalisation import training_normalisation
from trainer.train import train

from .conftest import TINY

# The port's C3D (DavideA/c3d-pytorch, C3D_model.py): name → shape at full width.
PORT_SHAPES = {
    "conv1": (64, 3), "conv2": (128, 64), "conv3a": (256, 128), "conv3b": (256, 256), "conv4a": (512, 256),
    "conv4b": (512, 512), "conv5a": (512, 512), "conv5b": (512, 512),
}


def sports1m_state(net, classes: int = 487, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the Sports-1M C3D layout, shaped for ``net``'s widths (a port-sized one for c3d)."""
    g = torch.Generator().manual_seed(seed)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv3d)]
    fcs = [m for m in net.fc if isinstance(m, torch.nn.Linear)]
    state = {}
    for name, conv in zip(SPORTS1M_CONVS, convs, strict=True):
        state[f"{name}.weight"] = torch.randn(conv.weight.shape, generator=g) * 0.05
        state[f"{name}.bias"] = torch.randn(conv.out_channels, generator=g) * 0.05
    for name, fc in zip(("fc6", "fc7"), fcs, strict=True):
        state[f"{name}.weight"] = torch.randn(fc.weight.shape, generator=g) * 0.05
        state[f"{name}.bias"] = torch.randn(fc.out_features, generator=g) * 0.05
    state["fc8.weight"] = torch.randn(classes, fcs[-1].out_features, generator=g)
    state["fc8.bias"] = torch.zeros(classes)
    return state


def test_the_full_size_network_has_the_ports_shapes():
    """At width 1 without batch norm every Sports-1M tensor maps onto a tensor of exactly the port's shape
    (checked on the meta device: no 300 MB allocation)."""
    with torch.device("meta"):
        net = build_network("c3d")
    own = net.state_dict()
    mapping = pretrained_mapping(net)
    for name, (cout, cin) in PORT_SHAPES.items():
        assert own[mapping[f"{name}.weight"]].shape == (cout, cin, 3, 3, 3)
        assert own[mapping[f"{name}.bias"]].shape == (cout,)
    assert own[mapping["fc6.weight"]].shape == (4096, 8192)  # the port's h.view(-1, 8192) = our Flatten
    assert own[mapping["fc7.weight"]].shape == (4096, 4096)
    assert "fc8.weight" not in mapping


def test_sports1m_layout_loads_by_mapping_and_reports(tmp_path):
    net = build_network("c3d-tiny", batch_norm=False)
    state = sports1m_state(net)
    path = tmp_path / "c3d.pickle"
    torch.save(state, path)
    report = load_pretrained_backbone(net, str(path))
    assert report.layout == "sports1m-c3d" and report.normalisation == "sports1m-c3d"
    assert len(report.loaded) == 20  # 8 conv weights + 8 conv biases + fc6, fc7 weights and biases
    assert set(report.skipped) == {"fc8.weight", "fc8.bias"} and "classifier" in report.skipped["fc8.weight"]
    assert report.missing == []
    own = net.state_dict()
    assert torch.equal(own["features.0.weight"], state["conv1.weight"])
    assert torch.equal(own["features.18.bias"], state["conv5b.bias"])  # the eighth conv, after 7 conv+ReLU(+pool)
    assert torch.equal(own["fc.4.weight"], state["fc7.weight"])
    assert "20 tensors loaded" in report.summary() and "fc8.weight" in report.summary()


def test_batch_norm_network_skips_conv_biases_and_shape_mismatches_are_reported(tmp_path):
    net = build_network("c3d-tiny")  # batch norm: its convolutions have no bias
    state = sports1m_state(build_network("c3d-tiny", batch_norm=False))
    state["fc7.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "w.pt")
    report = load_pretrained_backbone(net, str(tmp_path / "w.pt"))
    assert len(report.loaded) == 8 + 3  # conv kernels, fc6 weight+bias, fc7 bias
    assert "batch norm" in report.skipped["conv1.bias"]
    assert report.skipped["fc7.weight"].startswith("shape [3, 3] does not fit fc.4.weight")
    assert "fc.4.weight" in report.missing


def test_a_file_that_matches_nothing_fails_loudly(tmp_path):
    net = build_network("c3d-tiny", batch_norm=False)
    torch.save({"encoder.layer1.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(PretrainedWeightsError) as err:
        load_pretrained_backbone(net, str(tmp_path / "other.pt"))
    assert err.value.code == "pretrained_weights_mismatch" and "no counterpart" in err.value.message
    # Sports-1M weights at full size do not fit the tiny network: every tensor is a shape mismatch
    with torch.device("meta"):
        big = build_network("c3d")
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3, 3), "fc6.weight": torch.zeros(1, 1)}, tmp_path / "s.pt")
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        load_pretrained_backbone(net, str(tmp_path / "s.pt"))
    assert big.features[0].weight.shape == (64, 3, 3, 3, 3)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(PretrainedWeightsError, match="cannot read"):
        load_pretrained_backbone(net, str(tmp_path / "junk.pt"))


def test_own_layout_from_a_checkpoint_keeps_its_normalisation(tmp_path):
    source = build_network("c3d-tiny")
    ckpt = {"model": model_dict(source), "config": {"input_normalisation": "sports1m-c3d"}}
    torch.save({"model": ckpt["model"], "config": ckpt["config"]}, tmp_path / "best.pt")
    net = build_network("c3d-tiny")
    report = load_pretrained_backbone(net, str(tmp_path / "best.pt"))
    assert report.layout == "djldml" and report.normalisation == "sports1m-c3d"
    assert all(k.startswith(("features.", "fc.")) for k in report.loaded)
    assert {k.split(".")[0] for k in report.skipped} == {"head", "embed"}
    assert torch.equal(net.state_dict()["fc.1.weight"], source.state_dict()["fc.1.weight"])
    # a DDP-saved plain state dict ("module." prefix), no config: the default normalisation
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "ddp.pt")
    assert load_pretrained_backbone(build_network("c3d-tiny"), str(tmp_path / "ddp.pt")).normalisation == "default"


# --- the clip contract's normalisation ------------------------------------------------------------------------------

def test_to_tensor_default_is_unchanged_and_card_normalisations_apply():
    clips = np.random.default_rng(0).integers(0, 256, (2, 16, 8, 8, 3), dtype=np.uint8)
    x = to_tensor(clips)
    ref = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    assert torch.equal(x, ref)
    assert torch.equal(to_tensor(clips, normalisation=SPORTS1M_C3D), torch.from_numpy(clips).permute(0, 4, 1, 2, 3)
                       .float())
    n = InputNormalisation("0-1", (0.4, 0.5, 0.6), (0.2, 0.25, 0.5), "BGR")
    got = to_tensor(clips, normalisation=n)
    bgr = torch.from_numpy(clips[..., ::-1].copy()).permute(0, 4, 1, 2, 3).float() / 255.0
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1, 1), torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1, 1)
    want = (bgr - mean) / std
    torch.testing.assert_close(got, want)
    assert InputNormalisation.from_dict(n.to_dict()) == n


@pytest.mark.parametrize("bad", [{"range": "0-255"}, {**SPORTS1M_C3D.to_dict(), "range": "0-100"},
                                 {**SPORTS1M_C3D.to_dict(), "std": [1, 0, 1]},
                                 {**SPORTS1M_C3D.to_dict(), "channel_order": "RGBA"},
                                 {**SPORTS1M_C3D.to_dict(), "mean": [0, 0]}])
def test_malformed_normalisation_refuses_the_card(bad):
    with pytest.raises(ModelError):
        input_normalisation({"input_normalisation": bad})
    with pytest.raises(ModelError):
        ModelCard.from_dict({"name": "m", "version": "1", "synthetic_demo": True,
                             "inference": {"input_normalisation": bad}})
    old = ModelCard.from_dict({"name": "m", "version": "1", "synthetic_demo": True,
                               "inference": {"mirror_average": True}})
    assert input_normalisation(old.inference) is None  # an old card: the default [-1, 1]


# --- fine-tune from Sports-1M-layout weights, export, serve ---------------------------------------------------------

def test_fine_tuned_from_sports1m_weights_serves_with_their_normalisation(tmp_path, small_dataset, capsys,
                                                                           monkeypatch):
    from service.backends.in_process import InProcessBackend
    from trainer.export import export_model

    net = build_network("c3d-tiny", batch_norm=False)
    torch.save(sports1m_state(net), tmp_path / "c3d.pickle")
    cfg = load_config(SYNTHETIC_CONFIG, {**TINY, "epochs": 1, "preset": "c3d-tiny", "out": str(tmp_path / "run"),
                                         "pretrained": str(tmp_path / "c3d.pickle")})
    # the preset's batch norm would drop the conv biases: this test fine-tunes the port's exact architecture
    import trainer.train as train_module

    real_build = train_module.build_network
    train_module.build_network = lambda preset, **kw: real_build(preset, batch_norm=False, **kw)
    try:
        run = train(cfg, small_dataset)
    finally:
        train_module.build_network = real_build
    assert "20 tensors loaded" in capsys.readouterr().out
    saved = json.loads((run / "config.json").read_text())
    assert saved["input_normalisation"] == "sports1m-c3d"  # "auto" resolved from the weights' layout
    assert training_normalisation(saved) == SPORTS1M_C3D

    mar = export_model(run, tmp_path / "ft.mar", "ft", "1", {"synthetic_demo": True})
    card = json.loads(zipfile.ZipFile(mar).read("model_card.json"))
    assert card["inference"]["input_normalisation"] == SPORTS1M_C3D.to_dict()

    clips = np.random.default_rng(3).integers(0, 256, (3, 16, 112, 112, 3), dtype=np.uint8)
    seen = []
    real_to_tensor = inference_module.to_tensor

    def recording_to_tensor(*args, **kwargs):
        seen.append(real_to_tensor(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(inference_module, "to_tensor", recording_to_tensor)
    trainer_side = clip_distributions(load_model(run), clips, mirror=True, normalisation=training_normalisation(saved))
    seen.clear()
    served = InProcessBackend(mar, device="cpu", runtime="torch").clip_distributions(clips)
    # the served tensor is the port's input: float RGB 0–255, no normalisation ([N, 3, T, H, W])
    assert torch.equal(seen[0], torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float())
    np.testing.assert_allclose(served, trainer_side, rtol=0, atol=1e-6)
    default = clip_distributions(load_model(run), clips, mirror=True)
    assert np.abs(default - served).max() > 1e-4  # the normalisation matters: serving without it would differ
    # the service's default engine on the CPU (OpenVINO when installed) gets the same input
    seen.clear()
    engine = InProcessBackend(mar, device="cpu").clip_distributions(clips)
    assert torch.equal(seen[0], torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float())
    assert np.abs(engine - trainer_side).max() <= 2e-3  # float32 on another engine (tests/serving/test_runtime.py)


def test_trainer_cli_exits_2_on_weights_that_match_nothing(tmp_path, monkeypatch, small_dataset, capsys):
    import trainer.train as train_module

    torch.save({"backbone.conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    monkeypatch.setattr(train_module, "open_store", lambda root: small_dataset)
    code = cli_main(["train", "--config", str(SYNTHETIC_CONFIG), "--preset", "c3d-tiny", "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--data", "unused", "--no-progress",
                     "--set", f"pretrained={tmp_path / 'other.pt'}", "--set", "batch_size=4", "--set", "n_bins=20"])
    assert code == 2
    assert "pretrained weights: none of the 1 tensors fits" in capsys.readouterr().err
