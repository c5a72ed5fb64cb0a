"""The face detector: libfacedetection (yuface), whose weights are compiled into the installed wheel.

Why this one (docs/faces.md has the measurements): it works offline with nothing downloaded, gives the 5
landmarks that the alignment needs, is BSD-3 licensed, runs ≈6–11 ms on a 320-px-wide frame on one CPU core,
and installs without touching numpy or torch (mediapipe needs numpy<2; MTCNN drags in another torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import cv2
import numpy as np
import yuface

from ..openmp import openmp_threads
from .config import FaceConfig

THREADS = int(os.environ.get("DJLDML_DETECTOR_THREADS", "1"))  # OpenMP threads per detection

NAME = "yuface (libfacedetection)"


def detector_version() -> str:
    try:
        return version("yuface")
    except PackageNotFoundError:  # pragma: no cover - only when run from a source tree without metadata
        return "unknown"


@dataclass(frozen=True)
class Face:
    """One detected face in full-resolution displayed coordinates."""

    score: float  # 0..1
    box: np.ndarray  # float [4]: x, y, w, h
    landmarks: np.ndarray  # float [5, 2]: eye (image-left), eye (image-right), nose, mouth left, mouth right

    @property
    def centre(self) -> np.ndarray:
        return self.box[:2] + self.box[2:] / 2

    @property
    def size(self) -> float:
        """Geometric mean of the box sides: the scale used to compare faces and judge motion."""
        return float(np.sqrt(max(self.box[2], 1.0) * max(self.box[3], 1.0)))


# A small face's box reads short: a face 6 % of the frame high gets a box of 5.0 % in the whole 640×480 frame
# (≈ 24 px) but of 5.8 % on its square enlarged to NEAR_SQUARE_PX (measured on the astronaut; 30 %: 29 % either
# way). Whole-frame searches therefore keep faces down to this fraction of min_face_fraction, and the size is
# judged on the square, so that a face just above the floor is not lost in every other frame.
LOCATE_SLACK = 0.8


def large_enough(face: Face, config: FaceConfig, frame_height: int) -> bool:
    """Whether ``face`` is at least ``min_face_fraction`` of the frame high."""
    return face.box[3] >= config.min_face_fraction * frame_height


def detect_faces(
    bgr: np.ndarray,
    sx: float,
    sy: float,
    config: FaceConfig,
    frame_height: int,
    offset: tuple[float, float] = (0, 0),
    locate: bool = False,
) -> list[Face]:
    """Faces in ``bgr`` (uint8, contiguous, BGR), mapped back to full-resolution coordinates by (sx, sy);
    ``offset`` is where ``bgr`` sits in the detector's image when it is a crop of it.

    Faces below the confidence threshold or shorter than ``min_face_fraction`` of the frame are left out;
    ``locate``: only those shorter than ``LOCATE_SLACK`` times that, for a search whose faces are measured
    again on their square (:func:`detect_near`).
    """
    with openmp_threads(THREADS):  # djldml.openmp says why
        scores, boxes, landmarks = yuface.detect(bgr, conf=config.detect_threshold)
    scale_xy = np.array([sx, sy])
    shift = np.array(offset, dtype=np.float64)
    faces = []
    for score, box, marks in zip(scores, boxes, landmarks, strict=False):
        # yuface returns int16 arrays; keep the arithmetic in float from here on.
        # Pixel centres: small index i covers full-resolution (i + 0.5) * s - 0.5.
        b = box.astype(np.float64)
        b[:2] = (b[:2] + shift + 0.5) * scale_xy - 0.5
        b[2:] *= scale_xy
        if b[3] < config.min_face_fraction * frame_height * (LOCATE_SLACK if locate else 1.0):
            continue
        lm = (marks.astype(np.float64).reshape(5, 2) + shift + 0.5) * scale_xy - 0.5
        faces.append(Face(score=float(score) / 100.0, box=b, landmarks=lm))
    return faces


SEARCH_SQUARE = 1.8  # side of the square searched around a followed face, in face sizes (tighter is cheaper)
MIN_SEARCH_PX = 64  # never search a smaller square than this (the detector needs some context)

# yuface's landmarks are best on a face box about 64–80 px high (in its input): measured on the astronaut at
# 6–45 % of the frame height, the worse eye landed a median 2.2–4.0 px from where perfect landmarks put it in the
# aligned face at 64–80 px, against 3.6–13 px at the face's own size and 5–6 px at 56 and 88 px (docs/faces.md,
# "Landmark precision"). The followed face's square is therefore resized to NEAR_SQUARE_PX, a face of ≈ 71 px:
# yuface pads its input to a multiple of 32, and 128 px costs 1.9 ms where 129–160 px cost 2.9 ms (measured).
NEAR_SQUARE_PX = 128
MAX_NEAR_ZOOM = 4.0  # never enlarge the square more than this (a tiny face has little to enlarge)
EDGE_PX = 4  # a face box this close to the square's edge (px of the resized square) is cut by it


def search_square(face: Face, sx: float, sy: float, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in the detector's image: a square around ``face`` (given in full-resolution
    coordinates), ``SEARCH_SQUARE`` face sizes wide (at least ``MIN_SEARCH_PX``), clipped to the image."""
    cx, cy = face.centre[0] / sx, face.centre[1] / sy
    half = max(MIN_SEARCH_PX, SEARCH_SQUARE * max(face.box[2] / sx, face.box[3] / sy)) / 2
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(width, int(cx + half) + 1), min(height, int(cy + half) + 1)
    return x0, y0, x1, y1


def detect_near(
    bgr: np.ndarray, sx: float, sy: float, around: Face, config: FaceConfig, frame_height: int
) -> list[Face]:
    """Faces in a square around ``around`` (full-resolution coordinates) in the detector's image ``bgr``,
    resized to ``NEAR_SQUARE_PX``: ``SEARCH_SQUARE`` face sizes wide (wider when the zoom reaches
    ``MAX_NEAR_ZOOM``), clipped to the image. Full-resolution coordinates, as :func:`detect_faces`."""
    h, w = bgr.shape[:2]
    face_px = max(around.box[2] / sx, around.box[3] / sy, 1.0)
    zoom = min(MAX_NEAR_ZOOM, NEAR_SQUARE_PX / (SEARCH_SQUARE * face_px))
    cx, cy, half = around.centre[0] / sx, around.centre[1] / sy, NEAR_SQUARE_PX / zoom / 2
    x0, y0 = max(0, int(round(cx - half))), max(0, int(round(cy - half)))
    x1, y1 = min(w, int(round(cx + half))), min(h, int(round(cy + half)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return []
    crop = bgr[y0:y1, x0:x1]
    cw = max(2, min(NEAR_SQUARE_PX, round((x1 - x0) * zoom)))
    ch = max(2, min(NEAR_SQUARE_PX, round((y1 - y0) * zoom)))
    if (cw, ch) != (x1 - x0, y1 - y0):
        crop = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_LINEAR if zoom > 1 else cv2.INTER_AREA)
    # The resized square's pixel j has its centre at square pixel (j + 0.5) / z - 0.5: detect_faces's map with
    # the scale divided by z and the offset multiplied by it.
    zx, zy = cw / (x1 - x0), ch / (y1 - y0)
    faces = detect_faces(np.ascontiguousarray(crop), sx / zx, sy / zy, config, frame_height, offset=(x0 * zx, y0 * zy))
    # A face that moved partly out of the square is found as a part face (a narrow box at the edge, landmarks
    # off by a face size: measured on a fast-moving face); drop it, so that the caller searches the whole frame.
    # The image's own edges do not count: a face can be cut by the frame.
    margin = EDGE_PX / np.array([zx, zy])
    lo = np.array([x0 if x0 > 0 else -np.inf, y0 if y0 > 0 else -np.inf]) + margin
    hi = np.array([x1 if x1 < w else np.inf, y1 if y1 < h else np.inf]) - margin
    scale = np.array([sx, sy])
    return [
        f
        for f in faces
        if np.all((f.box[:2] + 0.5) / scale - 0.5 >= lo) and np.all((f.box[:2] + f.box[2:] + 0.5) / scale - 0.5 <= hi)
    ]


def describe(config: FaceConfig) -> dict:
    """The detector and its settings, for the quality report."""
    return {
        "name": NAME,
        "version": detector_version(),
        "detect_every": config.detect_every,
        "detect_width": config.detect_width,
        "threshold": config.detect_threshold,
        "min_face_fraction": config.min_face_fraction,
        "full_detect_every": config.full_detect_every,
        "landmark_tracking": "linear interpolation between detections",
        "landmarks_from": f"the face's square, resized to {NEAR_SQUARE_PX} px",
    }
