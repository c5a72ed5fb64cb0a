"""``Idempotency-Key`` on ``POST /jobs`` and ``POST /predict``: a retried upload returns the job the first one made.

Semantics follow the IETF draft *The Idempotency-Key HTTP Header Field* (draft-ietf-httpapi-idempotency-key-header):

- the key is scoped to the API key that sent it (two clinics may pick the same key without meeting);
- the *fingerprint* of a request is the SHA-256 of the video's bytes (hashed while the upload streams; the
  multipart boundary, file name and part order do not count, since a retry may change them) together with the
  form fields that change what the job does (``callback_url``, ``faces_preview``);
- same key, same fingerprint → the same job (``Idempotent-Replayed: true``), never a second one;
- same key, another fingerprint → 422 ``idempotency_key_reused`` (the draft's "Unprocessable Content");
- same key while the first request is still between "body received" and "job created" → 409
  ``idempotency_key_in_use`` (the draft's "Conflict"); retry after a moment.

The record (scope → job id, fingerprint) is claimed in one atomic store step (a Redis script; a lock in embedded
mode), lives as long as its job (the job TTL, renewed when the job ends) and is deleted with the job. A request
refused before its job exists (``not_a_video``, ``too_many_jobs`` …) claims nothing, so it can be retried with
the same key once fixed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

from .api.problems import Problem

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
#: A claim whose job does not exist this long after it was made was abandoned (its request died between the
#: claim and the job's creation, and the release failed too): the next retry frees it.
STALE_CLAIM_S = 60.0


def check_key(key: str | None) -> str | None:
    """The header's value, or None when absent; raises Problem("invalid_request") unless it is 1–255 visible
    ASCII characters (a UUID is the usual choice). The draft's sf-string quotes, if sent, are part of the key."""
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_CHARS or not all(0x21 <= ord(c) <= 0x7E for c in key):
        raise Problem("invalid_request", f"{HEADER} must be 1–{MAX_KEY_CHARS} visible ASCII characters")
    return key


def scope_of(owner: str, key: str) -> str:
    """The store's name for ``key`` sent by ``owner`` (hex SHA-256, so the key itself is never stored)."""
    return hashlib.sha256(f"{owner}\x00{key}".encode()).hexdigest()


def fingerprint(video_sha256: str, fields: dict[str, str]) -> str:
    """Hex SHA-256 over the video's SHA-256 and the form fields that change the job (sorted by name)."""
    return hashlib.sha256(json.dumps([video_sha256, sorted(fields.items())]).encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    job_id: str
    fingerprint: str
    claimed_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps({"job_id": self.job_id, "fingerprint": self.fingerprint, "claimed_at": self.claimed_at})

    @classmethod
    def from_json(cls, s: str) -> KeyRecord:
        d = json.loads(s)
        return cls(d["job_id"], d["fingerprint"], float(d.get("claimed_at", 0.0)))

    @property
    def stale(self) -> bool:
        return time.time() - self.claimed_at > STALE_CLAIM_S


def replayed_job_id(record: KeyRecord, request_fingerprint: str, job_exists: bool) -> str:
    """The job a retry gets; raises Problem ``idempotency_key_reused`` (another request's key) or
    ``idempotency_key_in_use`` (the first request has not created its job yet, or gave up: see STALE_CLAIM_S)."""
    if record.fingerprint != request_fingerprint:
        raise Problem("idempotency_key_reused",
                      f"this {HEADER} was used for a different upload (another video or other form fields); "
                      "use a new key for a new request")
    if not job_exists:
        raise Problem("idempotency_key_in_use", f"the first request with this {HEADER} is still being processed"
                      if not record.stale else f"the first request with this {HEADER} was abandoned; retry")
    return record.job_id
