"""``trainer prepare`` on real face videos (built from offline test media): faces stored equal the pipeline's,
unusable videos are reported not fatal, and a re-run resumes."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from djldml.faces import iter_aligned_frames
from tests.media import face_video, make_text_file, noface_video
from trainer import prepare as prepare_module
from trainer.prepare import face_config_for, prepare
from trainer.store import PreparedDataset, face_file_name


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    (root / "v").mkdir()
    shutil.copy(face_video(seconds=1.2, size=(320, 240), fps=25.0), root / "v" / "a.mp4")
    shutil.copy(face_video(seconds=1.0, size=(320, 240), fps=25.0, moving=False), root / "v" / "b.mp4")
    shutil.copy(noface_video(seconds=1.0, size=(320, 240), fps=25.0), root / "v" / "empty.mp4")
    make_text_file(root / "v" / "text.mp4")
    (root / "list.csv").write_text(
        "video,bdi,split,subject\n"
        "v/a.mp4,10,train,p1\nv/b.mp4,20,test,p2\nv/empty.mp4,5,train,p3\nv/text.mp4,7,dev,p4\nv/gone.mp4,1,dev,p5\n"
    )
    return root / "list.csv"


@pytest.fixture(scope="module")
def prepared(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    return out, prepare(source, out, progress=False)


def test_usable_videos_in_manifest_others_reported(prepared):
    out, result = prepared
    ds = PreparedDataset(out)
    assert [(v.video_id, v.bdi, v.split, v.subject) for v in ds.videos] == [("v_a", 10, "train", "p1"),
                                                                              ("v_b", 20, "test", "p2")]
    a = ds.record("v_a")
    # 30 frames at 25 fps (the last starting at 1.16 s) become the 35 frames of the 30 fps clip timeline up to it
    assert a.n_frames == 35 and a.n_faces > 30 and a.fps == pytest.approx(30.0)
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["not_usable"] == {"v_empty": "too_few_face_clips", "v_text": "not_a_video",
                                    "v_gone": "file_not_found"}
    assert report["counts"] == {"prepared": 2, "no_clips": 1, "failed": 2}
    info = json.loads((out / "dataset.json").read_text())
    assert info["synthetic"] is False and info["source_kind"] == "csv" and info["codec"] == "h264"
    assert not ds.synthetic and ds.shared_subjects == {}


def test_stored_faces_equal_the_pipeline_faces(prepared, source):
    out, _ = prepared
    ds = PreparedDataset(out)
    direct = [f.face for f in iter_aligned_frames(source.parent / "v" / "a.mp4", face_config_for())]
    start = int(ds.clip_starts("v_a")[3])
    clip = ds.read_clip("v_a", start)
    want = np.stack(direct[start : start + 16])
    assert cv2.PSNR(clip, want) > 30
    np.testing.assert_allclose(ds.frame_times("v_a")[:3], [0, 1 / 30, 2 / 30], atol=1e-6)  # the 30 fps timeline


def test_rerun_skips_done_videos(prepared, source, monkeypatch):
    out, _ = prepared
    before = (out / face_file_name("v_a")).stat().st_mtime_ns
    calls = []
    real = prepare_module._write_face_file
    monkeypatch.setattr(prepare_module, "_write_face_file", lambda v, *a: (calls.append(v.video_id), real(v, *a)))
    result = prepare(source, out, progress=False)
    assert (out / face_file_name("v_a")).stat().st_mtime_ns == before
    statuses = {o.video_id: o.status for o in result.outcomes}
    assert statuses["v_a"] == statuses["v_b"] == "skipped_done" and statuses["v_empty"] == "no_clips"
    assert calls == ["v_text"]  # only the unreadable one is tried again (the missing one fails before)
    assert statuses["v_gone"] == statuses["v_text"] == "failed"


def test_interrupted_run_resumes(source, tmp_path, monkeypatch):
    real = prepare_module._write_face_file

    def dies_on_b(video, path, *args):
        if video.video_id == "v_b":
            path.parent.joinpath(f".{path.name}.123.tmp").write_bytes(b"half a file")  # left by a killed run
            raise KeyboardInterrupt
        return real(video, path, *args)

    monkeypatch.setattr(prepare_module, "_write_face_file", dies_on_b)
    with pytest.raises(KeyboardInterrupt):
        prepare(source, tmp_path, progress=False)
    assert [v.video_id for v in PreparedDataset(tmp_path).videos] == ["v_a"]  # what was done is usable
    monkeypatch.setattr(prepare_module, "_write_face_file", real)
    result = prepare(source, tmp_path, progress=False)
    assert {o.video_id: o.status for o in result.outcomes}["v_a"] == "skipped_done"
    assert [v.video_id for v in PreparedDataset(tmp_path).videos] == ["v_a", "v_b"]


def test_cli(source, tmp_path, capsys):
    from trainer.__main__ import main

    assert main(["prepare", "--source", str(source), "--out", str(tmp_path), "--no-progress", "--codec", "jpeg"]) == 0
    out = capsys.readouterr().out
    assert "2 usable" in out and "a.mp4" not in out and "text" not in out  # no file names printed
    assert PreparedDataset(tmp_path).face_file("v_a").codec == "jpeg"
