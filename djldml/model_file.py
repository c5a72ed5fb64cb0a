"""The deployable model file: network config + weights, loadable with ``torch.load(weights_only=True)``.

One format, written by ``trainer export`` and read by the TorchServe handler and the in-process backend:
``{"format": FORMAT, "net_config": {...}, "state_dict": {...}}`` — only plain types and tensors, so no pickle
code runs on load. Training checkpoints (optimizer state etc.) are the trainer's business and live elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ModelError
from .network import DJLDMLNet, NetConfig

FORMAT = "djldml-model/1"
MODEL_FILENAME = "model.pt"  # name inside a .mar / model directory


def save_model(net: DJLDMLNet, path: str | Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    torch.save({"format": FORMAT, "net_config": net.config.to_dict(), "state_dict": state}, str(path))


def load_model(path: str | Path, device: torch.device | str = "cpu") -> DJLDMLNet:
    """Build the network from a model file and put it in eval mode on ``device``."""
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read model file: {exc.__class__.__name__}: {exc}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"not a {FORMAT} model file")
    net = DJLDMLNet(NetConfig.from_dict(blob["net_config"]))
    net.load_state_dict(blob["state_dict"])
    return net.to(device).eval()
