"""In-process backend: loads the same .mar TorchServe serves and runs the handler's own code on it.

The embedded default (no TorchServe). It calls ``service.torchserve_handler.inference`` — the function the
TorchServe worker runs — with the archive's handler knobs (clip batch, AMP) and the card's mirror averaging, so
both backends compute the same numbers for the same clips. Only the HTTP wire format (.npy body, JSON answer) is
skipped.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from djldml.clips import CLIP_SHAPE, validate_clips
from djldml.errors import DJLDMLError, ModelError
from djldml.inference import DEFAULT_BATCH, input_dynamics, mirror_average

from .. import torchserve_handler as handler
from ..model_archive import open_archive
from .base import ModelInfo


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class InProcessBackend:
    def __init__(self, mar_path: str | Path, device: str | torch.device = "auto"):
        self.archive = open_archive(mar_path)
        self.device = pick_device(device)
        knobs = self.archive.handler_knobs
        self.batch_size = int(knobs.get("clip_batch", DEFAULT_BATCH))
        self.amp = bool(knobs.get("amp", False)) and self.device.type == "cuda"
        self.mirror = mirror_average(self.archive.card.inference)
        self.dynamics = input_dynamics(self.archive.card.inference)
        self.net = self.archive.load_network(self.device)
        self._lock = threading.Lock()  # one forward at a time: the embedded pool may call from several threads

    def clip_distributions(self, clips: np.ndarray) -> np.ndarray:
        validate_clips(clips)
        if clips.shape[1:] != CLIP_SHAPE:
            raise ModelError(f"clips must be [N, {', '.join(map(str, CLIP_SHAPE))}], got {list(clips.shape)}")
        with self._lock:
            (result,) = handler.inference(self.net, [clips], self.batch_size, self.amp, self.mirror,
                                          self.dynamics)
        if isinstance(result, DJLDMLError):  # pragma: no cover - inference passes only parse errors through
            raise result
        return np.asarray(result, dtype=np.float64)

    def model_info(self) -> ModelInfo:
        return self.archive.model_info()

    def ready(self) -> tuple[bool, str]:
        return (True, "") if self.net is not None else (False, "model not loaded")

    def close(self) -> None:
        self.net = None
