"""Running one job: the upload → face clips → per-clip distributions → the video prediction → the job store.

The one function here, :func:`run_job`, is what both the Celery task (full stack) and the embedded thread pool
call, so the two modes differ only in wiring. It is safe to run twice for the same job (a redelivered task):
a finished or deleted job is left alone, and the store refuses to reopen a finished job. The upload is deleted
when the job ends, however it ends — except when the job store itself is unreachable and the caller will retry
(``final=False``), because the retry needs the file.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tenacity

from djldml.calibration import calibration_of
from djldml.errors import DJLDMLError
from djldml.faces import FaceConfig, extract_face_clips
from djldml.faces.preview import contact_sheet
from djldml.faces.provenance import differences, preprocessing, scoring_config
from djldml.scoring import score_clips

from .backends.base import BackendUnavailable, InferenceBackend
from .jobs import DONE, FAILED, INFERRING, PREPROCESSING, Job, JobStore, StoreUnavailable
from .settings import Settings
from .storage import StorageUnavailable, UploadStorage

log = logging.getLogger("service.processing")


class JobCancelled(Exception):
    """The job was deleted while it ran: stop, and record nothing."""


def face_config(settings: Settings, model_extra: dict[str, Any] | None = None) -> FaceConfig:
    """The face-clip settings for scoring with a model: what its card records (clip geometry in time, landmark
    settings, clip selection: :func:`djldml.faces.provenance.scoring_config`, the same call ``trainer evaluate
    --videos`` makes), with the service's limits on top. Without ``model_extra``: the pipeline's defaults and
    the limits (enough to probe an upload)."""
    recorded = (model_extra or {}).get("preprocessing")
    return scoring_config(recorded, max_clips=settings.max_clips, max_duration_s=settings.max_duration_s,
                          min_duration_s=settings.min_duration_s)


def preprocessing_check(model_extra: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Whether this service makes face clips as the model's training did (djldml.faces.provenance): ``matches``
    (None when the model records nothing), ``differences``, and the model's ``recorded`` record."""
    recorded = model_extra.get("preprocessing") or {}
    found = differences(recorded, preprocessing(face_config(settings, model_extra)))
    if settings.max_clips is not None and recorded:
        found.append(f"DJLDML_MAX_CLIPS={settings.max_clips} overrides the model's clip selection: scores are not "
                     "those `trainer evaluate --videos` reports")
    return {"matches": (not found) if recorded else None, "differences": found, "recorded": recorded}


def run_job(job_id: str, upload: str | Path, *, store: JobStore, backend: InferenceBackend, storage: UploadStorage,
            settings: Settings, final: bool = True, on_finished: Callable[[Job], None] | None = None) -> str:
    """Process ``upload`` for ``job_id``; returns the job's final status ("done", "failed", or "gone").

    ``on_finished(job)`` is called once this run has ended the job (done or failed; not for a job already
    finished by an earlier delivery): the callback notification hooks in there (service.callbacks); its
    errors are logged, never the job's. Raises StoreUnavailable (after leaving the upload in place unless
    ``final``) when the store is unreachable.
    """
    delete_upload = True
    try:
        status = _run(job_id, upload, store, backend, storage, settings)
        if status in (DONE, FAILED) and on_finished is not None:
            _notify(store, job_id, on_finished)
        return status
    except StoreUnavailable:
        delete_upload = final
        raise
    finally:
        if delete_upload:
            try:
                storage.delete(upload)
            except StorageUnavailable as exc:  # the job's outcome stands; the sweeper deletes it on a later pass
                log.warning("job %s: upload not deleted yet (%s)", job_id, exc)


def _run(job_id: str, upload: str | Path, store: JobStore, backend: InferenceBackend, storage: UploadStorage,
         settings: Settings) -> str:
    job = store.get(job_id)
    if job is None:
        return "gone"
    if job.finished:
        return job.status  # a second delivery of a job already done
    started = time.time()
    timings: dict[str, float] = {"queue_wait": max(0.0, started - job.created_at)}
    if job.attempts >= settings.max_job_attempts:  # its worker died every time: a poison job must not loop
        return _fail(store, job_id, "worker_lost", f"the worker processing this job was lost {job.attempts} times",
                     timings, started)
    try:
        _set(store, job_id, status=PREPROCESSING, progress=0.05, started_at=started, attempts=job.attempts + 1)
        info = backend.model_info()  # its card decides how clips are cut (the clip contract in time)
        t = time.perf_counter()
        with storage.local_copy(upload) as local:  # the file itself, or an object store's upload streamed down
            timings["download"] = time.perf_counter() - t
            clips = extract_face_clips(str(local), face_config(settings, info.extra))
        timings["face_clips"] = time.perf_counter() - t - timings["download"]

        _set(store, job_id, status=INFERRING, progress=0.5)
        t = time.perf_counter()
        prediction = score_clips(
            clips, lambda batch: _infer_with_retries(backend, batch, settings), settings.inference_batch_clips,
            on_batch=lambda done, n: _set(store, job_id, progress=0.5 + 0.45 * done / max(n, 1)),
            calibration=calibration_of(info.extra.get("inference")))  # the card's; None: uncalibrated
        timings["inference"] = time.perf_counter() - t
        timings["total"] = time.time() - job.created_at
        check = preprocessing_check(info.extra, settings)
        result = build_result(job_id, prediction.to_dict(), clips.quality, info.to_dict(), timings,
                              {k: check[k] for k in ("matches", "differences")})
        if job.faces_preview:  # asked for: kept in the job store beside the job, deleted with it
            store.put_preview(job_id, faces_preview_jpeg(clips.clips))
        stored = store.update(job_id, status=DONE, progress=1.0, result=result)
        if stored is None and job.faces_preview:  # deleted while finishing: leave no faces behind
            store.drop_preview(job_id)
        _record(store, DONE, None, timings)
        return stored.status if stored else "gone"
    except JobCancelled:
        return "gone"
    except StoreUnavailable:
        raise
    except DJLDMLError as exc:  # the video's fault: typed, explained to the client
        return _fail(store, job_id, exc.code, exc.message, timings, started)
    except BackendUnavailable as exc:
        return _fail(store, job_id, "backend_unavailable", str(exc) or "inference backend unavailable", timings,
                     started)
    except StorageUnavailable as exc:  # the object store is down, or the upload is gone from it
        return _fail(store, job_id, StorageUnavailable.code, str(exc), timings, started)
    except Exception as exc:  # a bug or an environment failure: the job fails with a code, the worker lives on
        if exc.__class__.__name__ == "SoftTimeLimitExceeded":  # Celery's JOB_TIME_LIMIT_S (no celery import here)
            return _fail(store, job_id, "job_timeout", "the job ran past the time limit", timings, started)
        log.exception("job %s failed unexpectedly: %s", job_id, exc.__class__.__name__)
        return _fail(store, job_id, "internal_error", exc.__class__.__name__, timings, started)


def _notify(store: JobStore, job_id: str, on_finished: Callable[[Job], None]) -> None:
    try:
        job = store.get(job_id)
        if job is not None and job.finished:
            on_finished(job)
    except Exception as exc:  # a notification that cannot be queued must not undo a finished job
        log.warning("job %s: end notification not queued: %s", job_id, exc.__class__.__name__)


def faces_preview_jpeg(clips: np.ndarray) -> bytes:
    """A contact sheet of ``clips`` (uint8 [N, T, H, W, 3], RGB): up to 8 clips × 8 frames, JPEG quality 85,
    without the template marks (djldml.faces.preview)."""
    sheet = contact_sheet(clips, rows=8, per_clip=8, marks=False)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _set(store: JobStore, job_id: str, **fields: Any) -> None:
    if store.update(job_id, **fields) is None:
        raise JobCancelled(job_id)


def _fail(store: JobStore, job_id: str, code: str, detail: str, timings: dict[str, float], started: float) -> str:
    timings["total"] = time.time() - started + timings.get("queue_wait", 0.0)
    stored = store.update(job_id, status=FAILED, error={"code": code, "detail": detail})
    _record(store, FAILED, code, timings)
    log.info("job %s failed: %s", job_id, code)
    return stored.status if stored else "gone"


def _record(store: JobStore, status: str, code: str | None, timings: dict[str, float]) -> None:
    with contextlib.suppress(StoreUnavailable):  # metrics are not worth failing a finished job for
        store.record_finished({"status": status, "code": code, "timings": timings})


def _infer_with_retries(backend: InferenceBackend, clips: np.ndarray, settings: Settings) -> np.ndarray:
    """Bounded retries with doubling delay (tenacity) while the backend is briefly unavailable (restart,
    overload): ``backend_retries`` more tries after ``backend_retry_delay_s``, twice that, …; then the last
    BackendUnavailable is raised."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(BackendUnavailable),
        wait=tenacity.wait_exponential(multiplier=settings.backend_retry_delay_s),
        stop=tenacity.stop_after_attempt(settings.backend_retries + 1),
        reraise=True,
        before_sleep=lambda state: log.warning("backend unavailable, retry %d/%d in %.1f s", state.attempt_number,
                                               settings.backend_retries, state.upcoming_sleep),
    )
    return retrying(backend.clip_distributions, clips)


def build_result(job_id: str, prediction: dict[str, Any], quality, model: dict[str, Any],
                 timings: dict[str, float], preprocessing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The response document (schemas.PredictionResult) from the prediction, quality report and model info;
    ``preprocessing``: {matches, differences} of :func:`preprocessing_check`, shown with the model."""
    model = {**model, "preprocessing": preprocessing} if preprocessing is not None else model
    q = quality.to_dict() if hasattr(quality, "to_dict") else dict(quality)
    return {
        "job_id": job_id,
        **prediction,
        "quality": {
            "duration_s": float(q.get("duration_s", 0.0)), "fps": float(q.get("fps", 0.0)),
            "width": int(q.get("width", 0)), "height": int(q.get("height", 0)),
            "frames_decoded": int(q.get("frames_decoded", 0)), "frames_with_face": int(q.get("frames_with_face", 0)),
            "clips_used": int(q.get("clips_made", 0)), "dropped": {k: int(v) for k, v in q.get("dropped", {}).items()},
            "corrections": dict(q.get("corrections") or {}),
        },
        "model": {**{k: model[k] for k in ("name", "version", "sha256", "synthetic_demo", "description",
                                           "preprocessing") if k in model},
                  "engine": (model.get("extra") or {}).get("engine")},
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }
