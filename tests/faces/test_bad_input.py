"""What a clinic app might upload by mistake (or an attacker on purpose): each gives its typed error, quickly."""

import time

import pytest

from djldml.errors import NoFace, NotAVideo, TooFewFaceClips, VideoTooLarge, VideoTooLong, VideoTooShort
from djldml.faces import FaceConfig, extract_face_clips, iter_aligned_frames, probe
from tests.media import (
    carphone_path,
    face_video,
    make_audio_only,
    make_empty_file,
    make_huge_frame_video,
    make_one_frame_video,
    make_still_image,
    make_text_file,
    make_truncated_copy,
    noface_video,
)

QUICK_S = 5.0  # every refusal below takes milliseconds; this only guards against a hang on a loaded machine


def _fails(path, error, config=FaceConfig()):
    t = time.perf_counter()
    with pytest.raises(error) as info:
        extract_face_clips(path, config)
    assert time.perf_counter() - t < QUICK_S
    assert info.value.code == error.code
    assert str(path) not in info.value.message and str(path) not in repr(info.value.details)  # no file names
    return info.value


def test_empty_file(tmp_path):
    assert _fails(make_empty_file(tmp_path / "empty.mp4"), NotAVideo).details["reason"] == "empty"


def test_missing_file(tmp_path):
    _fails(tmp_path / "missing.mp4", NotAVideo)


def test_text_file(tmp_path):
    _fails(make_text_file(tmp_path / "notes.mp4"), NotAVideo)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_still_image(tmp_path, suffix):
    _fails(make_still_image(tmp_path / f"portrait.{suffix}"), NotAVideo)


@pytest.mark.parametrize("suffix", ["m4a", "wav"])
def test_audio_only(tmp_path, suffix):
    _fails(make_audio_only(tmp_path / f"voice.{suffix}"), NotAVideo)


def test_truncated_mp4(tmp_path):
    # The moov atom is at the end of an mp4 written in one pass: a cut upload has no index at all.
    _fails(make_truncated_copy(face_video(seconds=1.0, size=(320, 240)), tmp_path / "cut.mp4", 0.5), NotAVideo)


def test_truncated_mkv_keeps_what_is_readable(tmp_path):
    # Matroska is streamable: the first half still decodes, and the report says how much.
    path = make_truncated_copy(face_video(seconds=2.0, size=(320, 240), container="mkv"), tmp_path / "cut.mkv", 0.5)
    result = extract_face_clips(path, FaceConfig(max_clips=None))
    assert 0 < result.quality.frames_decoded < 60 and len(result) >= 1


def test_garbage_after_a_valid_header(tmp_path):
    data = bytearray(face_video(seconds=1.0, size=(320, 240), container="mkv").read_bytes())
    data[2000:] = bytes((i * 7919) % 251 for i in range(len(data) - 2000))
    path = tmp_path / "garbage.mkv"
    path.write_bytes(bytes(data))
    with pytest.raises((NotAVideo, VideoTooShort)):  # which one depends on where the demuxer loses track
        extract_face_clips(path)


def test_no_face():
    path = noface_video(seconds=1.0, size=(320, 240))
    error = _fails(path, NoFace)
    assert 0 < error.details["frames_decoded"] <= 30  # sampled mode stops once no window can succeed
    error = _fails(path, NoFace, FaceConfig(max_clips=None))
    assert error.details["frames_decoded"] == 30


def test_one_frame_video(tmp_path):
    _fails(make_one_frame_video(tmp_path / "one.mp4"), VideoTooShort)


def test_shorter_than_a_clip():
    _fails(carphone_path(), VideoTooShort, FaceConfig(clip_length=16, temporal_stride=8))  # span 121 > 120


def test_huge_frame_size(tmp_path):
    error = _fails(make_huge_frame_video(tmp_path / "huge.avi"), VideoTooLarge)
    assert (error.details["width"], error.details["height"]) == (8192, 4608)


def test_too_long():
    _fails(carphone_path(), VideoTooLong, FaceConfig(max_duration_s=2.0))


def test_too_few_face_clips():
    error = _fails(carphone_path(), TooFewFaceClips, FaceConfig(min_clips=8))
    assert error.details == {"clips": 7, "needed": 8}


def test_gaps_make_too_few_clips():
    path = face_video(seconds=2.0, size=(320, 240), gaps=[(0.3, 1.7)])
    _fails(path, TooFewFaceClips, FaceConfig(max_clips=None))


def test_deadline_stops_a_slow_video():
    _fails(carphone_path(), NotAVideo, FaceConfig(max_processing_s=0.0))


def test_streaming_api_raises_before_the_first_frame(tmp_path):
    with pytest.raises(NotAVideo):
        iter_aligned_frames(make_text_file(tmp_path / "x.mp4"))
    with pytest.raises(VideoTooShort):
        probe(make_one_frame_video(tmp_path / "one.mp4"), FaceConfig())
