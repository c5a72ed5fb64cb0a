"""Which torch device runs the network: the one rule shared by trainer, handler and in-process backend.

``"auto"`` means the first GPU when CUDA is available, else the CPU; any other name is taken as given (so an
explicit ``"cuda"`` on a machine without one fails loudly where it is used, never silently falls back).
TorchServe names the GPU of a worker by ``gpu_id`` (``None`` when the model runs on CPU).
"""

from __future__ import annotations

import torch


def resolve_device(requested: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda:0`` if CUDA is available, else ``cpu``; anything else → ``torch.device(requested)``."""
    if str(requested) == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def torchserve_device(gpu_id: int | None) -> torch.device:
    """The device TorchServe assigned a worker: ``cuda:<gpu_id>``, or ``cpu`` without a GPU id or without CUDA."""
    if gpu_id is None or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{gpu_id}")
