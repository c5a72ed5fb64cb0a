"""The contact sheet of aligned faces (``faces_preview=true``), in both modes: made only on request, served to
the job's key only, deleted with the job (from memory, or from Redis)."""

from __future__ import annotations

import pytest

from tests.service.conftest import OTHER_KEY, wait_job
from tests.service.test_api import assert_problem, upload

pytestmark = pytest.mark.integration


def test_contact_sheet_on_request_and_gone_with_the_job(service, videos):
    with service.client() as c:
        plain = c.post("/jobs", files=upload(videos["face"])).json()
        asked = c.post("/jobs", files=upload(videos["face"]), data={"faces_preview": "true"}).json()
        assert asked["faces_preview"] is True and plain["faces_preview"] is False
        plain, asked = wait_job(c, plain["id"]), wait_job(c, asked["id"])
        assert "faces" not in plain["links"]
        assert_problem(c.get(f"/jobs/{plain['id']}/faces"), 404, "no_faces_preview")
        r = c.get(asked["links"]["faces"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text[:200]
        assert r.content[:3] == b"\xff\xd8\xff" and r.headers["cache-control"] == "no-store"
        assert_problem(c.get(asked["links"]["faces"], headers={"X-API-Key": OTHER_KEY}), 404, "unknown_job")
        assert c.delete(f"/jobs/{asked['id']}").status_code == 204
        assert_problem(c.get(asked["links"]["faces"]), 404, "unknown_job")
    if service.mode == "stack":
        import redis

        from service.jobs import RedisJobStore

        r = redis.Redis.from_url(service.stack.env["DJLDML_BROKER_URL"])
        assert r.exists(RedisJobStore.PREVIEW + asked["id"]) == 0
