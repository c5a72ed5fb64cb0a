"""Typed failures of the face-clip pipeline and of inference.

Each carries a stable ``code`` (snake_case) that the service maps to an HTTP problem+json response and the
trainer prints in its report. Never match on messages; match on ``code``.
"""

from __future__ import annotations


class DJLDMLError(Exception):
    """Base class: a failure the caller can explain to a user."""

    code = "djldml_error"

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details  # small, JSON-serialisable facts (never file names or video bytes)


class VideoError(DJLDMLError):
    """The input video cannot be turned into face clips."""

    code = "video_error"


class NotAVideo(VideoError):
    """Empty, not a media file, no video stream, or undecodable."""

    code = "not_a_video"


class VideoTooShort(VideoError):
    code = "video_too_short"


class VideoTooLong(VideoError):
    code = "video_too_long"


class VideoTooLarge(VideoError):
    """Frame size beyond the configured limit (e.g. a crafted 30000×30000 stream)."""

    code = "frame_too_large"


class NoFace(VideoError):
    code = "no_face"


class FaceOrientation(VideoError):
    """Faces were found only in frames turned sideways or upside down, and the turn could not be decided."""

    code = "face_orientation"


class TooFewFaceClips(VideoError):
    code = "too_few_face_clips"


class ModelError(DJLDMLError):
    """A model file or input batch is unusable."""

    code = "model_error"
