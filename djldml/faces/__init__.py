"""Contract 2's producer: the one pipeline that turns a video into face clips, for the trainer and the service.

    from djldml.faces import FaceConfig, extract_face_clips, iter_aligned_frames
    clips = extract_face_clips("interview.mp4")                   # service: ≤ 32 clips spread evenly in time
    clips = extract_face_clips(path, FaceConfig(max_clips=None))  # trainer: every clip
    frames = iter_aligned_frames(path, FaceConfig())              # trainer: stream, then frames.report

See docs/faces.md for the design, the detector choice and the measured throughput.
"""

from .align import ALIGN_TEMPLATE, alignment_matrix, similarity
from .config import FaceConfig
from .decode import VideoInfo, probe
from .pipeline import (
    AlignedFrame,
    AlignedFrames,
    FaceClipStream,
    extract_face_clips,
    extract_face_clips_with_landmarks,
    iter_aligned_frames,
    iter_face_clips,
)
from .timeline import Timeline, clip_segments

__all__ = [
    "ALIGN_TEMPLATE",
    "AlignedFrame",
    "AlignedFrames",
    "FaceClipStream",
    "FaceConfig",
    "Timeline",
    "VideoInfo",
    "alignment_matrix",
    "clip_segments",
    "extract_face_clips",
    "extract_face_clips_with_landmarks",
    "iter_aligned_frames",
    "iter_face_clips",
    "probe",
    "similarity",
]
