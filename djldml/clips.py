"""Contract 2 — face clips: what the network sees.

``FaceClips.clips`` is ``uint8 [N, T, H, W, 3]`` RGB (default T=16, H=W=112), each frame a face
similarity-aligned to the fixed 5-landmark template of :mod:`djldml.faces`. Each clip has metadata (first and
last frame index in the source video, start time in seconds) and the whole carries a quality report.

``to_tensor`` is the one place where clips become the network's float input ``[N, 3, T, H, W]``; the trainer,
the in-process backend and the TorchServe handler all call it. ``clips_to_bytes`` / ``clips_from_bytes`` is the
wire format between the service and TorchServe (a .npy payload: self-describing, no pickle).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelError

if TYPE_CHECKING:  # torch is imported where it is used, so the gateway can parse clips without loading it
    import torch

CLIP_LENGTH = 16  # T: frames per clip (C3D)
FACE_SIZE = 112  # H = W of an aligned face
CLIP_SHAPE = (CLIP_LENGTH, FACE_SIZE, FACE_SIZE, 3)

# Pixel normalisation of to_tensor: uint8 [0, 255] → float [-1, 1]. Fixed here so that training and serving
# can never disagree on it.
PIXEL_SCALE = 127.5
PIXEL_OFFSET = 1.0

# Input dynamics (issue 10; docs/method.md "Input dynamics"): what of a clip the network sees, a model option the
# model card records (``inference.input_dynamics``) and every caller passes to ``to_tensor``.
#   "none"          the frames themselves (the paper's input);
#   "mean_removed"  each pixel minus its mean over the clip's T frames: what stays still (the face's identity,
#                   skin, lighting, background) is removed, what moves remains;
#   "temporal_diff" frame t minus frame t−1 (frame 0: zeros): only change between neighbouring frames.
INPUT_DYNAMICS = ("none", "mean_removed", "temporal_diff")


@dataclass(frozen=True)
class ClipMeta:
    first_frame: int  # index (in decoded order) of the clip's first frame
    last_frame: int  # index of its last frame (inclusive)
    start_time: float  # presentation time of the first frame, seconds


@dataclass
class QualityReport:
    frames_decoded: int = 0
    frames_with_face: int = 0
    clips_made: int = 0
    duration_s: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    rotation: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason → frames dropped for it
    # What the pipeline chose or corrected so that the clips mean the same whatever the capture, e.g.
    # {"frame_rate": {"from": 29.97, "to": 30.0}, "stream": {"index": 1, "chosen_by": "default"},
    #  "orientation": {"rotated_by": 180, "by": "detector"}, "display_flip": "horizontal", "deinterlaced": true,
    #  "color_range": "pc", "frames_after_decode_error": 12}. Keys are absent when nothing was done.
    corrections: dict[str, Any] = field(default_factory=dict)
    detector: dict[str, Any] = field(default_factory=dict)  # name and settings
    timings_s: dict[str, float] = field(default_factory=dict)  # stage → seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaceClips:
    clips: np.ndarray  # uint8 [N, T, H, W, 3]
    meta: list[ClipMeta]
    quality: QualityReport

    def __post_init__(self) -> None:
        validate_clips(self.clips)
        if len(self.meta) != len(self.clips):
            raise ValueError(f"{len(self.meta)} metadata entries for {len(self.clips)} clips")

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def start_times(self) -> np.ndarray:
        return np.array([m.start_time for m in self.meta], dtype=np.float64)


def validate_clips(clips: np.ndarray) -> None:
    """Raise ModelError unless ``clips`` is uint8 [N, T, H, W, 3] with N ≥ 0."""
    if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        shape = getattr(clips, "shape", None)
        dtype = getattr(clips, "dtype", None)
        raise ModelError(f"clips must be uint8 [N, T, H, W, 3], got {dtype} {shape}")


def to_tensor(clips: np.ndarray | torch.Tensor, device: torch.device | str | None = None,
              dynamics: str = "none") -> torch.Tensor:
    """uint8 ``[N, T, H, W, 3]`` → float32 ``[N, 3, T, H, W]`` in [-1, 1], on ``device``, then the model's
    ``dynamics`` (:data:`INPUT_DYNAMICS`, from its card; :func:`separate_dynamics`).

    The uint8 → device copy happens before the float conversion, so a GPU receives 4× fewer bytes.
    Raises ModelError on clips of another dtype/shape or an unknown ``dynamics``.
    """
    import torch

    if isinstance(clips, np.ndarray):
        validate_clips(clips)
        clips = torch.from_numpy(np.ascontiguousarray(clips))
    elif clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ModelError(f"clips must be uint8 [N, T, H, W, 3], got {clips.dtype} {tuple(clips.shape)}")
    x = clips.to(device, non_blocking=True) if device is not None else clips
    x = x.permute(0, 4, 1, 2, 3).float()
    x = x.div_(PIXEL_SCALE).sub_(PIXEL_OFFSET)
    return separate_dynamics(x, dynamics).contiguous()


def separate_dynamics(x: torch.Tensor, dynamics: str) -> torch.Tensor:
    """float ``[N, C, T, H, W]`` → the same shape with the static part removed per :data:`INPUT_DYNAMICS`.

    ``mean_removed``: x − mean over T (per clip, channel and pixel); ``temporal_diff``: x[t] − x[t−1], zeros at
    t = 0 (T is kept, so the network's layout does not change). Both are linear in the pixels, so they commute
    with a mirror flip and with any per-channel affine normalisation. Raises ModelError on an unknown mode.
    """
    import torch

    if dynamics == "none":
        return x
    if dynamics == "mean_removed":
        return x - x.mean(dim=2, keepdim=True)
    if dynamics == "temporal_diff":
        d = x.diff(dim=2)
        return torch.cat([d.new_zeros(d[:, :, :1].shape), d], dim=2)
    raise ModelError(f"unknown input dynamics {dynamics!r}; one of {INPUT_DYNAMICS}")


def clips_to_bytes(clips: np.ndarray) -> bytes:
    """Serialise clips as a .npy payload (the body the service sends to TorchServe)."""
    validate_clips(clips)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(clips), allow_pickle=False)
    return buf.getvalue()


def clips_from_bytes(payload: bytes | bytearray, max_clips: int = 4096) -> np.ndarray:
    """Parse a .npy payload written by :func:`clips_to_bytes`; ModelError on anything else."""
    try:
        arr = np.load(io.BytesIO(bytes(payload)), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/EOFError/OSError on junk
        raise ModelError(f"body is not a .npy clip array: {exc.__class__.__name__}") from None
    validate_clips(arr)
    if len(arr) > max_clips:
        raise ModelError(f"{len(arr)} clips in one request, at most {max_clips}")
    return arr
