"""The inference backend interface: clips in, per-clip distributions out.

Two implementations (``torchserve.TorchServeBackend`` over HTTP, ``in_process.InProcessBackend`` loading the
same .mar in the worker) must return the same numbers for the same clips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from djldml.model_card import ModelCard


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str  # of the .mar archive
    synthetic_demo: bool  # True when trained on synthetic data only: never a clinical model
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # config, metrics, data description from the archive

    @classmethod
    def from_card(cls, card: ModelCard, sha256: str = "", archive: str = "") -> ModelInfo:
        """What ``GET /models`` and every result say about a model, from its card: the one place a card becomes
        a ModelInfo (an archive read from disk, a card TorchServe describes), so both carry the same facts."""
        extra: dict[str, Any] = {"created": card.created, "net_config": card.net_config, "training": card.training,
                                 "metrics": card.metrics, "data": card.data, "model_sha256": card.model_sha256,
                                 "preprocessing": card.preprocessing, "inference": card.inference}
        if card.provenance:  # a re-exported archive says so (trainer export --from-mar)
            extra["provenance"] = card.provenance
        if archive:
            extra["archive"] = archive
        return cls(name=card.name, version=card.version, sha256=sha256, synthetic_demo=card.synthetic_demo,
                   description=card.description, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BackendUnavailable(Exception):
    """The backend cannot answer now (down, starting, overloaded); the caller may retry later."""

    code = "backend_unavailable"


class InferenceBackend(Protocol):
    def clip_distributions(self, clips: np.ndarray) -> np.ndarray:
        """uint8 ``[N, T, H, W, 3]`` → float64 ``[N, 64]``. Raises BackendUnavailable or djldml ModelError."""

    def model_info(self) -> ModelInfo: ...

    def ready(self) -> tuple[bool, str]:
        """(True, "") when a request would be served now, else (False, reason)."""

    def close(self) -> None: ...
