"""Shared checks for the face-pipeline tests: how far the pipeline's alignment is from the ideal one."""

import numpy as np

from djldml.faces.align import alignment_matrix, template


def eye_errors(used_landmarks: np.ndarray, true_landmarks: np.ndarray, face_size: int = 112) -> tuple[float, float]:
    """(pipeline vs ideal, pipeline vs template): the largest distance, in aligned-face pixels, between where
    the true eyes land with the pipeline's alignment and (a) where they land with the alignment from the true
    landmarks, (b) the template's eye points (this one includes how this face's shape differs from the template).
    """
    m = alignment_matrix(used_landmarks, face_size)
    ideal = alignment_matrix(true_landmarks, face_size)
    eyes = true_landmarks[:2]
    landed = eyes @ m[:, :2].T + m[:, 2]
    rel = np.linalg.norm(landed - (eyes @ ideal[:, :2].T + ideal[:, 2]), axis=1).max()
    absolute = np.linalg.norm(landed - template(face_size)[:2], axis=1).max()
    return float(rel), float(absolute)
