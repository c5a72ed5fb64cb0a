"""Settings of the face-clip pipeline: one dataclass, plain values, shared by the trainer and the service.

The service uses the defaults (at most ``max_clips`` clips spread evenly over the video); the trainer sets
``max_clips=None`` for every clip (optionally overlapping, with ``clip_step``). Limits against hostile input
(frame size, duration, wall-clock time) live here too, so that the service can tighten them from its settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..clips import CLIP_LENGTH, FACE_SIZE


@dataclass(frozen=True)
class FaceConfig:
    # The clip contract in time (djldml.faces.timeline): every video is resampled by its timestamps to ``fps``
    # before clips are cut, so a clip of ``clip_length`` frames spans clip_span / fps seconds whatever the camera
    # delivered. The model card records the rate a model was trained at; the service uses that one.
    fps: float = 30.0
    clip_length: int = CLIP_LENGTH  # T: aligned frames per clip
    face_size: int = FACE_SIZE  # H = W of an aligned face
    temporal_stride: int = 1  # a clip takes every stride-th frame (stride 2: 16 frames span 31 source frames)
    # k: run the detector on every k-th frame, interpolate the landmarks in between. k=8 measured as accurate as
    # per-frame detection (6.9 % vs 7.1 % of the eye distance: yuface's own jitter dominates) and makes the
    # service's sampled clips ≈1.4× faster than k=5 (docs/faces.md).
    detect_every: int = 8
    detect_width: int = 320  # the detector sees a copy this wide for a 4:3 frame (same short side for other shapes)
    full_detect_every: int = 6  # between these, detect on a square around the followed face (≈4× cheaper)
    detect_threshold: float = 0.6  # yuface confidence (0..1) below which a detection is ignored
    min_face_fraction: float = 0.05  # ignore faces whose box is shorter than this fraction of the frame height

    max_clips: int | None = 32  # service: at most this many clips, spread evenly in time; None = every clip (trainer)
    clip_step: int | None = None  # frames between clip starts when max_clips is None (default: span, no overlap)
    min_clips: int = 1  # fewer face clips than this → TooFewFaceClips

    # Limits: a clinic upload that breaks one fails fast with a typed error instead of hanging or exhausting memory.
    min_duration_s: float = 0.5
    max_duration_s: float = 1800.0
    max_frame_pixels: int = 4096 * 2304  # 4K UHD passes; an 8K or crafted 30000×30000 stream does not
    max_fps: float = 240.0  # more packets than max_duration_s × max_fps → VideoTooLong before decoding
    max_processing_s: float = 900.0  # wall-clock budget for one video (probe + decode + detect + align)
    probe_bytes: int = 5_000_000  # FFmpeg probesize / analyzeduration cap: how much is read to identify a file
    decode_threads: int = 0  # FFmpeg decoder threads; 0 = automatic

    def __post_init__(self) -> None:
        if not 1.0 <= self.fps <= self.max_fps:
            raise ValueError(f"fps must be in [1, {self.max_fps}]")
        if self.clip_length < 1 or self.temporal_stride < 1 or self.detect_every < 1:
            raise ValueError("clip_length, temporal_stride and detect_every must be ≥ 1")
        if self.max_clips is not None and self.max_clips < 1:
            raise ValueError("max_clips must be ≥ 1 or None")
        if self.clip_step is not None and self.clip_step < 1:
            raise ValueError("clip_step must be ≥ 1 or None")
        if self.detect_width < 32 or self.face_size < 16:
            raise ValueError("detect_width must be ≥ 32 and face_size ≥ 16")

    @property
    def clip_span(self) -> int:
        """Frames of the resampled timeline covered by one clip, first to last inclusive."""
        return (self.clip_length - 1) * self.temporal_stride + 1

    @property
    def step(self) -> int:
        """Resampled frames between the starts of consecutive clips in the dense (trainer) mode."""
        return self.clip_step or self.clip_length * self.temporal_stride

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
