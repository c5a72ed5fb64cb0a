"""An in-memory stand-in for ``trainer.store.PreparedDataset`` (same interface), for fast trainer tests.

SYNTHETIC: each video is seeded noise plus a bright square whose size grows with the BDI label, so a small
network can learn something in a few steps. No face, no patient data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 112


@dataclass(frozen=True)
class FakeVideoRecord:
    video_id: str
    bdi: float
    split: str
    subject: str | None
    n_frames: int
    fps: float


class FakePreparedDataset:
    def __init__(self, n_train: int = 8, n_dev: int = 4, n_test: int = 4, n_frames: int = 24, seed: int = 0,
                 shared_subjects: bool = False, gaps: bool = True):
        rng = np.random.default_rng(seed)
        self.videos: list[FakeVideoRecord] = []
        for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
            for i in range(n):
                subject = f"s{i}" if shared_subjects else f"{split}-s{i}"
                bdi = float(rng.integers(0, 45))
                self.videos.append(FakeVideoRecord(f"{split}{i:02d}", bdi, split, subject, n_frames, 30.0))
        self._seed = seed
        # Frame 1 of odd videos has "no face": clip starts must avoid them, as in a real prepared dataset.
        self._gaps = gaps
        self.reads = 0

    def split(self, name: str) -> list[FakeVideoRecord]:
        return [v for v in self.videos if v.split == name]

    def _record(self, video_id: str) -> FakeVideoRecord:
        return next(v for v in self.videos if v.video_id == video_id)

    def _has_face(self, index: int, frame: int) -> bool:
        return not (self._gaps and index % 2 == 1 and frame == 1)

    def clip_starts(self, video_id: str, clip_length: int = 16, stride: int = 1) -> np.ndarray:
        index = self.videos.index(self._record(video_id))
        n = self._record(video_id).n_frames
        span = (clip_length - 1) * stride + 1
        ok = [s for s in range(n - span + 1)
              if all(self._has_face(index, s + k * stride) for k in range(clip_length))]
        return np.array(ok, dtype=np.int64)

    def read_clip(self, video_id: str, start: int, clip_length: int = 16, stride: int = 1) -> np.ndarray:
        if start not in set(self.clip_starts(video_id, clip_length, stride).tolist()):
            raise KeyError(f"no complete clip at {start}")
        self.reads += 1
        record = self._record(video_id)
        index = self.videos.index(record)
        base = np.random.default_rng([self._seed, index]).integers(0, 96, (SIZE, SIZE, 3), dtype=np.uint8)
        half = 8 + int(record.bdi)  # square side grows with the label
        frames = []
        for k in range(clip_length):
            f = base.copy()
            c = SIZE // 2 + (start + k * stride) % 5 - 2  # a little motion
            f[max(0, c - half) : c + half, max(0, c - half) : c + half] = 220
            frames.append(f)
        return np.stack(frames)
