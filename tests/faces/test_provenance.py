"""The record of how faces are made, and what counts as a difference between training and serving."""

import copy

from djldml.faces import FaceConfig
from djldml.faces.provenance import (
    SELECTION_METHOD,
    differences,
    library_versions,
    preprocessing,
    scoring_config,
    selection,
)


def test_the_record_names_settings_and_libraries():
    rec = preprocessing(FaceConfig(temporal_stride=2))
    assert rec["face_config"]["temporal_stride"] == 2 and rec["face_config"]["face_size"] == 112
    assert "max_clips" not in rec["face_config"]  # how many clips are sampled does not change what a clip is
    import cv2

    assert rec["libraries"]["opencv"].startswith(cv2.__version__.rsplit(".", 1)[0])
    assert set(library_versions()) == {"opencv", "av", "yuface", "numpy", "libavcodec"}


def test_same_settings_and_libraries_match():
    # A prepared dataset's record (every clip) plus the selection `trainer export` adds = the service's record.
    trained = {**preprocessing(FaceConfig(max_clips=None)), "selection": selection(32)}
    assert differences(trained, preprocessing(FaceConfig())) == []
    # Without the selection, the card cannot promise that the service scores clips chosen like its figures.
    (line,) = differences(preprocessing(FaceConfig(max_clips=None)), preprocessing(FaceConfig()))
    assert "no clip selection time-segments/2" in line


def test_the_clip_contract_in_time_is_recorded_and_followed():
    rec = preprocessing(FaceConfig(fps=25.0, temporal_stride=2, max_clips=12))
    assert rec["face_config"]["fps"] == 25.0 and rec["selection"] == {"method": SELECTION_METHOD, "max_clips": 12}
    served = scoring_config(rec, max_duration_s=60.0)
    assert (served.fps, served.temporal_stride, served.max_clips, served.max_duration_s) == (25.0, 2, 12, 60.0)
    assert differences(rec, preprocessing(served)) == []
    legacy = copy.deepcopy(rec)
    del legacy["face_config"]["fps"], legacy["selection"]
    found = differences(legacy, preprocessing(scoring_config(legacy)))
    assert len(found) == 2 and "no clip frame rate" in found[0] and "no clip selection" in found[1]
    assert scoring_config(legacy).fps == FaceConfig().fps  # cut at the default rate, and said so


def test_what_counts_as_a_difference():
    current = preprocessing(FaceConfig())
    trained = copy.deepcopy(current)
    trained["face_config"]["temporal_stride"] = 2
    trained["face_config"]["detect_every"] = 5
    trained["libraries"]["opencv"] = "5.0.0.93"
    found = differences(trained, current)
    assert len(found) == 3, found
    assert any("temporal_stride: trained 2, serving 1" in d for d in found)
    assert any("detect_every" in d for d in found) and any(d.startswith("opencv: trained with 5.0.0.93") for d in found)


def test_patch_releases_and_unrecorded_keys_do_not_count():
    current = preprocessing(FaceConfig())
    trained = copy.deepcopy(current)
    major, minor = trained["libraries"]["numpy"].split(".")[:2]
    trained["libraries"]["numpy"] = f"{major}.{minor}.999"
    del trained["face_config"]["detect_width"]  # an older record without it
    assert differences(trained, current) == []


def test_a_model_without_a_record_cannot_be_checked():
    (line,) = differences({}, preprocessing(FaceConfig()))
    assert "records no preprocessing" in line
