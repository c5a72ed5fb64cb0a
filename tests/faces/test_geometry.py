"""Alignment and rotation geometry, against obviously-correct references."""

import cv2
import numpy as np
import pytest

from djldml.faces import ALIGN_TEMPLATE, similarity
from djldml.faces.align import alignment_matrix, template, warp
from djldml.faces.decode import normalise_rotation, stored_to_display
from djldml.faces.detect import Face
from djldml.faces.track import choose_face, interpolate, same_face


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    for _ in range(20):
        angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 5)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shift = rng.uniform(-100, 100, 2)
        src = rng.uniform(0, 500, (5, 2))
        m = similarity(src, src @ rot.T + shift)
        np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
        np.testing.assert_allclose(m[:, 2], shift, atol=1e-7)


def test_similarity_is_least_squares_against_opencv():
    rng = np.random.default_rng(1)
    src = ALIGN_TEMPLATE * 3 + rng.normal(0, 4, (5, 2)) + 200
    ours = similarity(src, ALIGN_TEMPLATE)
    ref, _ = cv2.estimateAffinePartial2D(src, ALIGN_TEMPLATE, method=cv2.LMEDS)
    # LMEDS fits a robust subset, so agreement is approximate; the residual must be no worse than OpenCV's.
    res = lambda m: np.linalg.norm(src @ m[:, :2].T + m[:, 2] - ALIGN_TEMPLATE)  # noqa: E731
    assert res(ours) <= res(ref) + 1e-9


def test_a_mirror_is_never_fitted():
    src = ALIGN_TEMPLATE.copy()
    src[:, 0] = 112 - src[:, 0]  # mirrored landmarks
    m = similarity(src, ALIGN_TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0


def test_template_scales_with_face_size():
    np.testing.assert_allclose(template(224), ALIGN_TEMPLATE * 2)
    np.testing.assert_allclose(alignment_matrix(ALIGN_TEMPLATE, 112), np.eye(2, 3), atol=1e-9)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_stored_to_display_matches_rot90(rotation):
    rng = np.random.default_rng(rotation)
    stored = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    displayed = np.rot90(stored, rotation // 90)
    m = stored_to_display(rotation, 50, 30)[:2]
    h, w = displayed.shape[:2]
    out = cv2.warpAffine(stored, m, (w, h), flags=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(out, displayed)


def test_warp_of_a_rotated_frame_equals_warp_of_the_upright_frame():
    rng = np.random.default_rng(2)
    upright = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    landmarks = ALIGN_TEMPLATE * 0.8 + [30, 10]
    expected = warp(upright, alignment_matrix(landmarks, 112), 112)
    stored = np.ascontiguousarray(np.rot90(upright, -1))  # what a phone stores with rotation 90
    got = warp(stored, alignment_matrix(landmarks, 112, stored_to_display(90, 120, 160)), 112)
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_normalise_rotation():
    assert [normalise_rotation(a) for a in (None, 0, 90, -90, 180, -180, 270, 89.6, float("nan"))] == [
        0, 0, 90, 270, 180, 180, 270, 90, 0,
    ]  # fmt: skip


def _face(x, y, size):
    box = np.array([x, y, size, size], float)
    marks = ALIGN_TEMPLATE / 112 * size + [x, y]
    return Face(score=0.9, box=box, landmarks=marks)


def test_interviewee_is_the_largest_face_and_keeps_the_track():
    big, small = _face(100, 100, 120), _face(400, 20, 50)
    assert choose_face([small, big], None) is big
    assert choose_face([], big) is None
    # A slightly larger newcomer does not steal the track; a much larger one does.
    other = _face(300, 100, 140)
    assert choose_face([other, big], big) is big
    huge = _face(300, 100, 200)
    assert choose_face([huge, big], big) is huge


def test_same_face_and_interpolation():
    a, b = _face(100, 100, 100), _face(110, 104, 104)
    assert same_face(a, b)
    assert not same_face(a, _face(300, 100, 100))  # jumped
    assert not same_face(a, _face(100, 100, 200))  # doubled in size
    np.testing.assert_allclose(interpolate(a, b, 0.5), (a.landmarks + b.landmarks) / 2)


def test_shrunk_warp_matches_a_direct_warp_of_a_smooth_image():
    # A face 5× larger than the output: the warp first area-shrinks the face's region; on a smooth image that
    # must give the same picture as warping directly (which is exact there, aliasing needs fine detail).
    yy, xx = np.mgrid[0:1080, 0:1920].astype(np.float32)
    smooth = np.dstack([128 + 100 * np.sin(xx / 90), 128 + 100 * np.cos(yy / 70), 128 + 80 * np.sin((xx + yy) / 120)])
    smooth = smooth.astype(np.uint8)
    landmarks = ALIGN_TEMPLATE * 5 + [700, 300]
    m = alignment_matrix(landmarks, 112)
    direct = cv2.warpAffine(smooth, m, (112, 112), flags=cv2.INTER_LINEAR)
    shrunk = warp(smooth, m, 112)
    assert np.abs(shrunk.astype(int) - direct).mean() < 1.5


def test_shrunk_warp_does_not_alias_fine_detail():
    stripes = np.zeros((1080, 1920, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: their true average at 1/5 scale is flat grey
    m = alignment_matrix(ALIGN_TEMPLATE * 5 + [700, 300], 112)
    face = warp(stripes, m, 112)
    direct = cv2.warpAffine(stripes, m, (112, 112), flags=cv2.INTER_LINEAR)  # bilinear alone: 0/255 samples
    assert abs(face.mean() - 127.5) < 5
    assert face.std() < 0.3 * direct.std(), (face.std(), direct.std())


def test_frame_converter_orientation_and_scale():
    import av

    from djldml.faces.decode import FrameConverter

    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:60, :80] = (255, 0, 0)  # red top-left corner of the stored frame
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    for rotation in (0, 90, 180, 270):
        small, sx, sy = FrameConverter(rotation, 320).small_bgr(frame)
        expected = np.rot90(rgb, rotation // 90)
        assert small.shape[:2] == (expected.shape[0] // 2, expected.shape[1] // 2) and sx == sy == 2
        red = np.argwhere(small[:, :, 2] > 128).mean(0) * 2
        assert np.allclose(red, np.argwhere(expected[:, :, 0] > 128).mean(0), atol=2)
    np.testing.assert_array_equal(FrameConverter(0, 320).rgb(frame), rgb)


def test_persistent_clips_keep_the_face_seen_most():
    from djldml.faces.track import persistent_clips

    def clip(cx, cy, scale, jitter=0.0, seed=0):
        rng = np.random.default_rng(seed)
        pts = (ALIGN_TEMPLATE - ALIGN_TEMPLATE.mean(0)) * scale + [cx, cy]
        return np.stack([pts + rng.normal(0, jitter, pts.shape) for _ in range(16)])

    # The interviewee drifts slowly across 8 clips; a larger face somewhere else takes clips 3 and 4.
    marks = [clip(300 + 10 * i, 240, 1.2, 1.0, i) for i in range(8)]
    marks[3], marks[4] = clip(100, 240, 2.2), clip(104, 236, 2.25)
    keep = persistent_clips(np.stack(marks))
    assert keep.tolist() == [True, True, True, False, False, True, True, True]
    # One person leaning in (larger, moved) stays one person; a single clip is always kept.
    leaning = np.stack([clip(300, 240, 1.2), clip(330, 250, 1.7), clip(320, 245, 1.4)])
    assert persistent_clips(leaning).all() and persistent_clips(leaning[:1]).all()
    # A tie between two faces: the larger one is kept.
    tie = np.stack([clip(300, 240, 1.0), clip(100, 240, 1.6), clip(302, 240, 1.0), clip(100, 242, 1.6)])
    assert persistent_clips(tie).tolist() == [False, True, False, True]
