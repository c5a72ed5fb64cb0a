"""Dataset discovery: CSV manifests and AVEC2014/AVEC2013 trees (built here with empty files; no real data)."""

from __future__ import annotations

import warnings

import pytest

from trainer.manifest import (
    ManifestError,
    discover,
    read_avec2013,
    read_avec2014,
    read_csv_manifest,
    shared_subjects,
    warn_shared_subjects,
)


def write(path, text: str = ""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_paths_relative_to_the_csv(tmp_path):
    m = write(tmp_path / "data" / "list.csv",
              "video,bdi,split,subject,extra\nclips/a.mp4,12,train,p1,x\nb.avi,0,Development,,y\nc.mov,63,TEST,p1,z\n")
    videos = read_csv_manifest(m)
    assert [v.path for v in videos] == [tmp_path / "data" / "clips" / "a.mp4", tmp_path / "data" / "b.avi",
                                        tmp_path / "data" / "c.mov"]
    assert [(v.bdi, v.split, v.subject) for v in videos] == [(12, "train", "p1"), (0, "dev", None), (63, "test", "p1")]
    assert len({v.video_id for v in videos}) == 3 and all("/" not in v.video_id for v in videos)
    assert not any(v.synthetic for v in videos)
    assert shared_subjects(videos) == {"p1": ["test", "train"]}


def test_csv_without_subject_column_and_synthetic_flag(tmp_path):
    m = write(tmp_path / "m.csv", "video,bdi,split,synthetic\na.mp4,5,train,1\n")
    (v,) = read_csv_manifest(m)
    assert v.subject is None and v.synthetic


@pytest.mark.parametrize("body", [
    "video,bdi\na.mp4,3\n",  # no split column
    "video,bdi,split\na.mp4,64,train\n",  # outside 0..63
    "video,bdi,split\na.mp4,-1,train\n",
    "video,bdi,split\na.mp4,abc,train\n",
    "video,bdi,split\na.mp4,3,holdout\n",  # unknown split
    "video,bdi,split\na.mp4,3,train\na.mp4,4,test\n",  # listed twice
    "video,bdi,split\n",  # no rows
    "video,bdi,split\n,3,train\n",  # empty path
])
def test_csv_errors(tmp_path, body):
    with pytest.raises(ManifestError):
        read_csv_manifest(write(tmp_path / "m.csv", body))


def avec2014_tree(root):
    """AVEC2014 as distributed: split/task/<id>_<task>_video.mp4 and one-value label CSVs."""
    scores = {"Training": {"203_1": 5, "205_2": 30}, "Development": {"210_1": 17}, "Testing": {"203_2": 9}}
    for split, ids in scores.items():
        for vid, bdi in ids.items():
            for task in ("Northwind", "Freeform"):
                write(root / split / task / f"{vid}_{task}_video.mp4")
            write(root / f"{split}_DepressionLabels" / f"{vid}_Depression.csv", f"{bdi}\n")
    write(root / "Testing" / "Freeform" / "999_1_Freeform_video.mp4")  # no label: skipped
    write(root / "Training" / "Northwind" / "readme.txt", "not a video")
    return scores


def test_avec2014(tmp_path):
    scores = avec2014_tree(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1"):
        videos = read_avec2014(tmp_path)
    assert len(videos) == 8  # 4 sessions × 2 tasks
    by_id = {v.video_id: v for v in videos}
    assert by_id["203_1_Northwind"].bdi == by_id["203_1_Freeform"].bdi == scores["Training"]["203_1"]
    assert by_id["210_1_Freeform"].split == "dev" and by_id["203_2_Northwind"].split == "test"
    assert by_id["205_2_Freeform"].subject == "205"
    assert shared_subjects(videos) == {"203": ["test", "train"]}
    with pytest.warns(UserWarning):
        only = read_avec2014(tmp_path, tasks=("Freeform",))
    assert {v.video_id.split("_")[-1] for v in only} == {"Freeform"} and len(only) == 4
    with pytest.warns(UserWarning):
        assert discover(tmp_path)[0] == "avec2014"


def test_avec2013(tmp_path):
    # The assumed layout: split/Video/<id>_cut_video.mp4 and split/DepressionLabels/<id>_Depression.csv.
    for split, vid, bdi in [("Training", "203_1", 3), ("Training", "204_1", 40), ("Development", "220_2", 11),
                            ("Testing", "203_2", 7)]:
        write(tmp_path / split / "Video" / f"{vid}_cut_video.mp4")
        write(tmp_path / split / "DepressionLabels" / f"{vid}_Depression.csv", f"BDI\n{bdi}\n")
    videos = read_avec2013(tmp_path)
    assert sorted((v.video_id, v.split, v.bdi) for v in videos) == [
        ("203_1", "train", 3), ("203_2", "test", 7), ("204_1", "train", 40), ("220_2", "dev", 11)]
    with pytest.warns(UserWarning, match="1 subject"):
        assert warn_shared_subjects(videos) == {"203": ["test", "train"]}
    assert discover(tmp_path) == ("avec2013", videos)


def test_subject_disjoint_splits_do_not_warn(tmp_path):
    m = write(tmp_path / "m.csv", "video,bdi,split,subject\na.mp4,1,train,x\nb.mp4,2,test,y\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_shared_subjects(read_csv_manifest(m)) == {}


def test_label_file_errors(tmp_path):
    write(tmp_path / "Training" / "1_1_video.mp4")
    write(tmp_path / "labels" / "1_1_Depression.csv", "77\n")
    with pytest.raises(ManifestError):
        read_avec2013(tmp_path)


def test_nothing_found(tmp_path):
    write(tmp_path / "Training" / "notes.txt")
    with pytest.raises(ManifestError):
        read_avec2013(tmp_path)
    with pytest.raises(ManifestError):
        discover(tmp_path / "missing")
