"""The service's view of a model archive: :mod:`djldml.model_archive` plus the :class:`ModelInfo` it reports.

A card becomes a ModelInfo in one place, :meth:`ModelInfo.from_card` — for an archive read from disk and for a
card TorchServe describes — so both carry the same facts (preprocessing and inference included).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from djldml import model_archive as archives

from .base import ModelInfo


class ModelArchive(archives.ModelArchive):
    def model_info(self) -> ModelInfo:
        return ModelInfo.from_card(self.card, self.sha256, self.path.name)


def _ours(a: archives.ModelArchive) -> ModelArchive:
    return ModelArchive(**{f.name: getattr(a, f.name) for f in fields(a)})


def open_archive(path: str | Path) -> ModelArchive:
    """:func:`djldml.model_archive.open_archive`, as the service's ModelArchive; ModelError when unusable."""
    return _ours(archives.open_archive(path))


def list_archives(model_store: str | Path) -> list[ModelArchive]:
    """Every readable djldml archive in ``model_store`` (unreadable ones are skipped), sorted by file name."""
    return [_ours(a) for a in archives.list_archives(model_store)]
