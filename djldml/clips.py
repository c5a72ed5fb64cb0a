"""Contract 2 — face clips: what the network sees.

``FaceClips.clips`` is ``uint8 [N, T, H, W, 3]`` RGB (default T=16, H=W=112), each frame a face
similarity-aligned to the fixed 5-landmark template of :mod:`djldml.faces`. Each clip has metadata (first and
last frame index in the source video, start time in seconds) and the whole carries a quality report.

``to_tensor`` is the one place where clips become the network's float input ``[N, 3, T, H, W]``; the trainer,
the in-process backend and the TorchServe handler all call it. Its pixel normalisation is part of this contract:
by default uint8 → [-1, 1]; a model whose card records ``inference.input_normalisation`` (an
:class:`InputNormalisation`, e.g. the 0–255 RGB input of Sports-1M C3D weights) gets that one instead, read by
:func:`input_normalisation` wherever the card is read. ``clips_to_bytes`` / ``clips_from_bytes`` is the
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

_RANGE_SCALE = {"0-255": 1.0, "0-1": 1.0 / 255.0}  # range name → factor on the uint8 value
_CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class InputNormalisation:
    """A model's own pixel normalisation, recorded in its card: ``x_c = (v_c · scale − mean_c) / std_c``.

    ``v_c`` is the uint8 value of channel c after reordering the clip's RGB channels to ``channel_order``;
    ``scale`` is 1 for ``range="0-255"`` and 1/255 for ``"0-1"``; ``mean`` and ``std`` are per channel, in
    ``channel_order``, in the units of ``range``. The port of Sports-1M C3D (DavideA/c3d-pytorch, predict.py)
    feeds float RGB frames 0–255 with no mean subtraction: :data:`SPORTS1M_C3D`.
    """

    range: str = "0-255"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        if self.range not in _RANGE_SCALE:
            raise ModelError(f"input normalisation: range must be one of {sorted(_RANGE_SCALE)}, got {self.range!r}")
        if self.channel_order not in _CHANNEL_ORDERS:
            raise ModelError(f"input normalisation: channel_order must be RGB or BGR, got {self.channel_order!r}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if (not isinstance(v, (list, tuple)) or len(v) != 3  # noqa: UP038 (3.9-safe: packed into the .mar)
                    or not all(isinstance(x, (int, float)) and np.isfinite(x) for x in v)):  # noqa: UP038
                raise ModelError(f"input normalisation: {name} must be three finite numbers, got {v!r}")
            object.__setattr__(self, name, tuple(float(x) for x in v))
        if min(self.std) <= 0:
            raise ModelError("input normalisation: std must be positive")

    def to_dict(self) -> dict[str, Any]:
        return {"range": self.range, "mean": list(self.mean), "std": list(self.std),
                "channel_order": self.channel_order}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputNormalisation:
        """ModelError unless ``d`` has exactly the four keys of :meth:`to_dict` with valid values."""
        if not isinstance(d, dict) or set(d) != {"range", "mean", "std", "channel_order"}:
            raise ModelError("input normalisation must have exactly: range, mean, std, channel_order")
        return cls(d["range"], d["mean"], d["std"], d["channel_order"])


#: What Sports-1M C3D weights in the PyTorch port's layout expect (``djldml.network.load_pretrained_backbone``).
SPORTS1M_C3D = InputNormalisation(range="0-255", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="RGB")

#: Names a training config may use (``input_normalisation = "..."``); "default" is the [-1, 1] of to_tensor.
NORMALISATIONS: dict[str, InputNormalisation | None] = {"default": None, "sports1m-c3d": SPORTS1M_C3D}


def input_normalisation(card_inference: dict[str, Any] | None) -> InputNormalisation | None:
    """The normalisation a model card's ``inference`` section records (absent: None, i.e. the default [-1, 1]).
    ModelError when the record is malformed."""
    record = (card_inference or {}).get("input_normalisation")
    return None if record is None else InputNormalisation.from_dict(record)

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


def validate_model_clips(clips: np.ndarray) -> None:
    """Raise ModelError unless ``clips`` is what a model takes: uint8 ``[N, *CLIP_SHAPE]`` (N ≥ 0)."""
    validate_clips(clips)
    if clips.shape[1:] != CLIP_SHAPE:
        raise ModelError(f"clips must be [N, {', '.join(map(str, CLIP_SHAPE))}], got {list(clips.shape)}")


def to_tensor(clips: np.ndarray | torch.Tensor, device: torch.device | str | None = None,
              normalisation: InputNormalisation | None = None, dynamics: str = "none") -> torch.Tensor:
    """uint8 ``[N, T, H, W, 3]`` (RGB) → float32 ``[N, 3, T, H, W]`` on ``device``: the pixel normalisation,
    then the model's ``dynamics`` (:data:`INPUT_DYNAMICS`, from its card; :func:`separate_dynamics`), two
    separate steps.

    ``normalisation``: the model card's (:func:`input_normalisation`); None gives the default [-1, 1]
    (v / 127.5 − 1), what every card without the record was trained with. The uint8 → device copy happens
    before the float conversion, so a GPU receives 4× fewer bytes. ModelError on a wrong dtype or shape, or
    an unknown ``dynamics``.
    """
    import torch

    if isinstance(clips, np.ndarray):
        validate_clips(clips)
        clips = torch.from_numpy(np.ascontiguousarray(clips))
    elif clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ModelError(f"clips must be uint8 [N, T, H, W, 3], got {clips.dtype} {tuple(clips.shape)}")
    x = clips.to(device, non_blocking=True) if device is not None else clips
    # One pass for the layout change and the float conversion, into the contiguous [N, 3, T, H, W] the networks
    # take; the in-place steps below then run on contiguous memory (≈17 % less time than converting the permuted
    # view and copying it at the end, for the same values bit for bit).
    x = torch.empty((x.shape[0], 3, *x.shape[1:4]), dtype=torch.float32, device=x.device).copy_(
        x.permute(0, 4, 1, 2, 3))
    x = x.div_(PIXEL_SCALE).sub_(PIXEL_OFFSET) if normalisation is None else _normalise(x, normalisation)
    return separate_dynamics(x, dynamics).contiguous()


def _normalise(x: torch.Tensor, n: InputNormalisation) -> torch.Tensor:
    """The card's normalisation on float ``[N, 3, T, H, W]`` RGB pixel values 0–255 (a step of its own: other
    input steps of to_tensor come before or after it, never inside)."""
    import torch

    if n.channel_order == "BGR":
        x = x.flip(1)
    scale = _RANGE_SCALE[n.range]
    if scale != 1.0:
        x = x.mul_(scale)
    mean = torch.tensor(n.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(n.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    return x.sub_(mean).div_(std)


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
