"""The job store: status, progress, result or error of each job, kept for ``JOB_TTL_S``.

Two implementations with one interface: ``RedisJobStore`` (the full stack: the gateway and every worker share
it) and ``MemoryJobStore`` (embedded mode). A job is a small JSON document; the gateway creates it, the worker
moves it queued → preprocessing → inferring → done | failed. Terminal states are final: a second delivery of
the same task (at-least-once queueing) cannot overwrite them, which is what makes the task idempotent.

The store also carries two small things the gateway needs from the workers: the per-key slots of unfinished
jobs (the concurrency limit, taken as an atomic reservation before the upload streams in) and finished-job
events (stage timings, failure codes) for /metrics, which the gateway drains at scrape time so that one process
exposes all metrics.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from enum import StrEnum
from typing import Any, Protocol

import tenacity
from pydantic import BaseModel, ConfigDict, Field


class JobState(StrEnum):
    """A job's status, the one list of them (the API's ``status`` field is this enum): queued → preprocessing →
    inferring → done | failed. A StrEnum, so the stored JSON holds the plain strings."""

    queued = "queued"
    preprocessing = "preprocessing"
    inferring = "inferring"
    done = "done"
    failed = "failed"


QUEUED, PREPROCESSING, INFERRING, DONE, FAILED = (JobState.queued, JobState.preprocessing, JobState.inferring,
                                                  JobState.done, JobState.failed)
TERMINAL = frozenset({DONE, FAILED})


log = logging.getLogger("service.jobs")


class StoreUnavailable(Exception):
    """The job store (Redis) cannot be reached."""

    code = "queue_unavailable"


class Job(BaseModel):
    """A job's record: a JSON document in the store, checked by pydantic both ways. A document written by a newer
    version may carry more fields (ignored); an update naming a field that does not exist, or a value of the
    wrong type, is refused (ValidationError) instead of being stored or silently dropped."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    id: str
    owner: str  # hash of the API key ("anonymous" when the API is open); never the key itself
    status: JobState = JobState.queued
    progress: float = 0.0
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # {"code", "detail"}
    attempts: int = 0  # deliveries that started processing (>1 after a redelivery)
    upload: str | None = None  # the upload's path, so a sweeper can re-enqueue the job (never shown to clients)
    callback_url: str | None = None  # POSTed the job's end (service.callbacks); checked against the allow-list
    idempotency: str | None = None  # the scope of its Idempotency-Key record (service.idempotency), if any
    faces_preview: bool = False  # keep a contact sheet of the aligned faces with the job (on request)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def updated(self, changes: dict[str, Any]) -> Job:
        """A copy with ``changes`` applied and checked, and ``updated_at`` now; ValueError (pydantic's
        ValidationError is one) for a field that does not exist or a value of the wrong type."""
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise ValueError(f"no such job field(s): {unknown}")
        return type(self).model_validate({**self.model_dump(), **changes, "updated_at": time.time()})

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, s: str | bytes) -> Job:
        return cls.model_validate_json(s)


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore(Protocol):
    def create(self, job: Job) -> None: ...
    def get(self, job_id: str) -> Job | None: ...
    def update(self, job_id: str, **changes: Any) -> Job | None:
        """Apply ``changes`` unless the job is gone or already finished; return the stored job (None if gone)."""
    def delete(self, job_id: str) -> bool: ...
    def reserve(self, owner: str, job_id: str, limit: int) -> bool:
        """Atomically take one of ``owner``'s ``limit`` slots for ``job_id`` (False: all taken). Slots are held by
        unfinished jobs and by reservations; ``create(job)`` turns the reservation into the job's slot."""
    def release(self, owner: str, job_id: str) -> None:
        """Give back a reservation whose job was never created (the upload failed)."""
    def reserved(self, job_id: str) -> bool:
        """True while ``job_id`` is reserved and its job not yet created (its upload is being received)."""
    def active_count(self, owner: str) -> int:
        """Slots in use: unfinished jobs plus reservations."""
    def take_lease(self, job_id: str, holder: str, ttl_s: float) -> bool:
        """Hold (or renew) the job's run lease for ``ttl_s``; False when another holder has it."""
    def drop_lease(self, job_id: str, holder: str) -> None: ...
    def has_lease(self, job_id: str) -> bool: ...
    def record_finished(self, event: dict[str, Any]) -> None: ...
    def drain_finished(self) -> list[dict[str, Any]]: ...
    def ping(self) -> tuple[bool, str]: ...
    def claim_key(self, scope: str, record: str) -> str | None:
        """Atomically store ``record`` under the idempotency ``scope`` unless one is there; returns the record
        that was there (None: claimed). The record lives for the job TTL, renewed when its job ends, and goes
        when its job is deleted."""
    def key_record(self, scope: str) -> str | None: ...
    def release_key(self, scope: str) -> None:
        """Forget a claim whose job was never created."""
    def put_preview(self, job_id: str, image: bytes) -> None:
        """Keep the job's contact sheet (JPEG bytes) for as long as the job; deleted with it."""
    def get_preview(self, job_id: str) -> bytes | None: ...
    def drop_preview(self, job_id: str) -> None: ...


class MemoryJobStore:
    """Embedded mode: a dict guarded by a lock; expired jobs are dropped lazily."""

    def __init__(self, ttl_s: int):
        self.ttl_s = ttl_s
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._events: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._reserved: dict[str, tuple[str, float]] = {}  # job id → (owner, expiry)
        self._leases: dict[str, tuple[str, float]] = {}  # job id → (holder, expiry)
        self._keys: dict[str, tuple[str, float]] = {}  # idempotency scope → (record, expiry)
        self._previews: dict[str, bytes] = {}  # job id → contact sheet

    def _expire(self) -> None:
        now = time.time()
        cutoff = now - self.ttl_s
        for jid in [j.id for j in self._jobs.values() if j.updated_at < cutoff]:
            self._drop(jid)
        for jid in [jid for jid, (_, until) in self._reserved.items() if until < now]:
            del self._reserved[jid]
        for scope in [sc for sc, (_, until) in self._keys.items() if until < now]:
            del self._keys[scope]

    def _drop(self, job_id: str) -> Job | None:
        job = self._jobs.pop(job_id, None)
        self._previews.pop(job_id, None)
        if job is not None and job.idempotency:
            self._keys.pop(job.idempotency, None)
        return job

    def _in_use(self, owner: str) -> int:
        return (sum(1 for j in self._jobs.values() if j.owner == owner and not j.finished)
                + sum(1 for o, _ in self._reserved.values() if o == owner))

    def create(self, job: Job) -> None:
        with self._lock:
            self._expire()
            self._jobs[job.id] = Job.from_json(job.to_json())
            self._reserved.pop(job.id, None)

    def reserve(self, owner: str, job_id: str, limit: int) -> bool:
        with self._lock:
            self._expire()
            if self._in_use(owner) >= limit:
                return False
            self._reserved[job_id] = (owner, time.time() + self.ttl_s)
            return True

    def release(self, owner: str, job_id: str) -> None:
        with self._lock:
            self._reserved.pop(job_id, None)

    def reserved(self, job_id: str) -> bool:
        with self._lock:
            self._expire()
            return job_id in self._reserved

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
            return Job.from_json(job.to_json()) if job else None

    def update(self, job_id: str, **changes: Any) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if not job.finished:
                job = self._jobs[job_id] = job.updated(changes)
                if job.finished and job.idempotency in self._keys:  # the key lives as long as its job
                    self._keys[job.idempotency] = (self._keys[job.idempotency][0], job.updated_at + self.ttl_s)
            return Job.from_json(job.to_json())

    def delete(self, job_id: str) -> bool:
        with self._lock:
            return self._drop(job_id) is not None

    def active_count(self, owner: str) -> int:
        with self._lock:
            self._expire()
            return self._in_use(owner)

    def take_lease(self, job_id: str, holder: str, ttl_s: float) -> bool:
        with self._lock:
            current = self._leases.get(job_id)
            if current and current[0] != holder and current[1] > time.time():
                return False
            self._leases[job_id] = (holder, time.time() + ttl_s)
            return True

    def drop_lease(self, job_id: str, holder: str) -> None:
        with self._lock:
            if self._leases.get(job_id, ("",))[0] == holder:
                del self._leases[job_id]

    def has_lease(self, job_id: str) -> bool:
        with self._lock:
            current = self._leases.get(job_id)
            return bool(current and current[1] > time.time())

    def record_finished(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def drain_finished(self) -> list[dict[str, Any]]:
        out = []
        while self._events:
            out.append(self._events.popleft())
        return out

    def ping(self) -> tuple[bool, str]:
        return True, ""

    def claim_key(self, scope: str, record: str) -> str | None:
        with self._lock:
            self._expire()
            if scope in self._keys:
                return self._keys[scope][0]
            self._keys[scope] = (record, time.time() + self.ttl_s)
            return None

    def key_record(self, scope: str) -> str | None:
        with self._lock:
            self._expire()
            return self._keys.get(scope, (None,))[0]

    def release_key(self, scope: str) -> None:
        with self._lock:
            self._keys.pop(scope, None)

    def put_preview(self, job_id: str, image: bytes) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._previews[job_id] = image

    def get_preview(self, job_id: str) -> bytes | None:
        with self._lock:
            self._expire()
            return self._previews.get(job_id)

    def drop_preview(self, job_id: str) -> None:
        with self._lock:
            self._previews.pop(job_id, None)


def _failure(attempt: tenacity.RetryCallState | tenacity.Future) -> str:
    """The class name of what a failed attempt raised (never its message: it may hold keys or hosts)."""
    outcome = attempt.outcome if isinstance(attempt, tenacity.RetryCallState) else attempt
    return outcome.exception().__class__.__name__ if outcome is not None else "unknown"


class RedisJobStore:
    """Full stack: one Redis key per job (JSON, with TTL), a set of unfinished job ids per owner.

    Updates run in a WATCH/MULTI transaction so that a finished job is never reopened by a late writer.
    Short socket timeouts make a dead Redis a fast ``StoreUnavailable`` instead of a hang — at once for the
    gateway (``patience_s=0``: a client gets 503 and retries), while a worker (``patience_s`` > 0) retries each
    operation with doubling delays (0.2 s … 2 s) for up to ``patience_s`` seconds, so a Redis that stalls or
    restarts does not cost the job it is running. Every operation is safe to repeat (SET, SADD, a re-read
    transaction); at worst a repeated RPUSH counts a finished-job event twice in /metrics.
    """

    PREFIX = "djldml:job:"
    ACTIVE = "djldml:active:"
    RESERVED = "djldml:reserved:"
    LEASE = "djldml:lease:"
    EVENTS = "djldml:finished-events"
    KEY = "djldml:idempotency:"
    PREVIEW = "djldml:preview:"

    # One atomic step (Redis runs a script alone): prune the owner's set of ids that are neither an unfinished
    # job nor a live reservation, count the rest, and — when ARGV[1] is a job id and the count is under the
    # limit — add the reservation. Returns the count before adding. (Keys besides KEYS[1] are derived in the
    # script: fine on one Redis server, which is what the service uses; not for Redis Cluster.) ARGV[6], ARGV[7]:
    # the terminal states (JobState), so the script holds no copy of them.
    _RESERVE_LUA = """
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local raw = redis.call('GET', ARGV[4] .. id)
  local alive
  if raw then
    local st = cjson.decode(raw)['status']
    alive = st ~= ARGV[6] and st ~= ARGV[7]
  else
    alive = redis.call('EXISTS', ARGV[5] .. id) == 1
  end
  if alive then n = n + 1 else redis.call('SREM', KEYS[1], id) end
end
if ARGV[1] ~= '' and n < tonumber(ARGV[2]) then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('SET', ARGV[5] .. ARGV[1], '1', 'EX', ARGV[3])
end
return n
"""
    _TAKE_LEASE_LUA = """
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
    # Claim an idempotency key: one step, so two requests with the same key cannot both create a job.
    _CLAIM_KEY_LUA = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""
    _DROP_LEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

    def __init__(self, url: str, ttl_s: int, patience_s: float = 0.0):
        import redis

        self._redis_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._watch_error = redis.exceptions.WatchError
        self.ttl_s, self.patience_s = ttl_s, patience_s
        self.r = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=3.0,
                                      health_check_interval=10, retry_on_timeout=False)
        self._reserve = self.r.register_script(self._RESERVE_LUA)
        self._take_lease = self.r.register_script(self._TAKE_LEASE_LUA)
        self._drop_lease = self.r.register_script(self._DROP_LEASE_LUA)
        self._claim_key = self.r.register_script(self._CLAIM_KEY_LUA)

    def _call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``; a Redis error is retried after 0.2, 0.4, … 2 s (tenacity) while the next try
        still falls within ``patience_s``, then becomes StoreUnavailable."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(self._redis_errors),
            wait=tenacity.wait_exponential(multiplier=0.2, max=2.0),
            stop=tenacity.stop_before_delay(self.patience_s),
            before_sleep=lambda state: log.warning(
                "job store unreachable (%s); retrying in %.1f s", _failure(state), state.upcoming_sleep),
        )
        try:
            return retrying(fn, *args, **kwargs)
        except tenacity.RetryError as exc:
            raise StoreUnavailable(f"job store unreachable: {_failure(exc.last_attempt)}") from None

    def create(self, job: Job) -> None:
        def tx():
            p = self.r.pipeline()
            p.set(self.PREFIX + job.id, job.to_json(), ex=self.ttl_s)
            p.sadd(self.ACTIVE + job.owner, job.id)
            p.expire(self.ACTIVE + job.owner, self.ttl_s)
            p.delete(self.RESERVED + job.id)  # the job now holds the slot
            p.execute()

        self._call(tx)

    def get(self, job_id: str) -> Job | None:
        raw = self._call(self.r.get, self.PREFIX + job_id)
        return Job.from_json(raw) if raw else None

    def update(self, job_id: str, **changes: Any) -> Job | None:
        key = self.PREFIX + job_id

        def tx(pipe) -> Job | None:
            raw = pipe.get(key)
            if not raw:
                return None
            job = Job.from_json(raw)
            if job.finished:
                return job
            job = job.updated(changes)
            pipe.multi()
            pipe.set(key, job.to_json(), ex=self.ttl_s)
            if job.finished:
                pipe.srem(self.ACTIVE + job.owner, job.id)
                pipe.expire(self.PREVIEW + job.id, self.ttl_s)  # both live as long as the job (no-op if absent)
                if job.idempotency:
                    pipe.expire(self.KEY + job.idempotency, self.ttl_s)
            return job

        return self._call(self.r.transaction, tx, key, value_from_callable=True)

    def delete(self, job_id: str) -> bool:
        job = self.get(job_id)
        if job is None:
            return False
        keys = [self.PREFIX + job_id, self.PREVIEW + job_id] + ([self.KEY + job.idempotency] if job.idempotency else [])
        self._call(lambda: self.r.pipeline().delete(*keys).srem(self.ACTIVE + job.owner, job_id).execute())
        return True

    def _run_reserve(self, owner: str, job_id: str, limit: int) -> int:
        return int(self._call(self._reserve, keys=[self.ACTIVE + owner],
                              args=[job_id, limit, self.ttl_s, self.PREFIX, self.RESERVED, DONE, FAILED]))

    def reserve(self, owner: str, job_id: str, limit: int) -> bool:
        return self._run_reserve(owner, job_id, limit) < limit

    def release(self, owner: str, job_id: str) -> None:
        self._call(lambda: self.r.pipeline().srem(self.ACTIVE + owner, job_id).delete(self.RESERVED + job_id)
                   .execute())

    def reserved(self, job_id: str) -> bool:
        return bool(self._call(self.r.exists, self.RESERVED + job_id))

    def active_count(self, owner: str) -> int:
        return self._run_reserve(owner, "", 0)

    def take_lease(self, job_id: str, holder: str, ttl_s: float) -> bool:
        return bool(self._call(self._take_lease, keys=[self.LEASE + job_id], args=[holder, int(ttl_s * 1000)]))

    def drop_lease(self, job_id: str, holder: str) -> None:
        self._call(self._drop_lease, keys=[self.LEASE + job_id], args=[holder])

    def has_lease(self, job_id: str) -> bool:
        return bool(self._call(self.r.exists, self.LEASE + job_id))

    def record_finished(self, event: dict[str, Any]) -> None:
        def tx():
            p = self.r.pipeline()
            p.rpush(self.EVENTS, json.dumps(event))
            p.ltrim(self.EVENTS, -10_000, -1)  # bounded if nobody scrapes
            p.execute()

        self._call(tx)

    def drain_finished(self) -> list[dict[str, Any]]:
        def tx():
            p = self.r.pipeline()
            p.lrange(self.EVENTS, 0, -1)
            p.delete(self.EVENTS)
            return p.execute()[0]

        return [json.loads(x) for x in self._call(tx)]

    def ping(self) -> tuple[bool, str]:
        try:
            self.r.ping()
            return True, ""
        except Exception as exc:  # any failure means not ready; the reason is for the operator
            return False, f"redis unreachable: {exc.__class__.__name__}"

    def claim_key(self, scope: str, record: str) -> str | None:
        found = self._call(self._claim_key, keys=[self.KEY + scope], args=[record, self.ttl_s])
        return found.decode() if isinstance(found, bytes) else found

    def key_record(self, scope: str) -> str | None:
        found = self._call(self.r.get, self.KEY + scope)
        return found.decode() if isinstance(found, bytes) else found

    def release_key(self, scope: str) -> None:
        self._call(self.r.delete, self.KEY + scope)

    def put_preview(self, job_id: str, image: bytes) -> None:
        self._call(self.r.set, self.PREVIEW + job_id, image, ex=self.ttl_s)

    def get_preview(self, job_id: str) -> bytes | None:
        return self._call(self.r.get, self.PREVIEW + job_id)

    def drop_preview(self, job_id: str) -> None:
        self._call(self.r.delete, self.PREVIEW + job_id)
