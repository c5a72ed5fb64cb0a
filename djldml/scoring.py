"""One video → one prediction, the same way everywhere: the service's job and ``trainer evaluate --videos``.

ARCHITECTURE.md promises that the trainer's figures are the service's. Both therefore

1. cut clips with :func:`djldml.faces.provenance.scoring_config` of the model card (its clip geometry in time,
   landmark settings and clip selection) through :func:`djldml.faces.extract_face_clips`;
2. send them to the model in requests of at most :data:`BATCH_CLIPS` clips (what one TorchServe request
   carries; batch composition can change float rounding, so evaluation batches exactly as the service does);
3. aggregate with :func:`djldml.prediction.predict_video`.

The model is a callable ``uint8 [n, T, H, W, 3] → float64 [n, 64]``: a TorchServe or in-process backend in the
service, ``djldml.inference.clip_distributions`` on a loaded network in the trainer. No torch import here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import Calibration
from .clips import FaceClips
from .faces import extract_face_clips
from .faces.provenance import scoring_config
from .prediction import VideoPrediction, predict_video

BATCH_CLIPS = 8  # clips per inference request: the service's default DJLDML_INFERENCE_BATCH_CLIPS
ClipModel = Callable[[np.ndarray], np.ndarray]


def score_clips(
    clips: FaceClips,
    model: ClipModel,
    batch_clips: int = BATCH_CLIPS,
    on_batch: Callable[[int, int], None] | None = None,
    calibration: Calibration | None = None,
) -> VideoPrediction:
    """The video prediction from ``clips`` (N ≥ 1): ``model`` on batches of ``batch_clips`` clips, in order,
    then :func:`~djldml.prediction.predict_video` with the clips' start times and the model card's
    ``calibration``. ``on_batch(done, total)`` after each batch (progress). Raises ModelError (from
    predict_video) on malformed distributions."""
    n = len(clips)
    dists = []
    for i in range(0, n, batch_clips):
        dists.append(np.asarray(model(clips.clips[i : i + batch_clips]), dtype=np.float64))
        if on_batch is not None:
            on_batch(min(n, i + batch_clips), n)
    return predict_video(np.concatenate(dists), clips.start_times, calibration=calibration)


def score_video(
    path: str | Path,
    preprocessing: dict[str, Any] | None,
    model: ClipModel,
    batch_clips: int = BATCH_CLIPS,
    calibration: Calibration | None = None,
    **limits: Any,
) -> tuple[FaceClips, VideoPrediction]:
    """Face clips and prediction of the video at ``path`` for a model whose card records ``preprocessing`` and
    ``calibration`` (``limits``: FaceConfig overrides such as max_duration_s). Raises the typed errors of
    djldml.errors."""
    clips = extract_face_clips(str(path), scoring_config(preprocessing, **limits))
    return clips, score_clips(clips, model, batch_clips, calibration=calibration)
