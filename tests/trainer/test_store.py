"""The prepared-dataset storage: faces written per video come back as the same clips, from any start, in any
process; writes are atomic; damaged files are refused."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import trainer.face_file as face_file_module
from tests.media import astronaut
from trainer.face_file import FaceFile, FaceFileWriter, StoreError
from trainer.store import (
    PreparedDataset,
    VideoRecord,
    face_file_name,
    read_manifest,
    valid_clip_starts,
    write_manifest,
)

N_FRAMES = 90
NO_FACE = set(range(30, 34)) | {60}  # frames without a face: clips must not span them


def face_frames(n: int = N_FRAMES) -> list[np.ndarray]:
    """A real face moving a little, as an aligned-face sequence would (112×112 RGB)."""
    portrait = astronaut()
    out = []
    for i in range(n):
        dx, dy = 6 * np.sin(i / 7), 4 * np.cos(i / 5)
        m = np.float32([[0.5, 0, -90 + dx], [0, 0.5, -25 + dy]])
        out.append(cv2.warpAffine(portrait, m, (112, 112), flags=cv2.INTER_LINEAR))
    return out


def write_file(path, codec: str = "h264") -> list[np.ndarray]:
    frames = face_frames()
    with FaceFileWriter(path, fps=25.0, codec=codec) as w:
        for i, f in enumerate(frames):
            w.add(i / 25.0, None if i in NO_FACE else f)
        w.close({"note": "test"})
    return frames


@pytest.mark.parametrize("codec", ["h264", "jpeg"])
def test_round_trip_every_frame(tmp_path, codec):
    path = tmp_path / "v.djf"
    frames = write_file(path, codec)
    f = FaceFile(path)
    assert (f.n_frames, f.n_faces) == (N_FRAMES, N_FRAMES - len(NO_FACE))
    assert f.meta["codec"] == codec and f.meta["note"] == "test" and f.meta["fps"] == 25.0
    np.testing.assert_allclose(f.frame_time, np.arange(N_FRAMES) / 25.0)
    assert [i for i in range(N_FRAMES) if not f.valid[i]] == sorted(NO_FACE)
    got = f.read_slots(np.arange(f.n_faces))
    want = np.stack([fr for i, fr in enumerate(frames) if i not in NO_FACE])
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert cv2.PSNR(got, want) > 30  # lossy, but close


def test_fast_rgb_conversion_matches_swscale(tmp_path, monkeypatch):
    """Faces are converted to RGB by OpenCV (≈4× faster than PyAV's swscale path, docs/training.md); the two
    conversions differ only in chroma upsampling: ≈1 grey level, no worse against the faces written."""
    path = tmp_path / "v.djf"
    frames = write_file(path, "h264")
    want = np.stack([fr for i, fr in enumerate(frames) if i not in NO_FACE])
    fast = FaceFile(path).read_slots(np.arange(N_FRAMES - len(NO_FACE)))
    monkeypatch.setattr(face_file_module, "_rgb", lambda frame: frame.to_ndarray(format="rgb24"))
    reference = FaceFile(path).read_slots(np.arange(N_FRAMES - len(NO_FACE)))
    diff = np.abs(fast.astype(int) - reference)
    assert diff.mean() < 2 and np.percentile(diff, 99) <= 3
    assert cv2.PSNR(fast, want) > cv2.PSNR(reference, want) - 0.5


def test_clip_starts_match_brute_force():
    rng = np.random.default_rng(0)
    valid = rng.random(200) > 0.03
    for t, stride in [(16, 1), (16, 2), (4, 3), (1, 1)]:
        span = (t - 1) * stride
        brute = [s for s in range(200 - span) if all(valid[s + k * stride] for k in range(t))]
        assert valid_clip_starts(valid, t, stride).tolist() == brute
    assert len(valid_clip_starts(np.ones(10, bool), 16)) == 0  # shorter than a clip


def make_dataset(root, codec: str = "h264") -> list[np.ndarray]:
    frames = write_file(root / face_file_name("vid_a"), codec)
    write_file(root / face_file_name("vid_b"), codec)
    write_manifest(root / "manifest.csv", [
        VideoRecord("vid_a", 12.0, "train", "s1", N_FRAMES, 25.0, N_FRAMES - len(NO_FACE), face_file_name("vid_a")),
        VideoRecord("vid_b", 30.5, "test", None, N_FRAMES, 25.0, N_FRAMES - len(NO_FACE), face_file_name("vid_b")),
    ])
    return frames


def test_random_clips_equal_the_written_faces(tmp_path):
    frames = make_dataset(tmp_path)
    ds = PreparedDataset(tmp_path)
    assert [v.video_id for v in ds.split("train")] == ["vid_a"] and ds.split("test")[0].bdi == 30.5
    assert ds.split("test")[0].subject is None and ds.split("dev") == []
    for stride in (1, 2):
        starts = ds.clip_starts("vid_a", 16, stride)
        assert len(starts) and all(not ({s + k * stride for k in range(16)} & NO_FACE) for s in starts)
        for s in np.random.default_rng(stride).choice(starts, 12):  # any start, mid-group ones included
            clip = ds.read_clip("vid_a", int(s), 16, stride)
            want = np.stack([frames[s + k * stride] for k in range(16)])
            assert clip.shape == (16, 112, 112, 3) and clip.dtype == np.uint8
            assert cv2.PSNR(clip, want) > 30, s


def test_read_clip_refuses_frames_without_face(tmp_path):
    make_dataset(tmp_path)
    ds = PreparedDataset(tmp_path)
    with pytest.raises(ValueError):
        ds.read_clip("vid_a", 20)  # spans frames 30..33
    with pytest.raises(ValueError):
        ds.read_clip("vid_a", N_FRAMES - 10)  # past the end


def test_interrupted_write_leaves_nothing(tmp_path):
    path = tmp_path / "faces" / "v.djf"
    with pytest.raises(RuntimeError), FaceFileWriter(path, fps=25.0) as w:
        w.add(0.0, face_frames(1)[0])
        raise RuntimeError("killed")
    assert not path.exists() and list(path.parent.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_file_is_refused(tmp_path, damage):
    path = tmp_path / "v.djf"
    write_file(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"x" * 100)
    with pytest.raises(StoreError):
        FaceFile(path)


def test_wrong_face_shape_is_refused(tmp_path):
    w = FaceFileWriter(tmp_path / "v.djf", fps=25.0)
    with pytest.raises(ValueError):
        w.add(0.0, np.zeros((100, 100, 3), np.uint8))
    w.abort()


def test_manifest_round_trip(tmp_path):
    recs = [VideoRecord("b", 3.0, "test", "x", 10, 30.0, 9, "faces/b.djf"),
            VideoRecord("a", 41.5, "train", None, 20, 29.97, 20, "faces/a.djf")]
    write_manifest(tmp_path / "m.csv", recs)
    assert read_manifest(tmp_path / "m.csv") == [recs[1], recs[0]]  # sorted by split, then id


class _Clips(Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return 6

    def __getitem__(self, i):
        s = int(self.ds.clip_starts("vid_b")[i * 5])
        return torch.from_numpy(self.ds.read_clip("vid_b", s))


def test_safe_in_dataloader_workers(tmp_path):
    make_dataset(tmp_path)
    ds = PreparedDataset(tmp_path)
    ds.read_clip("vid_b", 0)  # the parent opened the file before forking
    expected = torch.stack([_Clips(ds)[i] for i in range(6)])
    loader = DataLoader(_Clips(ds), batch_size=2, num_workers=2, multiprocessing_context="fork")
    assert torch.equal(torch.cat(list(loader)), expected)
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned worker receives: paths, no descriptors
    assert clone._files == {} and np.array_equal(clone.read_clip("vid_b", 0), ds.read_clip("vid_b", 0))


def test_missing_manifest(tmp_path):
    with pytest.raises(StoreError):
        PreparedDataset(tmp_path)


def test_read_speed_benchmark_reads_real_clips(tmp_path, capsys):
    from bench.bench_store import main, read_speed

    make_dataset(tmp_path)
    assert read_speed(PreparedDataset(tmp_path), n_clips=5) > 0
    assert main([str(tmp_path), "--clips", "3"]) == 0
    assert "clips/s" in capsys.readouterr().out
    with pytest.raises(StoreError, match="no complete clip"):
        read_speed(PreparedDataset(tmp_path), clip_length=N_FRAMES + 1)
