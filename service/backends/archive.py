"""The service's view of a model archive: :mod:`djldml.model_archive` plus the :class:`ModelInfo` it reports.

:func:`info_from_card` is the one place a model card becomes a ModelInfo — for an archive read from disk and for
a card TorchServe describes — so both carry the same facts (preprocessing and inference included).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from djldml import model_archive as archives
from djldml.model_card import ModelCard

from .base import ModelInfo

MANIFEST = archives.MANIFEST


def info_from_card(card: ModelCard, sha256: str = "", archive: str = "") -> ModelInfo:
    """What ``GET /models`` and every result say about a model, from its card."""
    extra: dict[str, Any] = {"created": card.created, "net_config": card.net_config, "training": card.training,
                             "metrics": card.metrics, "data": card.data, "model_sha256": card.model_sha256,
                             "preprocessing": card.preprocessing, "inference": card.inference}
    if archive:
        extra["archive"] = archive
    return ModelInfo(name=card.name, version=card.version, sha256=sha256, synthetic_demo=card.synthetic_demo,
                     description=card.description, extra=extra)


class ModelArchive(archives.ModelArchive):
    def model_info(self) -> ModelInfo:
        return info_from_card(self.card, self.sha256, self.path.name)


def _ours(a: archives.ModelArchive) -> ModelArchive:
    return ModelArchive(**{f.name: getattr(a, f.name) for f in fields(a)})


def open_archive(path: str | Path) -> ModelArchive:
    """:func:`djldml.model_archive.open_archive`, as the service's ModelArchive; ModelError when unusable."""
    return _ours(archives.open_archive(path))


def list_archives(model_store: str | Path) -> list[ModelArchive]:
    """Every readable djldml archive in ``model_store`` (unreadable ones are skipped), sorted by file name."""
    return [_ours(a) for a in archives.list_archives(model_store)]
