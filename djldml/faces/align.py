"""Similarity alignment of a face to a fixed 5-point template.

The template is ArcFace's 112×112 five-point template (eyes, nose tip, mouth corners; insightface, MIT), the
de-facto standard for 112×112 aligned faces. A similarity transform (rotation, uniform scale, translation: no
shear, so the face keeps its proportions) is fitted by least squares (Umeyama 1991) — closed form, no RANSAC,
so the same landmarks always give the same pixels in the trainer and in the service.
"""

from __future__ import annotations

import cv2
import numpy as np

# (x, y) in a 112×112 face, in the detector's landmark order: eye at image-left, eye at image-right, nose tip,
# mouth corner at image-left, mouth corner at image-right.
ALIGN_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ALIGN_TEMPLATE.setflags(write=False)
TEMPLATE_SIZE = 112


def template(face_size: int) -> np.ndarray:
    """The template scaled to a ``face_size``×``face_size`` output."""
    return ALIGN_TEMPLATE * (face_size / TEMPLATE_SIZE)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2×3) taking points ``src`` [n, 2] onto ``dst`` [n, 2] (Umeyama)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0  # a reflection is not a similarity: flip the weakest axis instead
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def similarities(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """:func:`similarity` for a batch: ``src`` [b, n, 2] onto one ``dst`` [n, 2] → [b, 2, 3] (one SVD call for
    a whole clip instead of one per frame)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[1]
    mu_s, mu_d = src.mean(1), dst.mean(0)
    s0, d0 = src - mu_s[:, None], dst - mu_d
    var_s = (s0**2).sum((1, 2)) / n
    cov = np.einsum("nj,bnk->bjk", d0, s0) / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones((len(src), 2))
    d[np.linalg.det(u) * np.linalg.det(vt) < 0, 1] = -1.0  # no reflections, as in similarity()
    rot = u @ (d[:, :, None] * vt)
    scale = np.where(var_s > 0, (sig * d).sum(1) / np.where(var_s > 0, var_s, 1.0), 1.0)
    m = np.empty((len(src), 2, 3))
    m[:, :, :2] = scale[:, None, None] * rot
    m[:, :, 2] = mu_d - np.einsum("bjk,bk->bj", m[:, :, :2], mu_s)
    return m


def alignment_matrices(
    landmarks: np.ndarray, face_size: int, stored_to_display: np.ndarray | None = None
) -> np.ndarray:
    """:func:`alignment_matrix` for landmarks [b, 5, 2] → [b, 2, 3]."""
    m = similarities(landmarks, template(face_size))
    if stored_to_display is not None:
        m = m @ stored_to_display
    return m


def alignment_matrix(landmarks: np.ndarray, face_size: int, stored_to_display: np.ndarray | None = None) -> np.ndarray:
    """2×3 map from stored-frame pixels to the aligned face, given displayed-frame landmarks [5, 2].

    Folding the rotation metadata (``stored_to_display``, 3×3) into this one warp means rotated phone videos
    are never rotated as whole frames.
    """
    m = similarity(landmarks, template(face_size))
    if stored_to_display is not None:
        m = m @ stored_to_display
    return m


def shrink_factor(matrix: np.ndarray) -> int:
    """Integer factor by which to shrink the face region before warping with ``matrix`` (2×3), so that the warp
    never downsamples by more than ≈2×: bilinear interpolation only averages 2×2 pixels and aliases beyond that
    (a face in a 1080p or 4K frame is 3–10× larger than 112 px)."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # output pixels per input pixel
    return max(1, int(round(0.5 / scale))) if scale > 0 else 1


def warp(rgb: np.ndarray, matrix: np.ndarray, face_size: int) -> np.ndarray:
    """The aligned face, uint8 [face_size, face_size, 3], from ``rgb`` (any size) and the 2×3 ``matrix`` that
    maps its pixels to the face's; outside the frame is black.

    When the face is much larger than ``face_size``, only the region the face comes from is first shrunk by
    an integer factor with area averaging (cheap: the region, not the frame), then warped.
    """
    shrink = shrink_factor(matrix)
    if shrink > 1:
        rgb, matrix = _shrunk_region(rgb, matrix, face_size, shrink)
    return cv2.warpAffine(
        rgb, matrix, (face_size, face_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def source_region(matrix: np.ndarray, face_size: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the part of a ``width``×``height`` frame that ``warp(frame, matrix, face_size)`` reads,
    so that only it needs converting to RGB. ``warp(frame[y0:y1, x0:x1], shifted(matrix, x0, y0), …)`` gives the
    same face: the region holds the output square mapped back plus the interpolation's and the area shrink's
    margins, and its corner lies on the shrink factor's grid (same pixel blocks averaged) and is even (4:2:0
    chroma can be cut there). Empty (x1 ≤ x0 or y1 ≤ y0) when the face lies wholly outside the frame."""
    shrink = shrink_factor(matrix)
    grid = 2 * shrink
    inv = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [face_size, 0], [0, face_size], [face_size, face_size]], np.float64)
    src = corners @ inv[:, :2].T + inv[:, 2]
    lo = np.floor(src.min(0)).astype(int) - shrink - 1
    hi = np.ceil(src.max(0)).astype(int) + shrink + 2
    x0, y0 = (max(0, int(v) - int(v) % grid) for v in lo)
    x1 = min(width, x0 + -(-(int(hi[0]) - x0) // 2) * 2)  # even width unless the frame's edge is odd
    y1 = min(height, y0 + -(-(int(hi[1]) - y0) // 2) * 2)
    return x0, y0, x1, y1


def shifted(matrix: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """``matrix`` for a crop whose pixel (0, 0) is the frame's (x0, y0)."""
    m = matrix.copy()
    m[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    return m


def _shrunk_region(rgb: np.ndarray, matrix: np.ndarray, face_size: int, shrink: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``rgb`` that the output square comes from, shrunk ``shrink``×, and the matrix for it."""
    h, w = rgb.shape[:2]
    inv = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [face_size, 0], [0, face_size], [face_size, face_size]], np.float64)
    src = corners @ inv[:, :2].T + inv[:, 2]
    x0, y0 = np.floor(src.min(0)).astype(int) - shrink
    x1, y1 = np.ceil(src.max(0)).astype(int) + shrink
    # Keep the region on a multiple of the shrink factor from the frame's origin, so that the same face position
    # always averages the same pixel blocks; clip to the frame (outside stays black via the warp's border).
    x0, y0 = max(0, x0 - x0 % shrink), max(0, y0 - y0 % shrink)
    x1, y1 = min(w, x1), min(h, y1)
    cw, ch = (x1 - x0) // shrink, (y1 - y0) // shrink
    if cw < 2 or ch < 2:
        return rgb, matrix
    region = rgb[y0 : y0 + ch * shrink, x0 : x0 + cw * shrink]
    small = cv2.resize(region, (cw, ch), interpolation=cv2.INTER_AREA)
    # small pixel (u, v) has its centre at full-resolution ((u + 0.5) * shrink - 0.5 + x0, …).
    to_full = np.array([[shrink, 0, 0.5 * shrink - 0.5 + x0], [0, shrink, 0.5 * shrink - 0.5 + y0], [0, 0, 1]])
    return small, matrix @ to_full
