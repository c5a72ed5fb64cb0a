"""Following the interviewee between detections.

The detector runs on every k-th frame only. Between two detections of the same face, the 5 landmarks are
interpolated linearly (on our test motion k=8 is as accurate as per-frame detection, see docs/faces.md). When
several faces appear, the interviewee is the largest one, with hysteresis: the face that continues the current
track keeps it unless another face is clearly (``SWITCH_RATIO``×) larger. Two detections belong to the same
track only if the face moved and changed size little between them — otherwise (a cut, another person) the
frames between them are not interpolated.
"""

from __future__ import annotations

import numpy as np

from .detect import Face

SWITCH_RATIO = 1.5  # another face must be this much larger (in size) to take over the track
MAX_SHIFT = 0.5  # consecutive detections: centre moved at most this fraction of the face size …
MAX_SCALE = 1.4  # … and the size changed by at most this factor


def same_face(a: Face, b: Face) -> bool:
    """Whether ``b`` plausibly continues ``a`` a few frames later."""
    size = 0.5 * (a.size + b.size)
    ratio = max(a.size, b.size) / max(min(a.size, b.size), 1e-6)
    return float(np.linalg.norm(a.centre - b.centre)) <= MAX_SHIFT * size and ratio <= MAX_SCALE


def choose_face(faces: list[Face], previous: Face | None) -> Face | None:
    """The interviewee among ``faces``: the largest, preferring the one that continues ``previous``."""
    if not faces:
        return None
    largest = max(faces, key=lambda f: f.size)
    if previous is None:
        return largest
    continuing = [f for f in faces if same_face(previous, f)]
    if continuing:
        best = max(continuing, key=lambda f: f.size)
        if largest.size <= SWITCH_RATIO * best.size:
            return best
    return largest


def interpolate(a: Face, b: Face, fraction: float) -> np.ndarray:
    """Landmarks [5, 2] at ``fraction`` (0 → a, 1 → b) of the way between two detections of one face."""
    return (1.0 - fraction) * a.landmarks + fraction * b.landmarks
