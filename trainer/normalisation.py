"""Which input normalisation a training run uses, and how its config records it for the model card.

``input_normalisation`` in the training config names one of :data:`djldml.clips.NORMALISATIONS` or is
``"auto"``: what the pretrained weights expect (Sports-1M C3D: RGB 0–255; this project's weights: what they
were trained with), else ``"default"`` ([-1, 1]). The train loop resolves ``"auto"`` once, after loading the
weights, and saves the resolved name in the run's config, so evaluation and ``trainer export`` (which writes it
into the card's ``inference.input_normalisation``) never have to look at the weights file again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from djldml.clips import NORMALISATIONS, InputNormalisation

if TYPE_CHECKING:  # the config imports this module: no torch at import time
    from djldml.network import PretrainedReport

AUTO = "auto"
CHOICES = (AUTO, *NORMALISATIONS)


def check_name(name: str) -> None:
    """ValueError unless ``name`` is "auto" or a name of djldml.clips.NORMALISATIONS."""
    if name not in CHOICES:
        raise ValueError(f"input_normalisation must be one of {CHOICES}, got {name!r}")


def resolve_input_normalisation(cfg, report: PretrainedReport | None):
    """``cfg`` (a TrainConfig) with ``input_normalisation`` resolved: "auto" → the pretrained weights' own
    (``report.normalisation``) or "default" when training from scratch. A named choice is kept as it is."""
    name = getattr(cfg, "input_normalisation", AUTO)
    check_name(name)
    if name != AUTO:
        return cfg
    return replace(cfg, input_normalisation=report.normalisation if report is not None else "default")


def training_normalisation(training: dict[str, Any] | None) -> InputNormalisation | None:
    """The normalisation a run's config records (None: the default [-1, 1]). A config without the key, or with
    "auto" (written before the key was resolved at training time), was trained with the default."""
    name = (training or {}).get("input_normalisation", "default")
    if name == AUTO:
        return None
    check_name(name)
    return NORMALISATIONS[name]
