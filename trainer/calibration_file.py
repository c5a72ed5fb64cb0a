"""Where a run keeps its calibration: ``<run dir>/calibration.json`` (written by ``trainer calibrate``), read by
``trainer evaluate`` and packed into the model card's ``inference.calibration`` by ``trainer export``."""

from __future__ import annotations

import json
from pathlib import Path

from djldml.calibration import Calibration
from djldml.errors import ModelError

CALIBRATION_FILE = "calibration.json"  # in a run directory


def read_calibration(spec: str | Path | Calibration) -> Calibration:
    """A Calibration, or one read from its JSON file; ModelError when the file is not one."""
    if isinstance(spec, Calibration):
        return spec
    try:
        return Calibration.from_dict(json.loads(Path(spec).read_text()))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read calibration {Path(spec).name}: {exc}") from None


def run_calibration(model: str | Path) -> Calibration | None:
    """The ``calibration.json`` of a run directory (or of a checkpoint's directory), or None."""
    path = Path(model)
    found = (path if path.is_dir() else path.parent) / CALIBRATION_FILE
    return read_calibration(found) if found.is_file() else None
