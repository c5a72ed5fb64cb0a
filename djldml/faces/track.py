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


GROUP_SHIFT = 1.5  # sampled clips of one person: centres within this many face sizes of the previous clip's …
GROUP_SCALE = 1.5  # … and sizes within this factor (a passer-by close to the camera is larger and elsewhere)


def persistent_clips(landmarks: np.ndarray) -> np.ndarray:
    """Which sampled clips show the most persistent face: bool [N] for clips' landmarks [N, T, 5, 2] (in time
    order).

    Each window picks the largest face it sees, so a larger face that is there only for a while (someone
    walking past close to the camera, a second person joining) can take some windows. Clips are linked into
    groups of one person — a clip joins the group whose latest clip is near it in place and size — and only
    the group with the most clips (ties: the larger face) is kept. With one person on screen every clip is kept.
    """
    n = len(landmarks)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    centres = landmarks.mean(axis=(1, 2))  # [N, 2]
    # Face size from the 5 points' mean distance to their centroid, which is ≈ 1/5 of the face's extent (on the
    # ArcFace template: 20.8 px in a 112 px face crop); robust to head turns, unlike the eye distance alone.
    spread = np.linalg.norm(landmarks - landmarks.mean(axis=2, keepdims=True), axis=3).mean(axis=(1, 2))
    sizes = np.maximum(5.0 * spread, 1e-6)
    groups: list[list[int]] = []
    for i in range(n):
        for g in groups:
            j = g[-1]
            near = np.linalg.norm(centres[i] - centres[j]) <= GROUP_SHIFT * 0.5 * (sizes[i] + sizes[j])
            if near and max(sizes[i], sizes[j]) / min(sizes[i], sizes[j]) <= GROUP_SCALE:
                g.append(i)
                break
        else:
            groups.append([i])
    if len(groups) == 1:
        return keep
    best = max(groups, key=lambda g: (len(g), float(np.mean(sizes[g]))))
    keep[:] = False
    keep[best] = True
    return keep


def interpolate(a: Face, b: Face, fraction: float) -> np.ndarray:
    """Landmarks [5, 2] at ``fraction`` (0 → a, 1 → b) of the way between two detections of one face."""
    return (1.0 - fraction) * a.landmarks + fraction * b.landmarks


LINE_RESIDUAL = 0.05  # detections within this fraction of the face size of a straight line are jitter around it


def line_fit(positions: np.ndarray, landmarks: np.ndarray, size: float) -> np.ndarray | None:
    """Least-squares straight line through detections of one face: landmarks [n, 5, 2] at frame ``positions``
    [n] (n ≥ 3) → the line's landmarks at those positions [n, 5, 2], or None when a detection lies more than
    ``LINE_RESIDUAL`` × ``size`` (pixels) from it (the face really turned or accelerated: keep the detections).

    Why: the detector's landmarks jitter by a pixel or two from frame to frame (yuface's integer landmarks at
    the detection scale), and differently on each encoding of the same video. Interpolating through each
    detection turns that jitter into motion of the aligned face — which a model of facial dynamics reads as
    signal (the demo's score moved by up to 2 BDI points between encodings of one scene). Over a clip (≈ 0.6 s)
    a face's rigid motion is close to linear, so a fitted line keeps the motion and drops the jitter.
    """
    x = np.asarray(positions, dtype=np.float64)
    y = np.asarray(landmarks, dtype=np.float64).reshape(len(x), -1)
    design = np.stack([np.ones_like(x), x - x.mean()], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    fit = design @ coef
    if np.abs(fit - y).max() > LINE_RESIDUAL * size:
        return None
    return fit.reshape(np.shape(landmarks))
