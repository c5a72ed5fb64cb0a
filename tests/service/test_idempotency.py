"""Idempotency-Key on POST /jobs and POST /predict, against real processes in both modes (embedded: the
in-memory store; stack: Redis + Celery + TorchServe). Same key + same upload + same API key → the same job."""

from __future__ import annotations

import uuid

import pytest

from tests.service.conftest import KEY, OTHER_KEY, wait_job
from tests.service.fakes import all_at_once
from tests.service.test_api import assert_problem, upload

pytestmark = pytest.mark.integration


def _post(client, path, video, key, **data):
    return client.post(path, files=upload(video), data=data, headers={"Idempotency-Key": key})


def test_same_key_same_upload_is_the_same_job(service, videos):
    key = str(uuid.uuid4())
    with service.client() as c:
        first = _post(c, "/jobs", videos["face"], key)
        assert first.status_code == 202, first.text
        assert "idempotent-replayed" not in first.headers
        again = _post(c, "/jobs", videos["face"], key)  # a retry: new multipart boundary, same bytes
        assert again.status_code == 202, again.text
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
        assert again.headers["location"] == first.headers["location"]
        done = wait_job(c, first.json()["id"])
        assert done["status"] == "done"
        # POST /predict with the same key and upload answers with that job's result, not a new job's
        r = _post(c, "/predict", videos["face"], key)
        assert r.status_code == 200, r.text
        assert r.json()["job_id"] == first.json()["id"] and r.headers["idempotent-replayed"] == "true"
        assert r.json()["bdi_score"] == done["result"]["bdi_score"]
    assert list(service.upload_dir.iterdir()) == []  # the retries' bodies were read and deleted


def test_same_key_different_upload_is_refused(service, videos):
    key = str(uuid.uuid4())
    with service.client() as c:
        first = _post(c, "/jobs", videos["face"], key)
        assert first.status_code == 202, first.text
        body = assert_problem(_post(c, "/jobs", videos["few_face_clips"], key), 422, "idempotency_key_reused")
        assert "different" in body["detail"]
        # a form field that changes the job is part of the request too
        assert_problem(_post(c, "/jobs", videos["face"], key, faces_preview="true"), 422, "idempotency_key_reused")
        # the key is the API key's: another key's same Idempotency-Key is another request
        other = c.post("/jobs", files=upload(videos["face"]), headers={"Idempotency-Key": key, "X-API-Key": OTHER_KEY})
        assert other.status_code == 202, other.text
        assert other.json()["id"] != first.json()["id"]
        wait_job(c, first.json()["id"])
    with service.client(OTHER_KEY) as c:
        wait_job(c, other.json()["id"])


def test_simultaneous_retries_make_one_job(service, videos):
    """Five identical requests at once: one job; each answer is that job (202) or 409 while it is being made."""
    key = str(uuid.uuid4())
    data = videos["face"].read_bytes()

    def send(_):
        with service.client() as c:
            return c.post("/jobs", files={"video": ("v.mp4", data, "video/mp4")}, headers={"Idempotency-Key": key})

    answers = all_at_once(5, send)
    ids = {r.json()["id"] for r in answers if r.status_code == 202}
    assert len(ids) == 1, [(r.status_code, r.text[:80]) for r in answers]
    for r in answers:
        if r.status_code != 202:
            assert_problem(r, 409, "idempotency_key_in_use")
            assert int(r.headers["retry-after"]) > 0
    with service.client() as c:
        assert wait_job(c, ids.pop())["status"] == "done"


def test_refused_request_claims_nothing_and_delete_frees_the_key(service, videos):
    key = str(uuid.uuid4())
    with service.client() as c:
        assert_problem(_post(c, "/jobs", videos["text"], key), 422, "not_a_video")
        first = _post(c, "/jobs", videos["face"], key)  # the key was not spent by the refused request
        assert first.status_code == 202 and "idempotent-replayed" not in first.headers, first.text
        wait_job(c, first.json()["id"])
        assert c.delete(first.headers["location"]).status_code == 204
        again = _post(c, "/jobs", videos["face"], key)  # the job and its key record are gone together
        assert again.status_code == 202 and again.json()["id"] != first.json()["id"], again.text
        wait_job(c, again.json()["id"])


@pytest.mark.parametrize("bad", ["", "x" * 256, "naïve-key", "two words"])
def test_malformed_key_is_a_typed_error(embedded_service, videos, bad):
    with embedded_service.client() as c:
        r = c.post("/jobs", files=upload(videos["face"]), headers={"Idempotency-Key": bad.encode("utf-8")})
        assert_problem(r, 422, "invalid_request")


def test_redis_key_record_expires_with_the_job(stack_service, videos):
    import redis

    from service.auth import owner_of
    from service.idempotency import scope_of
    from service.jobs import RedisJobStore

    key = str(uuid.uuid4())
    r = redis.Redis.from_url(stack_service.stack.env["DJLDML_BROKER_URL"])
    with stack_service.client() as c:
        job_id = _post(c, "/jobs", videos["face"], key).json()["id"]
        wait_job(c, job_id)
        record = RedisJobStore.KEY + scope_of(owner_of(KEY), key)
        assert key not in record  # stored under a hash: the client's key is not in Redis
        ttl_record, ttl_job = r.ttl(record), r.ttl(RedisJobStore.PREFIX + job_id)
        assert 0 < ttl_record <= ttl_job + 1 and abs(ttl_record - ttl_job) <= 2, (ttl_record, ttl_job)
        assert c.delete(f"/jobs/{job_id}").status_code == 204
        assert r.exists(record) == 0
