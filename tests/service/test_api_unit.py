"""The gateway in-process (Starlette TestClient, embedded wiring) with a fake backend and a fake face pipeline:
fast checks of the upload handling, auth, limits and error documents. The same API runs against real processes
in test_api.py."""

import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from service import app as app_module
from service import processing, wiring
from service.backends.base import ModelInfo
from service.settings import Settings
from tests.media import carphone_path
from tests.service.fakes import FakeBackend, clip_centre, fake_clips

KEY = "unit-key"


@pytest.fixture
def make_client(tmp_path, monkeypatch):
    clients = []

    def make(backend=None, **overrides):
        values = {"upload_dir": tmp_path / "up", "api_keys": [KEY], "max_upload_bytes": 1_000_000,
                  "predict_wait_s": 10, **overrides}
        settings = Settings(**values)
        backend = backend or FakeBackend()
        monkeypatch.setattr(wiring, "build_backend", lambda s: backend)
        monkeypatch.setattr(processing, "extract_face_clips", lambda path, config: fake_clips(3))
        client = TestClient(app_module.create_app(settings), headers={"X-API-Key": KEY})
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def video_bytes() -> bytes:
    return carphone_path().read_bytes()


def assert_problem(r, status: int, code: str):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == code and body["status"] == status and body["type"].endswith(code)
    return body


def test_predict_returns_the_result(make_client, tmp_path):
    c = make_client()
    r = c.post("/predict", files={"video": ("x.mp4", video_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    assert len(r.json()["distribution"]) == 64
    assert list((tmp_path / "up").iterdir()) == []  # upload deleted once the job ended


def test_auth(make_client):
    c = make_client()
    assert_problem(c.get("/jobs/x", headers={"X-API-Key": ""}), 401, "unauthorised")
    assert_problem(c.get("/jobs/x", headers={"X-API-Key": "wrong"}), 401, "unauthorised")
    assert_problem(c.get("/jobs/x"), 404, "unknown_job")
    assert c.get("/healthz", headers={"X-API-Key": ""}).status_code == 200  # operations stay open


def test_oversized_upload_is_refused_while_streaming(tmp_path):
    """The receiver stops reading the body once the limit is passed (the HTTP-level check is in test_api.py)."""
    import anyio
    from starlette.requests import Request

    from service.api.problems import Problem
    from service.api.upload import receive_video
    from service.storage import LocalUploadStorage

    boundary = "b0undary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n").encode()
    chunks = [head] + [b"\0\0\0\x18ftypmp42" + b"\0" * (65536 - 12)] * 100  # 6.4 MB, limit 1 MB
    received = {"n": 0}

    async def receive():
        i = received["n"]
        received["n"] += 1
        return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"",
             "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]}
    storage = LocalUploadStorage(tmp_path / "up")
    with pytest.raises(Problem) as err:
        anyio.run(receive_video, Request(scope, receive), storage, 1_000_000)
    assert err.value.code == "upload_too_large"
    assert received["n"] <= 1 + 1_000_000 // 65536 + 1  # stopped right after the limit, not at the end
    assert list((tmp_path / "up").iterdir()) == []


def test_declared_oversized_upload_is_refused_before_reading(make_client):
    c = make_client()
    r = c.post("/predict", files={"video": ("v.mp4", b"\0" * 1_200_000, "video/mp4")})
    assert_problem(r, 413, "upload_too_large")


def test_bad_uploads(make_client, tmp_path):
    c = make_client()
    assert_problem(c.post("/predict", data={"x": "1"}), 415, "unsupported_media_type")  # urlencoded form
    assert_problem(c.post("/predict", files={"other": ("a.txt", b"abc", "text/plain")}), 422, "invalid_request")
    assert_problem(c.post("/predict", content=b"raw", headers={"Content-Type": "video/mp4"}), 415,
                   "unsupported_media_type")
    assert_problem(c.post("/predict", files={"video": ("a.png", b"\x89PNG....", "image/png")}), 415,
                   "unsupported_media_type")
    assert_problem(c.post("/predict", files={"video": ("a.mp4", b"", "video/mp4")}), 422, "not_a_video")
    assert_problem(c.post("/predict", files={"video": ("a.mp4", b"hello world, not a video", "video/mp4")}), 422,
                   "not_a_video")
    truncated = video_bytes()[:2000]  # an mp4 header with no frames: sniffing passes, probing does not
    assert_problem(c.post("/predict", files={"video": ("a.mp4", truncated, "video/mp4")}), 422, "not_a_video")
    r = c.post("/predict", content=b"--b\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_problem(r, 422, "invalid_request")
    assert list((tmp_path / "up").iterdir()) == []


def test_concurrent_jobs_per_key_limit(make_client):
    backend = FakeBackend()
    backend.gate.clear()  # jobs block in inference until released
    c = make_client(backend, max_concurrent_jobs_per_key=2)
    ids = [c.post("/jobs", files={"video": ("v.mp4", video_bytes(), "video/mp4")}).json()["id"] for _ in range(2)]
    body = assert_problem(c.post("/jobs", files={"video": ("v.mp4", video_bytes(), "video/mp4")}), 429,
                          "too_many_jobs")
    assert body["status"] == 429
    backend.gate.set()
    for job_id in ids:
        deadline = time.monotonic() + 10
        while c.get(f"/jobs/{job_id}").json()["status"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert c.post("/jobs", files={"video": ("v.mp4", video_bytes(), "video/mp4")}).status_code == 202


def test_predict_answers_202_when_the_wait_runs_out(make_client):
    backend = FakeBackend()
    backend.gate.clear()
    c = make_client(backend)
    r = c.post("/predict?wait_s=0.2", files={"video": ("v.mp4", video_bytes(), "video/mp4")})
    assert r.status_code == 202 and r.headers["location"] == f"/jobs/{r.json()['id']}"
    backend.gate.set()


def test_jobs_are_private_to_their_key(make_client):
    c = make_client(api_keys=[KEY, "other"])
    job_id = c.post("/jobs", files={"video": ("v.mp4", video_bytes(), "video/mp4")}).json()["id"]
    assert_problem(c.get(f"/jobs/{job_id}", headers={"X-API-Key": "other"}), 404, "unknown_job")
    assert_problem(c.delete(f"/jobs/{job_id}", headers={"X-API-Key": "other"}), 404, "unknown_job")
    assert c.delete(f"/jobs/{job_id}").status_code == 204
    assert_problem(c.get(f"/jobs/{job_id}"), 404, "unknown_job")


def test_missing_model_means_not_ready_and_503(make_client, monkeypatch, tmp_path):
    settings = Settings(upload_dir=tmp_path / "up2", model_store=tmp_path / "empty")
    with TestClient(app_module.create_app(settings)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["backend"] != "ok"
        r = c.post("/predict", files={"video": ("v.mp4", video_bytes(), "video/mp4")})
        body = assert_problem(r, 503, "backend_unavailable")
        assert r.headers["retry-after"] and body["detail"]
        assert_problem(c.get("/models"), 503, "backend_unavailable")


def test_openapi_documents_the_upload_and_the_error_codes(make_client):
    c = make_client()
    spec = c.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["video"]["format"] == "binary"
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert {"200", "202", "401", "413", "415", "422", "429", "503"} <= set(responses)
    assert "upload_too_large" in responses["413"]["description"]
    assert "Problem" in spec["components"]["schemas"]


def test_metrics_count_requests_and_job_stages(make_client):
    c = make_client()
    c.post("/predict", files={"video": ("x.mp4", video_bytes(), "video/mp4")})
    c.get("/jobs/nope")
    text = c.get("/metrics").text
    assert 'djldml_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'djldml_failures_total{code="unknown_job",where="gateway"} 1.0' in text
    assert 'djldml_job_stage_seconds_count{stage="inference"} 1.0' in text
    assert "djldml_queue_depth" in text


def test_queue_down_at_enqueue_is_503_and_leaves_nothing(make_client, monkeypatch, tmp_path):
    from service.embedded import EmbeddedRunner
    from service.jobs import StoreUnavailable

    def refuse(self, job_id, upload):
        raise StoreUnavailable("broker unreachable")

    monkeypatch.setattr(EmbeddedRunner, "submit", refuse)
    c = make_client()
    r = c.post("/jobs", files={"video": ("v.mp4", video_bytes(), "video/mp4")})
    assert_problem(r, 503, "queue_unavailable")
    assert r.headers["retry-after"]
    assert list((tmp_path / "up").iterdir()) == []


def test_models_says_whether_faces_are_made_as_in_training(make_client, caplog):
    from djldml.faces import FaceConfig
    from djldml.faces.provenance import preprocessing

    class RecordingBackend(FakeBackend):
        def __init__(self, record):
            super().__init__()
            self.record = record

        def model_info(self) -> ModelInfo:
            info = super().model_info()
            info.extra["preprocessing"] = self.record
            return info

    # The service cuts clips as the card records (clip geometry in time, selection), so a fresh card matches.
    trained = preprocessing(FaceConfig(fps=25.0, temporal_stride=2, max_clips=16))
    same = make_client(RecordingBackend(trained)).get("/models").json()["models"][0]
    assert same["preprocessing"]["matches"] is True and same["preprocessing"]["differences"] == []
    assert same["preprocessing"]["recorded"]["face_config"]["temporal_stride"] == 2
    served = processing.face_config(Settings(), {"preprocessing": trained})
    assert (served.fps, served.temporal_stride, served.max_clips) == (25.0, 2, 16)

    # What the service cannot follow (another library version) is a difference, said at start-up too.
    older = {**trained, "libraries": {**trained["libraries"], "opencv": "3.4.0"}}
    with caplog.at_level("WARNING", logger="service.gateway"):
        other = make_client(RecordingBackend(older)).get("/models").json()["models"][0]
    assert other["preprocessing"]["matches"] is False
    assert len(other["preprocessing"]["differences"]) == 1
    assert other["preprocessing"]["differences"][0].startswith("opencv: trained with 3.4.0, serving with ")
    assert "opencv: trained with 3.4.0" in caplog.text  # said once at start-up

    # Each result says so too, beside the model it came from (without the whole record).
    c = make_client(RecordingBackend(older))
    r = c.post("/predict", files={"video": ("v.mp4", video_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    check = r.json()["model"]["preprocessing"]
    assert check["matches"] is False and check["recorded"] is None and len(check["differences"]) == 1

    # A card from before the clip contract in time (no fps, no selection) cannot promise the same clips.
    legacy = {**trained, "face_config": {k: v for k, v in trained["face_config"].items() if k != "fps"}}
    legacy.pop("selection")
    old_card = make_client(RecordingBackend(legacy)).get("/models").json()["models"][0]["preprocessing"]
    assert old_card["matches"] is False
    assert any("no clip frame rate" in d for d in old_card["differences"])
    assert any("no clip selection" in d for d in old_card["differences"])

    # An operator's DJLDML_MAX_CLIPS overrides the card's selection, and says so.
    overridden = make_client(RecordingBackend(trained), max_clips=4).get("/models").json()["models"][0]
    assert overridden["preprocessing"]["matches"] is False
    assert any("DJLDML_MAX_CLIPS=4" in d for d in overridden["preprocessing"]["differences"])

    unknown = make_client(FakeBackend()).get("/models").json()["models"][0]
    assert unknown["preprocessing"]["matches"] is None and len(unknown["preprocessing"]["differences"]) == 1


def test_open_api_is_refused_off_loopback_unless_explicitly_allowed():
    from service.__main__ import open_api_refusal

    assert open_api_refusal(Settings(api_keys=[]), "0.0.0.0")
    assert open_api_refusal(Settings(api_keys=[]), "gateway.example")  # a name may resolve to anything
    assert open_api_refusal(Settings(api_keys=[]), "127.0.0.1") is None  # a local development server
    assert open_api_refusal(Settings(api_keys=[]), "::1") is None
    assert open_api_refusal(Settings(api_keys=["k"]), "0.0.0.0") is None
    assert open_api_refusal(Settings(api_keys=[], allow_open_api=True), "0.0.0.0") is None


def test_models_shows_the_cards_inference_and_results_follow_its_calibration(make_client):
    """GET /models shows the card's inference record (input normalisation, calibration); every result is made
    with that calibration, and a card without them (an old card) is served uncalibrated, exactly as before."""
    from djldml import labels
    from djldml.calibration import Calibration
    from djldml.clips import SPORTS1M_C3D
    from djldml.prediction import predict_video

    calibration = Calibration("gaussian", sigma=5.0, fitted_on={"split": "dev", "n_videos": 9})

    class CalibratedBackend(FakeBackend):
        def model_info(self) -> ModelInfo:
            info = super().model_info()
            info.extra["inference"] = {"mirror_average": True, "calibration": calibration.to_dict(),
                                       "input_normalisation": SPORTS1M_C3D.to_dict()}
            return info

    backend = CalibratedBackend()
    c = make_client(backend)
    model = c.get("/models").json()["models"][0]
    assert model["inference"] == {"mirror_average": True, "calibration": calibration.to_dict(),
                                  "input_normalisation": SPORTS1M_C3D.to_dict()}
    r = c.post("/predict", files={"video": ("v.mp4", video_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    clips = np.stack([labels.label_distribution(clip_centre(x)) for x in fake_clips(3).clips])
    want = predict_video(clips, calibration=calibration)
    got = r.json()
    assert got["std"] == pytest.approx(want.std) and got["std"] == pytest.approx(5.0, abs=0.1)
    assert (got["interval"]["low"], got["interval"]["high"]) == want.interval

    old = make_client(FakeBackend())
    assert old.get("/models").json()["models"][0]["inference"] == {"mirror_average": False, "calibration": None,
                                                                   "input_normalisation": None}
    r = old.post("/predict", files={"video": ("v.mp4", video_bytes(), "video/mp4")})
    assert r.json()["std"] == pytest.approx(predict_video(clips).std)


def test_api_docs_pages_load_nothing_from_elsewhere(make_client):
    """/docs and /redoc name only the service's own assets (fastapi-offline), and those assets are served."""
    import re

    client = make_client()
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", r.text)
        assert urls, r.text[:500]
        assert not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
        for url in urls:
            if url.startswith("/static-offline-docs/"):
                assert client.get(url).status_code == 200, url


def test_models_and_results_name_the_engine_when_the_model_runs_here(make_client):
    """The in-process backend's engine (runtime, device, where its network came from) is shown by GET /models and
    in each result's model; a backend that does not know it (TorchServe) gives null."""
    engine = {"runtime": "openvino", "device": "cpu", "model_from": "archive IR"}

    class EngineBackend(FakeBackend):
        def model_info(self) -> ModelInfo:
            info = super().model_info()
            info.extra["engine"] = engine
            return info

    for backend, want in ((EngineBackend(), engine), (FakeBackend(), None)):
        c = make_client(backend)
        assert c.get("/models").json()["models"][0]["engine"] == want
        r = c.post("/predict", files={"video": ("v.mp4", video_bytes(), "video/mp4")})
        assert r.status_code == 200, r.text
        assert r.json()["model"]["engine"] == want
