"""The model card: what a deployable model archive says about itself.

Written by ``trainer export`` into the .mar as ``model_card.json``, read by the service (``GET /models``) and
by anyone holding the archive. It carries the facts needed to judge a prediction: which network, trained how,
on what data, with which measured metrics, and whether it is a synthetic demo (never a clinical model).

The sha256 of the archive is not in the card (a file cannot contain its own hash): the reader computes it.

Packed into the .mar with the handler: keep it runnable on the stock TorchServe image's Python (3.9).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from .calibration import calibration_of
from .clips import input_normalisation
from .errors import ModelError

CARD_FILENAME = "model_card.json"  # name inside a .mar
CARD_FORMAT = "djldml-model-card/1"


def _now() -> str:
    # timezone.utc, not datetime.UTC (3.11+): this module is packed into the .mar and may run on Python 3.9.
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()  # noqa: UP017


@dataclass
class ModelCard:
    name: str  # the TorchServe model name, e.g. "djldml-demo"
    version: str  # the archive version, e.g. "1.0"
    synthetic_demo: bool  # True: trained on synthetic data only; its scores mean nothing clinically
    description: str = ""
    created: str = field(default_factory=_now)  # ISO 8601, UTC
    net_config: dict[str, Any] = field(default_factory=dict)  # djldml.network.NetConfig.to_dict()
    training: dict[str, Any] = field(default_factory=dict)  # the training config (loss weights, σ, epochs, ...)
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"test": {"mae": 7.1, "rmse": 9.0}}
    data: dict[str, Any] = field(default_factory=dict)  # description of the data: source, sizes, splits
    # how the training faces were made (djldml.faces.provenance): the service checks its own against it
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # how clip distributions are computed, beyond the network: {"mirror_average": true} averages each clip's
    # distribution with its mirror image's (djldml.inference.clip_distributions); "input_normalisation": the
    # pixel normalisation of to_tensor (djldml.clips.InputNormalisation; absent: [-1, 1]); "calibration": of the
    # video distribution (djldml.calibration.Calibration; absent: uncalibrated)
    inference: dict[str, Any] = field(default_factory=dict)
    model_sha256: str = ""  # of the model file inside the archive (the archive's own hash: see module doc)
    format: str = CARD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        if not isinstance(d, dict) or d.get("format", CARD_FORMAT) != CARD_FORMAT:
            raise ModelError(f"not a {CARD_FORMAT} model card")
        missing = [k for k in ("name", "version", "synthetic_demo") if k not in d]
        if missing:
            raise ModelError(f"model card lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        card = cls(**{k: v for k, v in d.items() if k in known})
        if not isinstance(card.synthetic_demo, bool):
            raise ModelError("model card: synthetic_demo must be true or false")
        if not isinstance(card.inference, dict):
            raise ModelError("model card: inference must be an object")
        input_normalisation(card.inference)  # a malformed record refuses the card now, not every request later
        calibration_of(card.inference)
        return card

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise ModelError(f"model card is not JSON: {exc}") from None
        return cls.from_dict(d)


def file_sha256(path) -> str:
    """Hex sha256 of a file (an archive's identity: what ``GET /models`` reports and what a deploy pins)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
