"""Training data: random clips per video per epoch, augmented, deterministic given the seed.

Every epoch draws ``clips_per_video`` random clip starts from each training video (a random start is the
temporal jitter), keeps ``clips_per_group`` clips of one video next to each other so that a batch always holds
pairs with equal labels (the metric-learning loss needs them), shuffles the groups and cuts batches.

What to read, and how to augment it, is decided by the sampler from ``(seed, epoch)`` alone: a batch is a list
of keys ``(video index, start, augmentation seed)``. So the data stream does not depend on the number of
DataLoader workers, is identical after a resume, and — like ``DistributedSampler`` — every DDP rank computes
the same epoch plan and takes its own share of the batches (``rank``, ``world_size``, ``set_epoch``).

The dataset depends only on the prepared-dataset interface (``split``, ``clip_starts``, ``read_clip`` and
records with ``video_id`` and ``bdi``), so tests can pass an in-memory fake.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class VideoRecordLike(Protocol):
    video_id: str
    bdi: float


class ClipStore(Protocol):
    """What the trainer needs from ``trainer.store.PreparedDataset``."""

    videos: list

    def split(self, name: str) -> list: ...

    def clip_starts(self, video_id: str, clip_length: int = 16, stride: int = 1) -> np.ndarray: ...

    def read_clip(self, video_id: str, start: int, clip_length: int = 16, stride: int = 1) -> np.ndarray: ...


ClipKey = tuple[int, int, int]  # (index into the video list, start frame, augmentation seed)


@dataclass(frozen=True)
class Augmentation:
    hflip: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    crop_scale: float = 0.9
    blur: float = 0.0  # max σ (pixels) of a Gaussian blur, drawn per axis: cameras, encoders and deinterlacing
    #                    differ in sharpness (a deinterlaced frame is blurred vertically only)
    capture_rate_min: float = 1.0  # lowest simulated capture rate as a fraction of the clip timeline's (1 = off)

    @classmethod
    def from_config(cls, cfg: Any) -> Augmentation:
        return cls(cfg.hflip, cfg.brightness, cfg.contrast, cfg.crop_scale, cfg.blur, cfg.capture_rate_min)


def capture_offsets(clip_length: int, rate: float, phase: float) -> np.ndarray:
    """Frame offsets int [clip_length] that re-time a clip as if a camera had captured it at ``rate`` × the
    timeline's frame rate (0 < rate ≤ 1) and the service had resampled it to the timeline
    (djldml.faces.timeline): camera frame k is taken at (k + phase) / rate timeline frames, and timeline frame
    j shows the nearest camera frame — so frames repeat as in a 15 fps phone video on a 30 fps timeline."""
    j = np.arange(clip_length)
    k = np.ceil(j * rate - phase - 0.5)  # the nearest camera frame to timeline frame j (ties: the earlier)
    return np.clip(np.round((k + phase) / rate), 0, clip_length - 1).astype(int)


def augment_clip(clip: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """One random transform applied to every frame of a uint8 ``[T, H, W, 3]`` clip; returns uint8.

    The random numbers are drawn in a fixed order whatever the settings, so a key always means one transform.
    """
    t, h, w, c = clip.shape
    # later draws were added after the first six: they leave the earlier ones (and so old keys' transforms) be
    side_frac, y_frac, x_frac, flip, gain, offset, sharp_x, sharp_y, retime, rate_frac, phase = rng.random(11)
    # Crop a square of side ∈ [crop_scale, 1]·min(h, w) at a random place and resize back: scale + translation.
    side = round(min(h, w) * (aug.crop_scale + (1 - aug.crop_scale) * side_frac))
    if side < min(h, w):
        y0, x0 = int(y_frac * (h - side + 1)), int(x_frac * (w - side + 1))
        crop = clip[:, y0 : y0 + side, x0 : x0 + side].transpose(1, 2, 0, 3).reshape(side, side, t * c)
        # cv2 resizes up to 512 channels at once: the T frames travel as 3T channels of one image.
        clip = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, t, c).transpose(2, 0, 1, 3)
    if flip < aug.hflip:
        clip = clip[:, :, ::-1]
    sigma_x, sigma_y = aug.blur * sharp_x, aug.blur * sharp_y
    if max(sigma_x, sigma_y) > 0.1:  # below, the kernel is the identity on uint8
        stacked = np.ascontiguousarray(clip.transpose(1, 2, 0, 3)).reshape(h, w, t * c)
        blurred = cv2.GaussianBlur(stacked, (0, 0), sigmaX=max(sigma_x, 1e-3), sigmaY=max(sigma_y, 1e-3))
        clip = blurred.reshape(h, w, t, c).transpose(2, 0, 1, 3)
    if aug.capture_rate_min < 1.0 and retime < 0.5:
        rate = aug.capture_rate_min + (1.0 - aug.capture_rate_min) * rate_frac
        clip = clip[capture_offsets(t, rate, phase)]
    if aug.brightness or aug.contrast:
        x = clip.astype(np.float32)
        mean = x.mean()
        x = (x - mean) * (1 + aug.contrast * (2 * gain - 1)) + mean + aug.brightness * 255 * (2 * offset - 1)
        clip = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(clip)


def evenly_spaced(starts: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` of ``starts`` spread evenly from the first to the last (the evaluation's clip choice)."""
    starts = np.asarray(starts)
    if len(starts) <= k:
        return starts
    return starts[np.linspace(0, len(starts) - 1, k).round().astype(int)]


class ClipDataset(Dataset):
    """Map-style dataset indexed by :data:`ClipKey`: returns (uint8 clip ``[T, H, W, 3]`` tensor, BDI float32)."""

    def __init__(self, store: ClipStore, videos: Sequence[VideoRecordLike], clip_length: int = 16,
                 stride: int = 1, augmentation: Augmentation | None = None):
        self.store, self.videos = store, list(videos)
        self.clip_length, self.stride, self.augmentation = clip_length, stride, augmentation

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key: ClipKey) -> tuple[torch.Tensor, torch.Tensor]:
        index, start, aug_seed = key
        video = self.videos[index]
        clip = self.store.read_clip(video.video_id, int(start), self.clip_length, self.stride)
        if self.augmentation is not None:
            clip = augment_clip(clip, np.random.default_rng(aug_seed), self.augmentation)
        return torch.from_numpy(np.ascontiguousarray(clip)), torch.tensor(float(video.bdi), dtype=torch.float32)


class EpochClipSampler(Sampler[list[ClipKey]]):
    """Batch sampler yielding lists of :data:`ClipKey`; the epoch plan is a pure function of (seed, epoch).

    Incomplete last batches are dropped (batch norm and DDP want equal batches); with ``world_size`` > 1 the
    batches are dealt round-robin and trimmed so every rank runs the same number of steps.
    """

    def __init__(self, store: ClipStore, videos: Sequence[VideoRecordLike], batch_size: int, clips_per_video: int,
                 clips_per_group: int = 2, clip_length: int = 16, stride: int = 1, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.batch_size, self.clips_per_video = batch_size, clips_per_video
        self.clips_per_group = max(1, min(clips_per_group, clips_per_video))
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.starts = [np.asarray(store.clip_starts(v.video_id, clip_length, stride)) for v in videos]
        empty = sum(len(s) == 0 for s in self.starts)
        if empty:
            warnings.warn(f"{empty} training video(s) have no complete clip and are skipped", stacklevel=2)
        if empty == len(self.starts):
            raise ValueError("no training video has a complete clip")
        if len(self) == 0:
            raise ValueError(f"an epoch has fewer clips than one batch of {batch_size} per process")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_plan(self, epoch: int) -> list[list[ClipKey]]:
        """All batches of ``epoch`` for all ranks, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        groups: list[list[ClipKey]] = []
        for index, starts in enumerate(self.starts):
            if len(starts) == 0:
                continue
            chosen = rng.choice(starts, self.clips_per_video, replace=len(starts) < self.clips_per_video)
            seeds = rng.integers(0, 2**63 - 1, self.clips_per_video)
            keys = [(index, int(s), int(a)) for s, a in zip(chosen, seeds, strict=True)]
            groups += [keys[i : i + self.clips_per_group] for i in range(0, len(keys), self.clips_per_group)]
        flat = [key for g in rng.permutation(len(groups)) for key in groups[g]]
        n_batches = len(flat) // self.batch_size
        return [flat[b * self.batch_size : (b + 1) * self.batch_size] for b in range(n_batches)]

    def __iter__(self) -> Iterator[list[ClipKey]]:
        batches = self.epoch_plan(self.epoch)
        per_rank = len(batches) // self.world_size
        yield from batches[self.rank : per_rank * self.world_size : self.world_size]

    def __len__(self) -> int:
        n_clips = sum(len(s) > 0 for s in self.starts) * self.clips_per_video
        return (n_clips // self.batch_size) // self.world_size
