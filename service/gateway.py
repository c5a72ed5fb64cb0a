"""What the routes do: accept an upload as a job, wait for it, report on it. One object per app (app.state).

The checks that cost nothing run before the body is read (key, per-key job limit, queue and backend up), so a
refused request never streams a gigabyte first. The per-key limit is a reservation, not a count (see submit).
Blocking calls (Redis, probing the file) run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from anyio import to_thread
from fastapi import Request

from djldml.errors import DJLDMLError
from djldml.faces import probe

from . import callbacks, idempotency
from .api import schemas
from .api.problems import PROBLEMS, Problem
from .api.upload import ReceivedUpload, receive_video
from .backends.base import BackendUnavailable, InferenceBackend, ModelInfo
from .jobs import Job, JobStore, StoreUnavailable, new_job_id
from .metrics import Metrics
from .processing import face_config, preprocessing_check
from .settings import Settings
from .storage import StorageUnavailable, UploadStorage

log = logging.getLogger("service.gateway")

_POLL_S = 0.1
_READY_CACHE_S = 2.0
#: The upload's text form fields besides ``video`` (both part of the Idempotency-Key fingerprint).
FORM_FIELDS = ("callback_url", "faces_preview")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    replayed: bool  # an Idempotency-Key retry: the job the first request made


class Gateway:
    def __init__(self, settings: Settings, store: JobStore, storage: UploadStorage, backend: InferenceBackend,
                 runner, metrics: Metrics):
        self.settings, self.store, self.storage, self.backend, self.runner = settings, store, storage, backend, runner
        self.metrics = metrics
        self._backend_state: tuple[float, bool, str] = (0.0, False, "")

    # ------------------------------------------------------------------------------------------ submit, wait
    async def submit(self, request: Request, owner: str, idempotency_key: str | None = None) -> Submitted:
        """Reserve a slot of the key's job limit, stream the upload to storage, create the job, enqueue it.

        The slot is one atomic store operation taken before the body is read (so N simultaneous uploads against
        a limit K accept exactly K) and given back on any failure before the job exists; once it exists, the
        job holds the slot until it ends, is deleted or expires. With an ``idempotency_key`` (service.idempotency)
        a request whose key is known gets that key's job instead (no slot, no new job), and a new key is claimed
        atomically just before the job is created. Form fields: ``callback_url`` (checked against the allow-list
        as soon as its part ends) and ``faces_preview``."""
        scope = idempotency.scope_of(owner, idempotency_key) if idempotency_key else None
        known = await self._store_op_in_thread(self.store.key_record, scope) if scope else None
        if known is not None:  # a retry: read the body only to compare it with the first request's
            upload = await self._receive(request, owner, new_job_id())
            self.storage.delete(upload.path)
            return await self._replay(scope, idempotency.KeyRecord.from_json(known), self._fingerprint(upload))

        limit = self.settings.max_concurrent_jobs_per_key
        job_id = new_job_id()
        if not await self._store_op_in_thread(self.store.reserve, owner, job_id, limit):
            raise Problem("too_many_jobs", f"this key has {limit} unfinished jobs, the limit")
        created = False
        try:
            ok, reason = await to_thread.run_sync(self.backend_ready)
            if not ok:
                raise Problem("backend_unavailable", reason)
            upload = await self._receive(request, owner, job_id)
            try:
                await to_thread.run_sync(self._probe, upload.path)
                fields = upload.fields
                job = Job(id=job_id, owner=owner, upload=str(upload.path), callback_url=fields.get("callback_url"),
                          faces_preview=_truthy(fields.get("faces_preview")), idempotency=scope)
                if scope:
                    record = idempotency.KeyRecord(job_id, self._fingerprint(upload))
                    found = await self._store_op_in_thread(self.store.claim_key, scope, record.to_json())
                    if found is not None:  # the same key won a race with this request: its job, not ours
                        self.storage.delete(upload.path)
                        return await self._replay(scope, idempotency.KeyRecord.from_json(found),
                                                  record.fingerprint)
                try:
                    await self._store_op_in_thread(self.store.create, job)
                    created = True
                    await to_thread.run_sync(self.runner.submit, job.id, upload.path)
                except StoreUnavailable as exc:
                    await to_thread.run_sync(self._forget, job.id)
                    raise Problem("queue_unavailable", str(exc)) from None
                finally:
                    if scope and not created:
                        with contextlib.suppress(StoreUnavailable):  # else it expires with the job TTL
                            await to_thread.run_sync(self.store.release_key, scope)
            except BaseException:
                with contextlib.suppress(StorageUnavailable):  # the sweeper deletes it once the store is back
                    self.storage.delete(upload.path)
                raise
        finally:
            if not created:
                with contextlib.suppress(StoreUnavailable):  # else the reservation expires on its own
                    await to_thread.run_sync(self.store.release, owner, job_id)
        self.metrics.upload_bytes.inc(upload.size)
        return Submitted(job.id, replayed=False)

    async def _receive(self, request: Request, owner: str, name: str) -> ReceivedUpload:
        def check(field: str, value: str) -> None:
            if field == "callback_url" and value:
                callbacks.check_url(value, owner, self.settings)

        try:
            return await receive_video(request, self.storage, self.settings.max_upload_bytes,
                                       self.settings.upload_idle_timeout_s, name=name, text_fields=FORM_FIELDS,
                                       check_field=check)
        except StorageUnavailable as exc:  # the object store, not the client: 503, retry later
            raise Problem(exc.code, str(exc)) from None

    @staticmethod
    def _fingerprint(upload: ReceivedUpload) -> str:
        fields = {k: upload.fields.get(k, "") for k in FORM_FIELDS}
        fields["faces_preview"] = str(_truthy(fields["faces_preview"]))
        return idempotency.fingerprint(upload.sha256, fields)

    async def _replay(self, scope: str, record: idempotency.KeyRecord, fingerprint: str) -> Submitted:
        job = await self._store_op_in_thread(self.store.get, record.job_id)
        if job is None and record.stale and record.fingerprint == fingerprint:
            # abandoned: this answer is 409, the next retry is new
            await self._store_op_in_thread(self.store.release_key, scope)
        return Submitted(idempotency.replayed_job_id(record, fingerprint, job is not None), replayed=True)

    def _probe(self, ref) -> None:
        """Open the file with the pipeline's own probe: not-a-video / too long / too short answer at once.
        (An object store hands over the gateway's local spool of the upload: service.s3_storage.)"""
        try:
            with self.storage.local_copy(ref) as path:
                probe(path, face_config(self.settings))
        except StorageUnavailable as exc:
            raise Problem(exc.code, str(exc)) from None
        except DJLDMLError as exc:
            raise Problem(exc.code if exc.code in PROBLEMS else "not_a_video", exc.message) from None
        except Exception as exc:  # whatever the demuxer throws at a hostile file, it is the file's fault
            log.warning("probe failed: %s", exc.__class__.__name__)
            raise Problem("not_a_video", "the file cannot be opened as a video") from None

    def _forget(self, job_id: str) -> None:
        with contextlib.suppress(StoreUnavailable):
            self.store.delete(job_id)

    async def wait(self, job_id: str, owner: str, wait_s: float | None) -> schemas.JobStatus:
        limit = self.settings.predict_wait_s if wait_s is None else min(wait_s, self.settings.predict_wait_s)
        deadline = time.monotonic() + limit
        while True:
            job = await to_thread.run_sync(self.status, job_id, owner)
            if job.status in (schemas.JobState.done, schemas.JobState.failed) or time.monotonic() >= deadline:
                return job
            await asyncio.sleep(_POLL_S)

    # ------------------------------------------------------------------------------------------ jobs
    def status(self, job_id: str, owner: str) -> schemas.JobStatus:
        job = self._store_op(self.store.get, job_id)
        if job is None or job.owner != owner:  # another key's job is as unknown as a missing one
            raise Problem("unknown_job", "no such job for this key (it may have expired)")
        return schemas.job_status(job)

    def faces_preview(self, job_id: str, owner: str) -> bytes:
        """The job's contact sheet of aligned faces (JPEG); Problem ``unknown_job`` / ``no_faces_preview``."""
        self.status(job_id, owner)
        image = self._store_op(self.store.get_preview, job_id)
        if image is None:
            raise Problem("no_faces_preview", "none was asked for (faces_preview=true), or the job is not done")
        return image

    def delete(self, job_id: str, owner: str) -> None:
        self.status(job_id, owner)
        self._store_op(self.store.delete, job_id)  # a running job notices at its next step and stops

    # ------------------------------------------------------------------------------------------ operations
    def backend_ready(self) -> tuple[bool, str]:
        checked, ok, reason = self._backend_state
        if time.monotonic() - checked > _READY_CACHE_S:
            try:
                ok, reason = self.backend.ready()
            except Exception as exc:
                ok, reason = False, f"{exc.__class__.__name__}"
            self._backend_state = (time.monotonic(), ok, reason)
        return ok, reason

    def readiness(self) -> schemas.Readiness:
        self._backend_state = (0.0, False, "")  # /readyz always asks afresh
        checks = {}
        for name, check in (("job_store", self.store.ping), ("queue", self.runner.ready),
                            ("backend", self.backend_ready), ("upload_store", self.storage.ready)):
            ok, reason = check()
            checks[name] = "ok" if ok else (reason or "not ready")
        ready = all(v == "ok" for v in checks.values())
        return schemas.Readiness(ready=ready, checks=checks, mode="embedded" if self.settings.embedded else "stack")

    def models(self) -> schemas.Models:
        try:
            info = self.backend.model_info()
        except BackendUnavailable as exc:
            raise Problem("backend_unavailable", str(exc)) from None
        fields = {k: getattr(info, k) for k in schemas.Model.model_fields
                  if k not in ("preprocessing", "inference", "engine")}
        inference = info.extra.get("inference") or {}
        return schemas.Models(models=[schemas.Model(
            **fields, preprocessing=self.preprocessing_check(info), engine=info.extra.get("engine"),
            inference=schemas.ModelInference(**{k: inference[k] for k in schemas.ModelInference.model_fields
                                                if k in inference}))])

    def engine_summary(self) -> str:
        """`` (runtime openvino on cpu, model from archive IR)`` for the start-up log when the model runs in this
        process; empty when TorchServe runs it or the backend cannot answer yet."""
        try:
            engine = self.backend.model_info().extra.get("engine")
        except BackendUnavailable:
            return ""
        if not engine:
            return ""
        return f" (runtime {engine['runtime']} on {engine['device']}, model from {engine['model_from']})"

    def preprocessing_check(self, info: ModelInfo) -> schemas.PreprocessingCheck:
        """Whether this service makes face clips as the model's training did (djldml.faces.provenance)."""
        return schemas.PreprocessingCheck(**preprocessing_check(info.extra, self.settings))

    def warn_about_preprocessing(self) -> None:
        """At start-up: log what differs between the model's training preprocessing and this service's."""
        try:
            check = self.preprocessing_check(self.backend.model_info())
        except BackendUnavailable:
            return  # /readyz says so; checked again on every GET /models
        for line in check.differences:
            log.warning("model preprocessing: %s", line)

    def render_metrics(self) -> bytes:
        with contextlib.suppress(StoreUnavailable):
            self.metrics.collect_job_events(self.store.drain_finished())
        return self.metrics.render(self.runner.queue_depth())

    # ------------------------------------------------------------------------------------------ helpers
    def _store_op(self, fn, *args):
        """A job-store operation; an unreachable store becomes the 503 problem ``queue_unavailable``."""
        try:
            return fn(*args)
        except StoreUnavailable as exc:
            raise Problem("queue_unavailable", str(exc)) from None

    async def _store_op_in_thread(self, fn, *args):
        """:meth:`_store_op` in a worker thread, so a slow Redis never blocks the event loop."""
        return await to_thread.run_sync(self._store_op, fn, *args)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "on", "yes")
