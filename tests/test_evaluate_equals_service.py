"""``trainer evaluate --videos`` reports exactly the number ``POST /predict`` returns (ARCHITECTURE.md, contract 3).

Both run the same model archive (the committed SYNTHETIC demo model) on the same raw videos: the service
through the embedded gateway (real uvicorn-free ASGI client, in-process backend, thread-pool jobs), the trainer
through its evaluation CLI code. Same clip geometry in time and clip selection (from the model card), same
batching, same mirror averaging, same aggregation: the scores agree to 1e-6 BDI-II points.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.media import carphone_path, face_video, noface_video
from trainer.evaluate import evaluate, format_report, predict_videos, scoring_model
from trainer.manifest import discover

REPO = Path(__file__).resolve().parents[1]
DEMO_MAR = REPO / "model_store" / "djldml-demo.mar"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A CSV dataset source: two face videos (other frame rates than the model's) and a face-less one."""
    root = tmp_path_factory.mktemp("source")
    shutil.copy(face_video(seconds=3.0, size=(320, 240), fps=30.0), root / "a.mp4")
    shutil.copy(carphone_path(), root / "b.mp4")  # a real talking face at 29.97 fps
    shutil.copy(noface_video(seconds=2.0, size=(320, 240)), root / "empty.mp4")
    shutil.copy(face_video(seconds=2.0, size=(320, 240), fps=25.0), root / "train.mp4")
    (root / "list.csv").write_text("video,bdi,split,subject\n"
                                   "a.mp4,12,test,p1\nb.mp4,30,test,p2\nempty.mp4,5,test,p3\ntrain.mp4,20,train,p4\n")
    return root / "list.csv"


@pytest.fixture(scope="module")
def service_scores(source, tmp_path_factory) -> dict[str, dict]:
    settings = Settings(model_store=REPO / "model_store", upload_dir=tmp_path_factory.mktemp("uploads"),
                        predict_wait_s=120)
    out = {}
    with TestClient(create_app(settings)) as client:
        for name in ("a", "b", "empty"):
            with open(source.parent / f"{name}.mp4", "rb") as f:
                r = client.post("/predict", files={"video": (f"{name}.mp4", f, "video/mp4")})
            out[name] = r.json() | {"status": r.status_code}
    return out


def test_trainer_evaluate_on_raw_videos_equals_the_service(source, service_scores, tmp_path):
    assert service_scores["a"]["status"] == 200 and service_scores["b"]["status"] == 200
    model = scoring_model(DEMO_MAR)
    assert model.source == "archive" and model.mirror is True
    videos = [v for v in discover(source)[1] if v.split == "test"]
    results, refused = predict_videos(model, videos, progress=False)
    scores = {r.video_id: r.predicted for r in results}
    assert scores["a"] == pytest.approx(service_scores["a"]["bdi_score"], abs=1e-6)
    assert scores["b"] == pytest.approx(service_scores["b"]["bdi_score"], abs=1e-6)
    for r in results:  # the whole distribution, not only its expectation
        served = service_scores[r.video_id]
        assert r.n_clips == served["quality"]["clips_used"]
        assert max(abs(p - q) for p, q in zip(r.prediction.distribution, served["distribution"], strict=True)) < 1e-9
    # a video the service refuses is refused by the evaluation with the same code, and not scored
    assert service_scores["empty"]["status"] == 422 and service_scores["empty"]["code"] == "no_face"
    assert dict(refused) == {"no_face": 1}


def test_evaluate_cli_names_its_path_and_writes_the_service_scores(source, service_scores, tmp_path):
    metrics = evaluate(DEMO_MAR, videos=source, split="test", out_dir=tmp_path, n_bootstrap=50, plots=False,
                       progress=False, device="cpu")
    assert metrics["path"]["name"] == "service" and metrics["path"]["refused"] == {"no_face": 1}
    assert metrics["path"]["fps"] == 25.0 and metrics["path"]["mirror_average"] is True
    assert metrics["n_videos"] == 2 and metrics["n_videos_in_split"] == 3
    assert metrics["baselines"]["train_mean"]["value"] == 20.0
    rows = {row["video_id"]: row for row in csv.DictReader((tmp_path / "predictions.csv").open())}
    for name in ("a", "b"):
        assert float(rows[name]["bdi_predicted"]) == pytest.approx(service_scores[name]["bdi_score"], abs=1e-6)
    report = format_report(metrics)
    assert "the service's path" in report and "refuse" in report


def test_cli_reports_a_bad_source_without_a_traceback(source, tmp_path, capsys):
    from trainer.__main__ import main

    bad = tmp_path / "twice.csv"
    bad.write_text("video,bdi,split\n" + "".join(f"{source.parent / 'a.mp4'},{b},test\n" for b in (1, 2)))
    assert main(["evaluate", str(DEMO_MAR), "--videos", str(bad), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "listed twice" in err and "Traceback" not in err


def test_faces_cli_cuts_clips_as_the_service_does_for_a_model(source, service_scores, capsys):
    import json

    from djldml.faces.__main__ import main

    assert main([str(source.parent / "a.mp4"), "--model", str(DEMO_MAR)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["corrections"]["frame_rate"]["to"] == 25.0  # the demo card's clip timeline
    assert report["clips_made"] == service_scores["a"]["quality"]["clips_used"]
