"""Videos stored turned without rotation metadata, and small faces: the survey before the clips
(djldml/faces/orientation.py) and the larger detection scale.

The turned videos store ``np.rot90(upright, turn)`` with no display matrix, as an app that drops it would; the
pipeline must find the turn, align the face from the right features (checked against the scene's exact
truth in the upright display) and say what it corrected.
"""

import numpy as np
import pytest

from djldml.errors import FaceOrientation, NoFace
from djldml.faces import FaceConfig, extract_face_clips
from djldml.faces import orientation as orientation_module
from djldml.faces.orientation import TURNS, decide
from tests.media import _cached, encode_frames, face_scene, face_video, noface_video

from .test_pipeline import _check_dense, _check_sampled

SCENE = dict(seconds=1.2, size=(640, 480))


def turned_face_video(turn: int, metadata_rotation: int = 0, **scene_kwargs):
    """A face video whose pixels are stored turned by ``turn`` quarter turns counter-clockwise (``np.rot90``)
    with no metadata saying so; ``metadata_rotation`` adds a correct display matrix on top (cached)."""
    params = {"turn": turn, "metadata_rotation": metadata_rotation, **scene_kwargs}
    scene = face_scene(**scene_kwargs)

    def build(path):
        frames = (np.rot90(f, turn) for f in scene.frames())
        encode_frames(path, frames, fps=scene.fps, rotate=metadata_rotation, container="mp4")

    return _cached("turned", "mp4", params, build), scene


@pytest.mark.parametrize("turn", [1, 2, 3], ids=["stored 90° ccw", "upside down", "stored 270° ccw"])
def test_turned_video_is_righted(turn):
    path, scene = turned_face_video(turn, **SCENE)
    righted_by = -90 * turn % 360  # np.rot90(stored, righted_by // 90) is upright
    report = _check_dense(path, scene, rotation=righted_by)
    assert report.corrections == {"orientation": {"rotated_by": righted_by, "by": "detector"}}
    result = _check_sampled(path, scene, FaceConfig(max_clips=2))
    assert len(result) == 2
    assert result.quality.corrections["orientation"] == {"rotated_by": righted_by, "by": "detector"}
    assert (result.quality.width, result.quality.height) == scene.size


def test_detector_turn_composes_with_rotation_metadata():
    # Upside down under a display matrix of 90°: the detector's 180° comes on top of the metadata's 90°.
    path, scene = turned_face_video(2, metadata_rotation=90, **SCENE)
    report = _check_dense(path, scene, rotation=270)
    assert report.corrections == {"orientation": {"rotated_by": 180, "by": "detector"}}


@pytest.mark.parametrize("rotate", [0, 90])
def test_upright_video_gets_no_correction(rotate):
    path, scene = face_video(rotate=rotate, **SCENE), face_scene(**SCENE)
    report = _check_dense(path, scene, rotation=rotate)
    assert "orientation" not in report.corrections
    survey = report.detector["survey"]
    assert survey["frames_with_face"] >= 2 and np.argmax(survey["scores_by_turn"]) == 0
    assert not report.detector["larger_scale"]  # a face 30 % of the frame high needs no larger scale


@pytest.mark.parametrize("size", [(640, 480), (1920, 1080)])
def test_small_face_is_found_at_the_larger_scale(size):
    # 6 % of the frame height: ≈ 14 px at the detection scale, below what yuface finds (≈ 24 px); a still face,
    # since the scene's motion is in frame units and would move so small a face several face sizes per second.
    kwargs = dict(seconds=1.2, size=size, face_height=0.06, moving=False)
    path, scene = face_video(**kwargs), face_scene(**kwargs)
    report = _check_dense(path, scene)
    assert report.detector["larger_scale"] and report.detector["survey"]["larger_scale"]
    result = _check_sampled(path, scene, FaceConfig(max_clips=2))
    assert len(result) == 2


def test_smaller_than_the_floor_is_not_a_face():
    # 4 % is below min_face_fraction (5 %): not found, even at the larger scale.
    kwargs = dict(seconds=1.2, size=(640, 480), face_height=0.04, moving=False)
    with pytest.raises(NoFace):
        extract_face_clips(face_video(**kwargs))


def test_faceless_video_is_no_face_after_looking_at_the_larger_scale():
    path = noface_video(seconds=6.0, size=(640, 480))
    with pytest.raises(NoFace):
        extract_face_clips(path)
    from djldml.faces.pipeline import _FaceTracker

    session = _FaceTracker(path, FaceConfig())
    assert session.survey.faces_found == 0 and session.survey.frames == 6
    assert session._larger is not None  # failed searches will also look at the larger scale


# --- the decision, on its own -------------------------------------------------------------------------------------


def test_decide_upright_and_clear_turns():
    assert decide([], 0.6) == 0
    assert decide([[0.92, 0.8, 0.82, 0.78]] * 3, 0.6) == 0
    for k, turn in enumerate(TURNS):
        scores = np.full((3, 4), 0.7)
        scores[:, k] = 0.9
        assert decide(scores.tolist(), 0.6) == turn


def test_decide_trusts_the_metadata_when_upright_ties():
    # 180° leads upright by 0.01 only: not enough to overrule the metadata.
    assert decide([[0.85, 0.0, 0.87, 0.0], [0.86, 0.0, 0.86, 0.0]], 0.6) == 0


def test_decide_refuses_an_undecidable_turn():
    # Faces only turned, and 90° and 270° equally likely: neither may be guessed.
    with pytest.raises(FaceOrientation) as err:
        decide([[0.5, 0.9, 0.6, 0.6], [0.5, 0.6, 0.6, 0.9], [0.5, 0.9, 0.6, 0.88]], 0.6)
    assert err.value.code == "face_orientation" and err.value.details["frames"] == 3


def test_decide_needs_most_frames_to_agree():
    # The mean favours 180° by a margin, but only one frame of three says so.
    with pytest.raises(FaceOrientation):
        decide([[0.3, 0.0, 0.99, 0.0], [0.3, 0.8, 0.75, 0.0], [0.3, 0.8, 0.75, 0.0]], 0.6)


def test_unturn_inverts_rot90():
    img = np.arange(5 * 7).reshape(5, 7)
    for k in range(4):
        turned = np.rot90(img, k)
        h, w = turned.shape
        for y, x in [(0, 0), (1, 3), (h - 1, w - 2)]:
            ox, oy = orientation_module._unturn(x, y, k, w, h)
            assert img[int(oy), int(ox)] == turned[y, x]
