"""The face pipeline on real faces (carphone, astronaut) in videos built at test time: sizes, codecs, rotation,
a second face, face-less gaps, variable frame rate, a minute-long loop."""

import json

import cv2
import numpy as np
import pytest

from djldml.clips import CLIP_LENGTH, FACE_SIZE, FaceClips
from djldml.faces import (
    FaceConfig,
    extract_face_clips,
    extract_face_clips_with_landmarks,
    iter_aligned_frames,
    iter_face_clips,
)
from djldml.faces.__main__ import main as cli
from tests.media import carphone_path, face_scene, face_video

from .truth import eye_errors

# yuface's landmark noise sets the floor (docs/faces.md): detecting on every frame, the worse eye lands a median
# ≈3.5 px (max ≈6–9 px) from where perfect landmarks would put it, in the 112×112 face (eye distance 35 px).
MEDIAN_EYE_PX = 5.0
MAX_EYE_PX = 9.0
MAX_ABS_EYE_PX = 10.0  # to the template itself: includes how the astronaut's face differs from the template


def shown(scene, j: int, fps: float) -> int:
    """The scene's source frame that timeline frame ``j`` (time j / fps) shows: the nearest, ties within the
    timeline's tolerance to the earlier one (djldml.faces.timeline)."""
    tol = min(1e-3, 0.1 / max(fps, scene.fps))
    times = np.array([scene.time(i) - scene.time(0) for i in range(scene.n_frames)])
    return int(np.searchsorted(0.5 * (times[1:] + times[:-1]), j / fps - tol, side="left"))


def _check_dense(path, scene, config=FaceConfig(), rotation=0, median_px=MEDIAN_EYE_PX):
    frames = iter_aligned_frames(path, config)
    rel, seen, n_timeline = [], 0, 0
    for af in frames:
        n_timeline += 1
        truth = scene.truth(shown(scene, af.index, config.fps))
        assert af.time == pytest.approx(af.index / config.fps, abs=1e-9)
        if truth is None:
            assert af.face is None, f"face reported in face-less frame {af.index}"
            continue
        assert af.face is not None, f"face missed in frame {af.index}"
        assert af.face.shape == (FACE_SIZE, FACE_SIZE, 3) and af.face.dtype == np.uint8
        r, a = eye_errors(af.landmarks, truth.landmarks)
        assert a < MAX_ABS_EYE_PX
        rel.append(r)
        seen += 1
    assert seen > 0
    assert np.median(rel) < median_px and max(rel) < MAX_EYE_PX, (np.median(rel), max(rel))
    report = frames.report
    assert report.frames_decoded == scene.n_frames
    assert report.frames_with_face == seen
    assert report.rotation == rotation
    assert (report.width, report.height) == scene.size
    assert report.dropped.get("no_face", 0) == n_timeline - seen
    return report


def _check_sampled(path, scene, config: FaceConfig, median_px=MEDIAN_EYE_PX) -> FaceClips:
    result, landmarks = extract_face_clips_with_landmarks(path, config)
    assert result.clips.dtype == np.uint8
    assert result.clips.shape[1:] == (config.clip_length, config.face_size, config.face_size, 3)
    assert landmarks.shape == (len(result), config.clip_length, 5, 2)
    rel = []
    for marks, meta in zip(landmarks, result.meta, strict=True):
        assert meta.last_frame - meta.first_frame == config.clip_span - 1
        assert meta.start_time == pytest.approx(meta.first_frame / config.fps, abs=1e-9)
        for j, used in enumerate(marks):
            truth = scene.truth(shown(scene, meta.first_frame + j * config.temporal_stride, config.fps))
            assert truth is not None or scene.source != "astronaut", "a clip frame without a face"
            if truth is not None:
                r, a = eye_errors(used, truth.landmarks)
                assert a < MAX_ABS_EYE_PX
                rel.append(r)
    if rel:
        assert np.median(rel) < median_px and max(rel) < MAX_EYE_PX, (np.median(rel), max(rel))
    starts = [m.first_frame for m in result.meta]
    assert starts == sorted(starts)
    assert all(b - a >= config.clip_span for a, b in zip(starts, starts[1:], strict=False)), "clips overlap"
    return result


def test_carphone_sampled_and_dense():
    result = extract_face_clips(carphone_path())
    assert len(result) == 7  # 120 frames: seven 16-frame clips fit
    assert result.clips.shape[1:] == (CLIP_LENGTH, FACE_SIZE, FACE_SIZE, 3)
    q = result.quality
    assert q.frames_decoded <= 120 and q.clips_made == 7 and q.frames_with_face == 7 * 16
    # 120 frames at 29.97 fps → 120 frames of the 30 fps timeline (3.97 s); every one is accounted for
    assert sum(q.dropped.values()) + q.frames_with_face == 120
    assert q.detector["name"].startswith("yuface") and q.detector["mode"] == "sampled"
    for m in result.meta:
        assert m.start_time == pytest.approx(m.first_frame / 30.0, abs=1e-9)  # timeline frames: j / fps

    dense = extract_face_clips(carphone_path(), FaceConfig(max_clips=None, clip_step=8))
    assert [m.first_frame for m in dense.meta] == list(range(0, 120 - 15, 8))
    assert dense.quality.frames_with_face == 120 and dense.quality.detector["mode"] == "dense"
    # Aligned faces of the same frame agree between the modes (same landmarks up to interpolation).
    same = next(i for i, m in enumerate(dense.meta) if m.first_frame == result.meta[0].first_frame)
    assert np.abs(dense.clips[same, 0].astype(int) - result.clips[0, 0]).mean() < 12


@pytest.mark.parametrize("size", [(640, 480), (1920, 1080)])
def test_astronaut_found_and_aligned(size):
    kwargs = dict(seconds=2.0 if size[0] < 1000 else 1.2, size=size)
    path, scene = face_video(**kwargs), face_scene(**kwargs)
    _check_dense(path, scene)
    result = _check_sampled(path, scene, FaceConfig(max_clips=3))
    assert len(result) == min(3, scene.n_frames // 16)  # 1.2 s = 36 frames: room for two clips only


def test_rotation_metadata_is_honoured():
    kwargs = dict(seconds=1.2, size=(640, 480))
    path, scene = face_video(rotate=90, **kwargs), face_scene(**kwargs)
    _check_dense(path, scene, rotation=90)
    _check_sampled(path, scene, FaceConfig(max_clips=2))


def test_the_interviewee_is_the_larger_face():
    kwargs = dict(seconds=1.2, size=(640, 480), second_face=True)
    path, scene = face_video(**kwargs), face_scene(**kwargs)
    assert scene.second_truth(0) is not None
    _check_dense(path, scene)  # the eyes checked are the main face's


def test_a_larger_face_seen_only_for_a_while_is_not_the_interviewee():
    # 12 one-second segments; from 4 s to 7 s a face 1.8× larger sits at the left. The windows in those segments
    # pick it (it is the largest), and the persistence vote drops their clips: every kept clip is the interviewee.
    kwargs = dict(seconds=12.0, size=(640, 480), moving=False, intruder=(4.0, 7.0))
    path, scene = face_video(**kwargs), face_scene(**kwargs)
    config = FaceConfig(max_clips=12)
    result = _check_sampled(path, scene, config)  # landmarks of every clip against the interviewee's truth
    taken = [m for m in result.meta if any(scene.intruder_present(i) for i in range(m.first_frame, m.last_frame + 1))]
    assert len(result) >= 8 and result.quality.dropped.get("other_face", 0) >= 16
    assert len(result) + result.quality.dropped["other_face"] // 16 <= 12
    assert taken == [] or all(scene.truth(m.first_frame) is not None for m in taken)


def test_face_less_gaps_are_skipped():
    kwargs = dict(seconds=3.0, size=(320, 240), gaps=[(1.0, 1.8)])
    path, scene = face_video(**kwargs), face_scene(**kwargs)
    # The suite's smallest, fastest-turning face (320×240): the straight-line fit of the landmarks over a clip
    # (track.line_fit, which removes the detector's jitter) costs it a little median accuracy (measured 5.06 px).
    median_px = 5.5
    _check_dense(path, scene, median_px=median_px)  # gap frames exactly None: transitions detected frame by frame
    gap = {i for i in range(scene.n_frames) if scene.truth(i) is None}
    for config in (FaceConfig(max_clips=None), FaceConfig(max_clips=5)):
        result = _check_sampled(path, scene, config, median_px=median_px)
        assert len(result) >= 3
        for m in result.meta:
            assert not gap & set(range(m.first_frame, m.last_frame + 1)), "a clip spans the gap"


@pytest.mark.parametrize(
    "codec,container",
    [("hevc", "mp4"), ("vp8", "webm"), ("vp9", "webm"), ("av1", "mkv"), ("mjpeg", "avi"), ("h264", "mov"),
     ("h264", "mkv"), ("mpeg4", "avi")],
)  # fmt: skip
def test_codecs_and_containers(codec, container):
    kwargs = dict(seconds=1.0, size=(320, 240))
    path, scene = face_video(codec=codec, container=container, **kwargs), face_scene(**kwargs)
    result = _check_sampled(path, scene, FaceConfig(max_clips=1))
    assert len(result) == 1 and result.quality.frames_with_face == 16


def test_variable_frame_rate_times():
    kwargs = dict(seconds=1.5, size=(320, 240), vfr=True)
    path, scene = face_video(container="mkv", **kwargs), face_scene(**kwargs)
    _check_dense(path, scene)
    _check_sampled(path, scene, FaceConfig(max_clips=2))


def test_temporal_stride_and_step():
    config = FaceConfig(max_clips=None, temporal_stride=2, clip_step=10)
    clips = list(iter_face_clips(carphone_path(), config))
    assert [m.first_frame for _, m in clips] == list(range(0, 120 - 30, 10))
    assert all(m.last_frame - m.first_frame == 30 and c.shape[0] == 16 for c, m in clips)
    sampled = extract_face_clips(carphone_path(), FaceConfig(temporal_stride=2))
    assert len(sampled) == 3 and all(m.last_frame - m.first_frame == 30 for m in sampled.meta)
    assert sampled.quality.dropped["stride"] == 3 * 15


def test_a_minute_long_loop_is_sampled_evenly():
    path = face_video(seconds=60.0, size=(320, 240), source="carphone", moving=False)
    config = FaceConfig(max_clips=32)
    result = extract_face_clips(path, config)
    assert len(result) == 32
    starts = np.array([m.first_frame for m in result.meta])
    n = result.quality.frames_decoded + result.quality.dropped.get("not_decoded", 0)
    assert n == 1800
    seg = n / 32
    # One clip per segment, at (or just after) the segment's start: spread evenly over the whole minute.
    assert np.all(starts >= np.floor(np.arange(32) * seg)) and np.all(starts < np.arange(1, 33) * seg)
    assert starts[-1] > 1800 - 2 * seg
    # Only the windows were examined: few detections, few aligned frames.
    assert result.quality.detector["detections_run"] < 32 * 5
    assert result.quality.frames_with_face == 32 * 16


def test_carphone_scaled_up_dense():
    path = face_video(seconds=2.0, size=(640, 480), source="carphone", moving=False)
    frames = iter_aligned_frames(path)
    n_face = sum(af.face is not None for af in frames)
    assert n_face == 60 and frames.report.frames_with_face == 60


def test_cli_prints_the_report_and_writes_files(tmp_path, capsys):
    out, preview = tmp_path / "clips.npz", tmp_path / "preview.png"
    assert cli([str(carphone_path()), "--out", str(out), "--preview", str(preview), "--max-clips", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips_made"] == 4
    data = np.load(out)
    assert data["clips"].shape == (4, 16, 112, 112, 3)
    assert list(data["first_frame"]) == sorted(data["first_frame"])
    assert json.loads(str(data["report"]))["clips_made"] == 4
    sheet = cv2.imread(str(preview))
    assert sheet is not None and sheet.shape[0] > 4 * 112


def test_cli_prints_typed_errors(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    assert cli([str(bad)]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "not_a_video"


@pytest.mark.parametrize(("speed_px_s", "max_eye_px"), [(300, 11.0), (450, 20.0)])
def test_sampled_mode_follows_a_briskly_moving_face(speed_px_s, max_eye_px):
    # A face swaying side to side at up to 300 / 450 px/s in 640×480 (the issue measured: 40 % of its frames lost
    # as no_face at 300 px/s and too_few_face_clips at 450, while the dense mode found it in every frame). Between
    # two detections 8 frames apart it moves more than half its size; the sampled mode now detects the frames in
    # between, as the dense mode does, and keeps the window.
    period = 2 * np.pi * 0.12 * 640 / speed_px_s
    kwargs = dict(seconds=4.0, size=(640, 480), sway_period_s=period, roll_deg=0.0)
    path, scene = face_video(**kwargs), face_scene(**kwargs)
    result, landmarks = extract_face_clips_with_landmarks(path, FaceConfig(max_clips=7))
    assert len(result) == 7 and "no_face" not in result.quality.dropped, result.quality.dropped
    errors = [eye_errors(used, scene.truth(shown(scene, meta.first_frame + j, 30.0)).landmarks)[0]
              for marks, meta in zip(landmarks, result.meta, strict=True) for j, used in enumerate(marks)]
    # Where the sway reverses, the face accelerates hardest and moves less than half its size in the 7 frames
    # between two detections, so they are interpolated linearly: measured max 9.1 px (300 px/s) and 18.0 px
    # (450 px/s) in the 112-px face, median 4.7 / 4.5 px (docs/faces.md, known limits).
    assert np.median(errors) < MEDIAN_EYE_PX and max(errors) < max_eye_px, (np.median(errors), max(errors))
    dense = iter_aligned_frames(path)
    assert all(f.face is not None for f in dense)
