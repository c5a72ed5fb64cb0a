"""The deployable model file: network config + weights, loadable with ``torch.load(weights_only=True)``.

One format, written by ``trainer export`` and the training loop, read by the TorchServe handler, the in-process
backend and the trainer's evaluation: ``{"format": FORMAT, "net_config": {...}, "state_dict": {...}}`` — only
plain types and tensors, so no pickle code runs on load. A training checkpoint holds one under ``"model"``
(beside optimizer state etc., the trainer's business); the readers here accept either, or a run directory
(its ``best.pt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import ModelError
from .network import DJLDMLNet, NetConfig

FORMAT = "djldml-model/1"
MODEL_FILENAME = "model.pt"  # name inside a .mar / model directory
BEST_CHECKPOINT = "best.pt"  # what a run directory stands for
CHECKPOINT_FACTS = ("config", "dev", "epoch")  # what a checkpoint says about its training, beside the model


def model_dict(net: DJLDMLNet) -> dict[str, Any]:
    """The model file content of ``net``: its config and a CPU copy of its weights."""
    state = {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}
    return {"format": FORMAT, "net_config": net.config.to_dict(), "state_dict": state}


def save_model(net: DJLDMLNet, path: str | Path) -> None:
    torch.save(model_dict(net), str(path))


def read_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model file dict, training facts) from a model file, a training checkpoint or a run directory.

    The facts are a checkpoint's ``config``, ``dev`` metrics and ``epoch`` (empty for a bare model file).
    Raises ModelError when the file cannot be read or holds neither.
    """
    path = Path(path)
    if path.is_dir():
        path = path / BEST_CHECKPOINT
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read {path.name}: {exc.__class__.__name__}: {exc}") from None
    facts: dict[str, Any] = {}
    if isinstance(blob, dict) and blob.get("format") != FORMAT and isinstance(blob.get("model"), dict):
        facts = {k: blob[k] for k in CHECKPOINT_FACTS if k in blob}
        blob = blob["model"]
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path.name} is neither a {FORMAT} model file nor a checkpoint holding one")
    return blob, facts


def network_from_dict(model: dict[str, Any], device: torch.device | str = "cpu") -> DJLDMLNet:
    """The network a model file dict describes, with its weights, in eval mode on ``device``."""
    net = DJLDMLNet(NetConfig.from_dict(model["net_config"]))
    net.load_state_dict(model["state_dict"])
    return net.to(device).eval()


def load_model(path: str | Path, device: torch.device | str = "cpu") -> DJLDMLNet:
    """The network of a model file, a training checkpoint or a run directory (its best.pt), in eval mode."""
    return network_from_dict(read_model_file(path)[0], device)
