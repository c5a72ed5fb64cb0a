"""Decoding only what the sampled clips need: the frame table, GOP skipping, and region-only colour conversion.

Each shortcut is checked against the plain path it replaces: the same frame index must carry the same pixels,
and a face aligned from a converted region must equal the face aligned from the whole converted frame.
"""

import hashlib

import av
import numpy as np
import pytest

from djldml.faces import FaceConfig, extract_face_clips, extract_face_clips_with_landmarks, probe
from djldml.faces import pipeline as pipeline_module
from djldml.faces.align import (
    alignment_matrices,
    alignment_matrix,
    shifted,
    similarities,
    similarity,
    source_region,
    template,
    warp,
)
from djldml.faces.decode import Deadline, FrameConverter, SkipPlan, decode_frames, stored_to_display
from djldml.faces.timeline import clip_segments
from tests.media import face_scene, face_video

from .test_pipeline import _check_sampled

GOP = 30
SKIP_VIDEOS = {
    "h264 B-frames closed GOP": dict(codec="h264-high", gop=GOP),
    "h264 B-frames open GOP": dict(codec="h264-high", gop=GOP, open_gop=True),
    "h264 no B-frames": dict(codec="h264", gop=GOP),
    "vp9 webm": dict(codec="vp9", container="webm", gop=GOP),
    "h264 mkv": dict(codec="h264-high", gop=GOP, container="mkv"),
    "hevc open GOP (x265 CRA)": dict(codec="hevc", gop=GOP),
    "av1 mkv": dict(codec="av1", container="mkv", gop=GOP),
}


def _digest(frame: av.VideoFrame) -> str:
    return hashlib.sha1(frame.to_ndarray(format="yuv420p").tobytes()).hexdigest()


def _sequential(path, config):
    return {df.index: _digest(df.frame) for df in decode_frames(path, config, Deadline(60))}


def test_probe_builds_the_frame_table():
    path = face_video(seconds=3.0, size=(320, 240), codec="h264-high", gop=GOP)
    table = probe(path, FaceConfig()).table
    assert table is not None and len(table.pts) == 90
    assert np.all(np.diff(table.pts) > 0)
    keys = [table.index_of(int(k)) for k in table.key_pts]
    assert keys == [0, 30, 60]
    assert table.keyframe_for(45) == table.pts[30] and table.keyframe_for(30) == table.pts[30]
    assert table.next_keyframe(31) == 60 and table.next_keyframe(30) == 30 and table.next_keyframe(61) is None
    assert table.index_of(int(table.pts[7])) == 7 and table.index_of(int(table.pts[7]) + 1) is None


@pytest.mark.parametrize("kind", list(SKIP_VIDEOS))
def test_skipped_decoding_gives_the_same_frames(kind):
    kwargs = dict(seconds=4.0, size=(320, 240), **SKIP_VIDEOS[kind])
    path = face_video(**kwargs)
    config = FaceConfig()
    info = probe(path, config)
    truth = _sequential(path, config)
    assert sorted(truth) == list(range(info.n_frames))

    wanted = [5, 47, 50, 95, 101]  # some in the GOP being decoded, some in later GOPs
    plan = SkipPlan()
    plan.next_needed = wanted[0]
    got: dict[int, str] = {}
    pending = list(wanted)
    for df in decode_frames(path, config, Deadline(60), info.table, plan):
        assert df.index not in got, "a frame came twice"
        got[df.index] = _digest(df.frame)
        while pending and df.index >= pending[0]:
            pending.pop(0)
        if pending:
            plan.next_needed = pending[0]
        else:
            break
    assert not pending
    for i in wanted:
        assert got.get(i) == truth[i], f"frame {i} differs from sequential decoding"
    assert all(got[i] == truth[i] for i in got), "a frame's pixels differ from sequential decoding"
    assert plan.gops_skipped >= 2 and len(got) < info.n_frames // 2, (plan.gops_skipped, len(got))


def test_sampled_clips_start_where_the_timeline_says_and_decode_little():
    kwargs = dict(seconds=10.0, size=(320, 240), codec="h264-high", gop=GOP)
    path, scene = face_video(**kwargs), face_scene(**kwargs)
    config = FaceConfig(max_clips=8)
    result = _check_sampled(path, scene, config)
    q = result.quality
    assert len(result) == 8
    # each segment's first frame: a function of the timeline (300 frames at 30 fps), not of the keyframes
    assert [m.first_frame for m in result.meta] == [a for a, _ in clip_segments(300, 16, 8)]
    # each clip decodes from the keyframe before it: its own 16 frames and at most a GOP before them
    assert q.frames_decoded < 8 * (16 + GOP), q.frames_decoded
    assert q.detector["gops_skipped"] >= 3
    assert sum(q.dropped.values()) + q.frames_with_face == 300


@pytest.mark.parametrize("gop", [12, 250])
def test_clip_positions_do_not_depend_on_the_gop(gop):
    # The same scene encoded with other keyframe intervals (and B-frames): the clips fall at the same times.
    kwargs = dict(seconds=6.0, size=(320, 240), codec="h264-high")
    reference, ref_marks = extract_face_clips_with_landmarks(face_video(gop=GOP, **kwargs), FaceConfig(max_clips=6))
    other, marks = extract_face_clips_with_landmarks(face_video(gop=gop, **kwargs), FaceConfig(max_clips=6))
    assert [m.first_frame for m in other.meta] == [m.first_frame for m in reference.meta]
    assert [m.start_time for m in other.meta] == [m.start_time for m in reference.meta]
    # the same frames: the landmarks differ only by the detector's response to the encoder's rounding
    # (measured 0.33 px for GOP 12, 0.51 px for GOP 250 — under 2 % of the 28.5 px eye distance)
    eye = np.linalg.norm(ref_marks[:, :, 0] - ref_marks[:, :, 1], axis=-1).mean()
    assert np.abs(marks - ref_marks).mean() < 0.03 * eye


def test_sampled_clips_without_a_frame_table_are_the_same_faces(monkeypatch):
    # Timestamps unusable (the table is None): sequential decoding, clips at each segment's start. Where both
    # runs cut a clip at the same frames, the faces are identical.
    kwargs = dict(seconds=6.0, size=(320, 240), codec="h264-high", gop=GOP)
    path = face_video(**kwargs)
    config = FaceConfig(max_clips=6)
    with_table = extract_face_clips(path, config)
    real_probe = pipeline_module.probe
    monkeypatch.setattr(pipeline_module, "probe", lambda *a, **k: _without_table(real_probe(*a, **k)))
    without = extract_face_clips(path, config)
    assert [m.first_frame for m in without.meta] == [j * 30 for j in range(6)]  # segments of 30 frames
    assert without.quality.detector["gops_skipped"] == 0
    assert without.quality.frames_decoded > with_table.quality.frames_decoded
    assert [m.first_frame for m in with_table.meta] == [m.first_frame for m in without.meta]
    np.testing.assert_array_equal(with_table.clips, without.clips)


def _without_table(info):
    from dataclasses import replace

    return replace(info, table=None)


def test_a_frame_missing_inside_a_window_restarts_the_window(monkeypatch):
    path = face_video(seconds=3.0, size=(320, 240))
    config = FaceConfig(max_clips=2)
    real_frames = pipeline_module._FaceTracker.frames

    def frames_without_frame_5(self, skip=None):
        for df in real_frames(self, skip):
            if df.index != 5:
                yield df

    monkeypatch.setattr(pipeline_module._FaceTracker, "frames", frames_without_frame_5)
    result = extract_face_clips(path, config)
    assert len(result) == 2
    assert result.meta[0].first_frame == 6  # the window at 0 lost frame 5; the next starts after it
    assert result.quality.dropped["decode_gap"] == 5
    for m in result.meta:
        assert m.last_frame - m.first_frame == 15


# --- converting only the face's region ---------------------------------------------------------------------------


def _frames(**kwargs):
    with av.open(str(face_video(seconds=0.5, **kwargs))) as container:
        return [f for _, f in zip(range(3), container.decode(video=0), strict=False)]


@pytest.mark.parametrize(
    "kwargs",
    [dict(size=(640, 480)), dict(size=(322, 242)), dict(size=(320, 240), codec="mjpeg", container="avi")],
    ids=["yuv420p", "size-not-multiple-of-4", "mjpeg"],
)
def test_region_conversion_equals_whole_frame_conversion(kwargs):
    frame = _frames(**kwargs)[1]
    conv = FrameConverter(0, 320)
    full = conv.rgb(frame)
    h, w = full.shape[:2]
    regions = [(0, 0, w, h), (100, 50, 356, 306), (2, 3, 41, 40), (0, h - 134, 262, h), (w - 2 * (w // 4), 0, w, 30)]
    regions += [(6, 10, 14, 18)]  # too small for swscale: converted whole
    for x0, y0, x1, y1 in regions:
        x1, y1 = min(x1, w), min(y1, h)
        np.testing.assert_array_equal(conv.rgb_region(frame, x0, y0, x1, y1), full[y0:y1, x0:x1], str((x0, y0, x1, y1)))


def test_region_conversion_of_other_pixel_formats_falls_back():
    rgb = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv444p")
    conv = FrameConverter(0, 320)
    np.testing.assert_array_equal(conv.rgb_region(frame, 10, 20, 110, 120), conv.rgb(frame)[20:120, 10:110])


@pytest.mark.parametrize("size,rotation", [((640, 480), 0), ((1920, 1080), 0), ((640, 480), 90)])
def test_face_from_region_equals_face_from_whole_frame(size, rotation):
    """Random faces anywhere (partly outside the frame too, small and 5× larger than the output, tilted)."""
    frame = _frames(size=size)[0]
    conv = FrameConverter(rotation, 320)
    full = conv.rgb(frame)
    w, h = frame.width, frame.height
    s2d = stored_to_display(rotation, w, h)
    dw, dh = (h, w) if rotation in (90, 270) else (w, h)
    rng = np.random.default_rng(1)
    tpl = template(112)
    for _ in range(60):
        centre = rng.uniform([-0.1 * dw, -0.1 * dh], [1.1 * dw, 1.1 * dh])
        eyes = rng.uniform(20, 0.6 * min(dw, dh))
        a = rng.uniform(-0.6, 0.6)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        landmarks = (tpl - tpl.mean(0)) @ rot.T * eyes / (tpl[1, 0] - tpl[0, 0]) + centre + rng.normal(0, 1, (5, 2))
        m = alignment_matrices(landmarks[None], 112, s2d)[0]
        whole = warp(full, m, 112)
        x0, y0, x1, y1 = source_region(m, 112, w, h)
        if x1 <= x0 or y1 <= y0:
            assert not whole.any()  # wholly outside: black either way
            continue
        np.testing.assert_array_equal(warp(conv.rgb_region(frame, x0, y0, x1, y1), shifted(m, x0, y0), 112), whole)


def test_batched_similarity_equals_one_at_a_time():
    rng = np.random.default_rng(2)
    src = rng.normal(0, 50, (40, 5, 2)) + rng.uniform(0, 500, (40, 1, 2))
    src[0] = src[0] * [-1, 1]  # a mirrored face: no reflection may be fitted
    src[1] = 7.0  # degenerate: all points equal
    dst = template(112)
    batch = similarities(src, dst)
    for one, b in zip(src, batch, strict=True):
        np.testing.assert_allclose(b, similarity(one, dst), atol=1e-9)
    np.testing.assert_allclose(alignment_matrices(src[2:4], 112), [alignment_matrix(s, 112) for s in src[2:4]])
