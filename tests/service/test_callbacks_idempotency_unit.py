"""Unit tests of the callback rules (service.callbacks) and of the idempotency record's life in the memory store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from standardwebhooks import Webhook

from service import callbacks
from service.api.problems import Problem
from service.auth import ANONYMOUS, owner_of
from service.jobs import DONE, Job, MemoryJobStore
from service.settings import Settings

SECRET = "whsec_" + base64.b64encode(b"unit-test-secret").decode()


def settings(**kw) -> Settings:
    base = {"callback_hosts": "hooks.clinic.example, *.apps.example, 127.0.0.1, api.example:8443",
            "callback_secrets": f"key-a={SECRET}"}
    return Settings(**{**base, **kw})


@pytest.mark.parametrize("url", [
    "https://hooks.clinic.example/djldml", "https://HOOKS.clinic.example:444/x?y=1", "https://a.apps.example/h",
    "https://b.c.apps.example/h", "http://127.0.0.1:9000/h", "https://api.example:8443/h",
])
def test_allowed(url):
    assert callbacks.check_url(url, owner_of("key-a"), settings()) == url


@pytest.mark.parametrize("url, why", [
    ("https://evil.example/h", "allow-list"),
    ("https://apps.example/h", "allow-list"),  # *.apps.example: subdomains only
    ("https://hooks.clinic.example.evil.org/h", "allow-list"),
    ("https://api.example/h", "allow-list"),  # host:port entry: that port only
    ("http://hooks.clinic.example/h", "https"),  # plain http only to loopback
    ("https://user@hooks.clinic.example/h", "user name"),
    ("javascript:alert(1)", "https"),
    ("https://hooks.clinic.example/" + "a" * 2100, "longer"),
    ("https://[::1/h", "not a URL"),
])
def test_refused(url, why):
    with pytest.raises(Problem) as e:
        callbacks.check_url(url, owner_of("key-a"), settings())
    assert e.value.code == "callback_not_allowed" and why in e.value.detail


def test_secrets_per_key_and_default():
    s = settings(callback_secrets=f"key-a={SECRET},*=whsec_b3RoZXI=")
    assert callbacks.secret_for(owner_of("key-a"), s) == SECRET
    assert callbacks.secret_for(owner_of("key-b"), s) == "whsec_b3RoZXI="
    assert callbacks.secret_for(ANONYMOUS, s) == "whsec_b3RoZXI="
    with pytest.raises(Problem, match="callback_not_allowed"):  # no entry, no default: refused, never unsigned
        callbacks.check_url("https://hooks.clinic.example/h", owner_of("key-b"), settings())
    with pytest.raises(ValueError, match="API_KEY=SECRET"):
        Settings(callback_secrets="just-a-secret")


def test_signature_is_the_standard_webhooks_hmac():
    body = json.dumps({"type": "job.done", "data": {"id": "j1"}})
    h = callbacks.signed_headers(SECRET, "msg_j1", body, now=1_700_000_000)
    assert h["webhook-id"] == "msg_j1" and h["webhook-timestamp"] == "1700000000"
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"msg_j1.1700000000.{body}".encode(), hashlib.sha256).digest())
    assert h["webhook-signature"] == "v1," + expected.decode()
    fresh = callbacks.signed_headers(SECRET, "msg_j1", body)
    assert Webhook(SECRET).verify(body, fresh) == json.loads(body)  # what a receiver's library accepts


def test_retry_delays_double_up_to_a_minute():
    s = settings(callback_retry_delay_s=1.0)
    assert [callbacks.retry_delay_s(s, n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_memory_store_key_record_lives_and_dies_with_its_job():
    store = MemoryJobStore(ttl_s=60)
    assert store.claim_key("scope", "first") is None
    assert store.claim_key("scope", "second") == "first"  # the first claim stands
    store.create(Job(id="j1", owner="o", idempotency="scope"))
    store.put_preview("j1", b"jpeg")
    store.update("j1", status=DONE)
    assert store.key_record("scope") == "first" and store.get_preview("j1") == b"jpeg"
    store.delete("j1")
    assert store.key_record("scope") is None and store.get_preview("j1") is None
    store.claim_key("other", "x")
    store.release_key("other")
    assert store.key_record("other") is None


def test_job_documents_of_older_and_newer_versions_load():
    old = json.dumps({"id": "j", "owner": "o"})  # written before callback_url / idempotency existed
    assert Job.from_json(old).callback_url is None
    newer = json.dumps({"id": "j", "owner": "o", "a_field_from_the_future": 1})
    assert Job.from_json(newer).id == "j"


def test_idempotency_rules():
    from service import idempotency

    rec = idempotency.KeyRecord("j1", "fp")
    assert idempotency.replayed_job_id(rec, "fp", job_exists=True) == "j1"
    with pytest.raises(Problem) as e:
        idempotency.replayed_job_id(rec, "other", job_exists=True)
    assert e.value.code == "idempotency_key_reused" and e.value.status == 422
    with pytest.raises(Problem) as e:
        idempotency.replayed_job_id(rec, "fp", job_exists=False)
    assert e.value.code == "idempotency_key_in_use" and e.value.status == 409
    old = idempotency.KeyRecord("j1", "fp", claimed_at=0.0)
    assert old.stale and not rec.stale
    assert idempotency.KeyRecord.from_json(rec.to_json()) == rec
    assert idempotency.scope_of("a", "k") != idempotency.scope_of("b", "k")  # per API key
    assert idempotency.fingerprint("v", {"callback_url": "", "faces_preview": "False"}) != idempotency.fingerprint(
        "v", {"callback_url": "https://x", "faces_preview": "False"})


def test_openapi_documents_the_header_the_fields_and_the_callback():
    from service.app import create_app

    doc = create_app(Settings()).openapi()
    for path in ("/jobs", "/predict"):
        op = doc["paths"][path]["post"]
        header = {p["name"]: p for p in op["parameters"] if p["in"] == "header"}
        assert "Idempotency-Key" in header and "same key" in header["Idempotency-Key"]["description"]
        props = op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        assert {"video", "callback_url", "faces_preview"} <= set(props)
        cb = op["callbacks"]["jobEnded"]["{$request.body#/callback_url}"]["post"]
        assert cb["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/CallbackEvent")
        assert {p["name"] for p in cb["parameters"]} == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert "Idempotent-Replayed" in op["responses"]["202"]["headers"]
        codes = " ".join(str(v.get("description", "")) for v in op["responses"].values())
        assert all(c in codes for c in ("idempotency_key_reused", "idempotency_key_in_use", "callback_not_allowed"))
    event = doc["components"]["schemas"]["CallbackEvent"]
    assert set(event["properties"]) == {"type", "timestamp", "data"}
    assert "/jobs/{job_id}/faces" in doc["paths"]
