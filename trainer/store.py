"""The prepared dataset: aligned faces of every video, stored compactly, read back as clips at random.

``trainer prepare`` runs the face pipeline once per video and writes, under one root::

    manifest.csv          video_id,bdi,split,subject,n_frames,n_faces,fps,file   (one row per usable video)
    dataset.json          what the data is (source, synthetic or not, face settings, codec) — see prepare.py
    faces/<video_id>.djf  one face file per video (below)

The face files' format, and why it is one: trainer/face_file.py. One :class:`PreparedDataset` is safe to share
with several DataLoader workers (the face files are read with ``os.pread`` and re-opened after a fork).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from djldml.atomic import atomic_path
from djldml.clips import CLIP_LENGTH

from .face_file import FACE_SUFFIX, FaceFile, StoreError
from .manifest import shared_subjects

MANIFEST_CSV = "manifest.csv"  # the prepared dataset's video list (not a .mar's MAR-INF/MANIFEST.json)
INFO = "dataset.json"
FACES_DIR = "faces"
MANIFEST_FIELDS = ("video_id", "bdi", "split", "subject", "n_frames", "n_faces", "fps", "file")
SPLITS = ("train", "dev", "test")


def valid_clip_starts(valid: np.ndarray, clip_length: int = CLIP_LENGTH, stride: int = 1) -> np.ndarray:
    """Start indices s such that frames s, s+stride, …, s+(T−1)·stride all have a face."""
    span = (clip_length - 1) * stride + 1
    n = len(valid) - span + 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    for k in range(clip_length):
        ok &= valid[k * stride : k * stride + n]
    return np.flatnonzero(ok)


@dataclass(frozen=True)
class VideoRecord:
    video_id: str
    bdi: float
    split: str  # "train" | "dev" | "test"
    subject: str | None
    n_frames: int
    fps: float
    n_faces: int = 0
    file: str = ""  # face file, relative to the dataset root


class PreparedDataset:
    """A prepared dataset (``manifest.csv`` + face files) opened for reading.

    ``info`` is ``dataset.json`` (``info["synthetic"]`` is True for synthetic data: carry it into model metadata).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        manifest = self.root / MANIFEST_CSV
        if not manifest.is_file():
            raise StoreError(f"no {MANIFEST_CSV} in the prepared dataset root")
        self.videos: list[VideoRecord] = read_manifest(manifest)
        info_path = self.root / INFO
        self.info: dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {}
        self._by_id = {v.video_id: v for v in self.videos}
        self._files: dict[str, FaceFile] = {}
        # Subjects found in more than one split (AVEC2013 has them): evaluate warns when this is not empty.
        self.shared_subjects: dict[str, list[str]] = shared_subjects(self.videos)

    @property
    def synthetic(self) -> bool:
        return bool(self.info.get("synthetic", False))

    def split(self, name: str) -> list[VideoRecord]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return [v for v in self.videos if v.split == name]

    def record(self, video_id: str) -> VideoRecord:
        return self._by_id[video_id]

    def face_file(self, video_id: str) -> FaceFile:
        f = self._files.get(video_id)
        if f is None:
            rec = self._by_id[video_id]
            f = self._files[video_id] = FaceFile(self.root / (rec.file or face_file_name(video_id)))
        return f

    def frame_times(self, video_id: str) -> np.ndarray:
        return self.face_file(video_id).frame_time

    def clip_starts(self, video_id: str, clip_length: int = CLIP_LENGTH, stride: int = 1) -> np.ndarray:
        """Start frame indices where ``clip_length`` frames ``stride`` apart all have a face."""
        return valid_clip_starts(self.face_file(video_id).valid, clip_length, stride)

    def read_clip(self, video_id: str, start: int, clip_length: int = CLIP_LENGTH, stride: int = 1) -> np.ndarray:
        """uint8 [T, 112, 112, 3] RGB: the faces of frames start, start+stride, …; ValueError if one has none."""
        f = self.face_file(video_id)
        idx = int(start) + stride * np.arange(clip_length)
        if start < 0 or idx[-1] >= f.n_frames:
            raise ValueError(f"clip [{start}, {idx[-1]}] outside the video's {f.n_frames} frames")
        slots = f.frame_slot[idx]
        if (slots < 0).any():
            raise ValueError("clip includes frames without a face; use clip_starts()")
        return f.read_slots(slots)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __getstate__(self) -> dict:  # pickled into spawned DataLoader workers: send paths, not descriptors
        state = self.__dict__.copy()
        state["_files"] = {}
        return state


def open_store(root: str | os.PathLike) -> PreparedDataset:
    """The prepared dataset at ``root`` (what ``trainer prepare`` wrote), as the trainer's ClipStore."""
    return PreparedDataset(root)


def face_file_name(video_id: str) -> str:
    return f"{FACES_DIR}/{video_id}{FACE_SUFFIX}"


# --- manifest.csv ----------------------------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike) -> list[VideoRecord]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        out.append(VideoRecord(
            video_id=row["video_id"], bdi=float(row["bdi"]), split=row["split"], subject=row.get("subject") or None,
            n_frames=int(row["n_frames"]), fps=float(row["fps"]), n_faces=int(row.get("n_faces") or 0),
            file=row.get("file") or face_file_name(row["video_id"]),
        ))
    return out


def write_manifest(path: str | os.PathLike, records: list[VideoRecord]) -> None:
    """Write ``manifest.csv`` atomically (sorted by split then id, so re-runs give identical files)."""
    path = Path(path)
    order = {s: i for i, s in enumerate(SPLITS)}
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_FIELDS)
        for r in sorted(records, key=lambda r: (order.get(r.split, 9), r.video_id)):
            w.writerow([r.video_id, f"{r.bdi:g}", r.split, r.subject or "", r.n_frames, r.n_faces,
                        f"{r.fps:.6g}", r.file])
