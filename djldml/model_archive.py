"""Reading a TorchServe model archive (.mar, a zip): its model card, model file, config and sha256.

Used by the service's in-process backend (which loads the very archive TorchServe serves), by ``GET /models``,
and by ``trainer evaluate`` when it scores the archive a service would serve. The sha256 is of the whole
archive file, computed here because an archive cannot contain its own hash.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .errors import ModelError
from .model_card import CARD_FILENAME, ModelCard, file_sha256
from .model_file import MODEL_FILENAME, load_model
from .network import DJLDMLNet
from .runtime import IR_BIN, IR_XML, ClipNetwork, choose, load_model_dir

MAR_MANIFEST = "MAR-INF/MANIFEST.json"  # the archiver's manifest (not a dataset's manifest.csv)


@dataclass
class ModelArchive:
    path: Path
    card: ModelCard
    sha256: str  # of the .mar file
    manifest: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)  # the archive's model-config.yaml

    @property
    def handler_knobs(self) -> dict[str, Any]:
        """The ``handler:`` section of model-config.yaml (clip_batch, amp), as the TorchServe handler sees it."""
        return dict(self.model_config.get("handler") or {})

    def load_network(self, device: torch.device | str = "cpu") -> DJLDMLNet:
        """The archive's network in eval mode on ``device`` (model file extracted to a temp dir, then removed)."""
        with zipfile.ZipFile(self.path) as z, tempfile.TemporaryDirectory(prefix="djldml-mar-") as tmp:
            z.extract(MODEL_FILENAME, tmp)
            return load_model(Path(tmp) / MODEL_FILENAME, device)

    def load_for_inference(self, device: torch.device | str = "cpu", runtime: str | None = None) -> ClipNetwork:
        """The archive's network on the engine djldml.runtime chooses for ``device`` and ``runtime`` (None: the
        ``DJLDML_RUNTIME`` environment, else auto) — what the in-process backend serves, loaded as the TorchServe
        handler loads it (:func:`djldml.runtime.load_model_dir`)."""
        with zipfile.ZipFile(self.path) as z, tempfile.TemporaryDirectory(prefix="djldml-mar-") as tmp:
            names = [MODEL_FILENAME]
            if choose(device, runtime) == "openvino" and {IR_XML, IR_BIN} <= set(z.namelist()):
                names += [IR_XML, IR_BIN]
            for name in names:
                z.extract(name, tmp)
            return load_model_dir(tmp, device, runtime)


def open_archive(path: str | Path) -> ModelArchive:
    """Read a .mar's card, manifest and config; ModelError when it is missing, not a zip, or lacks them."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model archive {path.name} not found")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            missing = [n for n in (CARD_FILENAME, MODEL_FILENAME) if n not in names]
            if missing:
                raise ModelError(f"{path.name} lacks {', '.join(missing)}: not a djldml archive")
            card = ModelCard.from_json(z.read(CARD_FILENAME))
            manifest = json.loads(z.read(MAR_MANIFEST)) if MAR_MANIFEST in names else {}
            config_name = manifest.get("model", {}).get("configFile")
            config = yaml.safe_load(z.read(config_name)) if config_name in names else {}
    except zipfile.BadZipFile:
        raise ModelError(f"{path.name} is not a model archive (not a zip file)") from None
    return ModelArchive(path=path, card=card, sha256=file_sha256(path), manifest=manifest,
                        model_config=config or {})


def list_archives(model_store: str | Path) -> list[ModelArchive]:
    """Every readable djldml archive in ``model_store`` (unreadable ones are skipped), sorted by file name."""
    out = []
    for p in sorted(Path(model_store).glob("*.mar")):
        try:
            out.append(open_archive(p))
        except ModelError:
            continue
    return out
