"""The face detector: libfacedetection (yuface), whose weights are compiled into the installed wheel.

Why this one (docs/faces.md has the measurements): it works offline with nothing downloaded, gives the 5
landmarks that the alignment needs, is BSD-3 licensed, runs ≈6–11 ms on a 320-px-wide frame on one CPU core,
and installs without touching numpy or torch (mediapipe needs numpy<2; MTCNN drags in another torch).
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import yuface

from .config import FaceConfig


class _OneOpenMPThread:
    """Context manager: every loaded OpenMP runtime uses one thread in this thread, restored afterwards.

    libfacedetection parallelises one small image over all cores with OpenMP. On a shared or busy machine the
    spinning threads made a 320×240 detection 30× more expensive (≈400 ms of CPU instead of ≈12 ms, measured),
    and a service running several workers wants one core per detection anyway. Which OpenMP runtime yuface's
    calls reach depends on import order (torch loads its own libgomp globally and then wins the symbol lookup),
    so the setting is applied to every libgomp in the process, per call, and restored: torch's own threads
    are unaffected. Linux only (it reads /proc/self/maps); elsewhere a no-op.
    """

    def __init__(self) -> None:
        self._libs: list[ctypes.CDLL] = []
        self._modules_seen = -1
        self._saved: list[int] = []

    def _refresh(self) -> None:
        if len(sys.modules) == self._modules_seen:
            return  # nothing new imported, so no new runtime loaded
        self._modules_seen = len(sys.modules)
        paths = set()
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    path = line.rsplit(None, 1)[-1]
                    if os.path.basename(path).startswith("libgomp"):
                        paths.add(path)
        except OSError:
            return
        libs = []
        for path in sorted(paths):
            try:
                lib = ctypes.CDLL(path)
                lib.omp_get_max_threads.restype = ctypes.c_int
                libs.append(lib)
            except (OSError, AttributeError):
                continue
        self._libs = libs

    def __enter__(self) -> None:
        self._refresh()
        self._saved = [lib.omp_get_max_threads() for lib in self._libs]
        for lib in self._libs:
            lib.omp_set_num_threads(THREADS)

    def __exit__(self, *exc) -> None:
        for lib, n in zip(self._libs, self._saved, strict=False):
            lib.omp_set_num_threads(n)


THREADS = int(os.environ.get("DJLDML_DETECTOR_THREADS", "1"))
_one_thread = _OneOpenMPThread()

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


def detect_faces(
    bgr: np.ndarray, sx: float, sy: float, config: FaceConfig, frame_height: int, offset: tuple[int, int] = (0, 0)
) -> list[Face]:
    """Faces in ``bgr`` (uint8, contiguous, BGR), mapped back to full-resolution coordinates by (sx, sy);
    ``offset`` is where ``bgr`` sits in the detector's image when it is a crop of it.

    Faces below the confidence threshold or shorter than ``min_face_fraction`` of the frame are left out.
    """
    with _one_thread:
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
        if b[3] < config.min_face_fraction * frame_height:
            continue
        lm = (marks.astype(np.float64).reshape(5, 2) + shift + 0.5) * scale_xy - 0.5
        faces.append(Face(score=float(score) / 100.0, box=b, landmarks=lm))
    return faces


SEARCH_SQUARE = 1.8  # side of the square searched around a followed face, in face sizes (tighter is cheaper)
MIN_SEARCH_PX = 64  # never search a smaller square than this (the detector needs some context)


def search_square(face: Face, sx: float, sy: float, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in the detector's image: a square around ``face`` (given in full-resolution
    coordinates), ``SEARCH_SQUARE`` face sizes wide, clipped to the image."""
    cx, cy = face.centre[0] / sx, face.centre[1] / sy
    half = max(MIN_SEARCH_PX, SEARCH_SQUARE * max(face.box[2] / sx, face.box[3] / sy)) / 2
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(width, int(cx + half) + 1), min(height, int(cy + half) + 1)
    return x0, y0, x1, y1


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
    }
