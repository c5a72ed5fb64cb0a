"""A contact sheet of aligned faces: one row per clip (evenly chosen frames of it), to look at by eye.

The template's five points can be drawn on top, so a glance shows whether eyes and mouth land where they should.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .align import template


def contact_sheet(
    clips: np.ndarray, *, rows: int = 8, per_clip: int = 8, marks: bool = True, pad: int = 2
) -> np.ndarray:
    """uint8 RGB image of up to ``rows`` clips (evenly chosen) × ``per_clip`` frames (evenly chosen)."""
    if clips.ndim != 5 or len(clips) == 0:
        return np.zeros((16, 16, 3), np.uint8)
    n, t, size = clips.shape[0], clips.shape[1], clips.shape[2]
    clip_ids = np.unique(np.linspace(0, n - 1, min(rows, n)).round().astype(int))
    frame_ids = np.unique(np.linspace(0, t - 1, min(per_clip, t)).round().astype(int))
    cell = size + pad
    sheet = np.full((len(clip_ids) * cell + pad, len(frame_ids) * cell + pad, 3), 255, np.uint8)
    points = template(size).round().astype(int)
    for r, ci in enumerate(clip_ids):
        for c, fi in enumerate(frame_ids):
            face = np.ascontiguousarray(clips[ci, fi])
            if marks:
                face = face.copy()
                for x, y in points:
                    cv2.circle(face, (int(x), int(y)), 1, (0, 255, 0), -1)
            y0, x0 = pad + r * cell, pad + c * cell
            sheet[y0 : y0 + size, x0 : x0 + size] = face
    return sheet


def save_contact_sheet(clips: np.ndarray, path: str | Path, **kwargs) -> Path:
    path = Path(path)
    if not cv2.imwrite(str(path), cv2.cvtColor(contact_sheet(clips, **kwargs), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path.suffix} image")
    return path
