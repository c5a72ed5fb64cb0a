"""In-process backend: loads the same .mar TorchServe serves and runs the handler's own code on it.

The embedded default (no TorchServe). It calls ``djldml.serving.handler.inference`` — the function the
TorchServe worker runs — with the archive's handler knobs (clip batch, AMP) and the card's mirror averaging, so
both backends compute the same numbers for the same clips. Only the HTTP wire format (.npy body, JSON answer) is
skipped.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import torch

from djldml.clips import validate_model_clips
from djldml.device import resolve_device
from djldml.errors import DJLDMLError
from djldml.inference import clip_inputs
from djldml.runtime import runtime_name
from djldml.serving import handler

from .archive import open_archive
from .base import ModelInfo


class InProcessBackend:
    def __init__(self, mar_path: str | Path, device: str | torch.device = "auto", runtime: str | None = None):
        """``runtime``: ``auto``/``torch``/``openvino`` (settings' ``DJLDML_RUNTIME``; None reads the environment);
        djldml.runtime decides the engine — OpenVINO on the CPU unless forced to PyTorch, PyTorch on a GPU."""
        self.archive = open_archive(mar_path)
        self.device = resolve_device(device)
        self.batch_size, self.amp = handler.handler_knobs(self.archive.handler_knobs, self.device)
        self.mirror, self.normalisation, self.dynamics = clip_inputs(self.archive.card.inference)
        self.net = self.archive.load_for_inference(self.device, runtime)
        self._lock = threading.Lock()  # one forward at a time: the embedded pool may call from several threads

    def clip_distributions(self, clips: np.ndarray) -> np.ndarray:
        validate_model_clips(clips)
        with self._lock:
            (result,) = handler.inference(self.net, [clips], self.batch_size, self.amp, self.mirror,
                                          self.normalisation, self.dynamics)
        if isinstance(result, DJLDMLError):  # pragma: no cover - inference passes only parse errors through
            raise result
        return np.asarray(result, dtype=np.float64)

    def model_info(self) -> ModelInfo:
        """The archive's ModelInfo with ``extra["engine"]``: what runs the network here (djldml.runtime)."""
        info = self.archive.model_info()
        engine = {"runtime": runtime_name(self.net) if self.net is not None else "none",
                  "device": self.device.type, "model_from": getattr(self.net, "source", "state dict")}
        return dataclasses.replace(info, extra={**info.extra, "engine": engine})

    def ready(self) -> tuple[bool, str]:
        return (True, "") if self.net is not None else (False, "model not loaded")

    def close(self) -> None:
        self.net = None
