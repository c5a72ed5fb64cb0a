"""The face-clips contract: to_tensor layout and scaling, and the .npy wire format."""

import numpy as np
import pytest
import torch

from djldml.clips import (
    CLIP_SHAPE,
    ClipMeta,
    FaceClips,
    QualityReport,
    clips_from_bytes,
    clips_to_bytes,
    to_tensor,
)
from djldml.errors import ModelError


def _clips(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *CLIP_SHAPE), dtype=np.uint8)


def test_to_tensor_layout_and_range():
    clips = _clips()
    x = to_tensor(clips)
    assert x.shape == (2, 3, 16, 112, 112) and x.dtype == torch.float32
    # channel c of frame t at (h, w) comes from clips[n, t, h, w, c], scaled from [0, 255] to [-1, 1]
    assert x[1, 2, 5, 7, 9].item() == pytest.approx(clips[1, 5, 7, 9, 2] / 127.5 - 1.0)
    assert to_tensor(np.zeros((1, *CLIP_SHAPE), np.uint8)).min().item() == -1.0
    assert to_tensor(np.full((1, *CLIP_SHAPE), 255, np.uint8)).max().item() == 1.0


def test_to_tensor_accepts_uint8_tensor_and_rejects_other_dtypes():
    clips = _clips(1)
    assert torch.equal(to_tensor(torch.from_numpy(clips)), to_tensor(clips))
    with pytest.raises(ModelError):
        to_tensor(clips.astype(np.float32))
    with pytest.raises(ModelError):
        to_tensor(clips[0])


def test_wire_format_round_trip_and_rejects_junk():
    clips = _clips(3)
    assert np.array_equal(clips_from_bytes(clips_to_bytes(clips)), clips)
    for junk in (b"", b"not numpy", clips_to_bytes(clips)[:100]):
        with pytest.raises(ModelError):
            clips_from_bytes(junk)
    buf = clips_to_bytes(clips)
    with pytest.raises(ModelError, match="at most"):
        clips_from_bytes(buf, max_clips=2)


def test_face_clips_checks_metadata_count():
    meta = [ClipMeta(0, 15, 0.0)]
    with pytest.raises(ValueError):
        FaceClips(_clips(2), meta, QualityReport())
    fc = FaceClips(_clips(1), meta, QualityReport())
    assert len(fc) == 1 and fc.start_times.tolist() == [0.0]
