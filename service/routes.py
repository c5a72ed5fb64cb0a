"""HTTP routes: parse, call one function, answer with a schema. The logic lives in service.gateway."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from djldml import labels

from . import idempotency
from .api import schemas
from .api.problems import Problem, openapi_problem_responses
from .auth import require_key
from .gateway import Gateway, Submitted

router = APIRouter()
STATIC = Path(__file__).resolve().parent / "static"

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "multipart/form-data with one file field `video` (mp4, mov, webm, mkv, avi, ...). The size "
                       "limit is enforced while the body streams in.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["video"],
                    "properties": {
                        "video": {"type": "string", "format": "binary", "description": "the interview video"},
                        "callback_url": {
                            "type": "string", "format": "uri", "maxLength": 2048,
                            "description": "POST the job's end here (the `jobEnded` callback, signed with the "
                                           "key's secret, retried). Its host must be on DJLDML_CALLBACK_HOSTS, "
                                           "https (http only to loopback); else 422 `callback_not_allowed`"},
                        "faces_preview": {
                            "type": "boolean", "default": False,
                            "description": "keep a contact sheet of the aligned faces the model saw, as long "
                                           "as the job (GET /jobs/{id}/faces); deleted with the job"},
                    },
                },
                "encoding": {"video": {"contentType": "video/*, application/octet-stream"}},
            }
        },
    }
}
_UPLOAD_ERRORS = ("invalid_request", "unsupported_media_type", "upload_too_large", "request_timeout", "not_a_video",
                  "video_too_long", "video_too_short", "frame_too_large", "unauthorised", "too_many_jobs",
                  "queue_unavailable", "backend_unavailable", "callback_not_allowed", "idempotency_key_reused",
                  "idempotency_key_in_use")
_REPLAY_HEADERS = {
    "Location": {"description": "the job's URL", "schema": {"type": "string"}},
    "Idempotent-Replayed": {"description": "`true` when this answers a retry with a known Idempotency-Key: the "
                                           "job is the first request's", "schema": {"type": "string"}},
}
_JOB_ERRORS = ("no_face", "too_few_face_clips", "video_error", "model_error", "worker_lost", "job_timeout",
               "internal_error")


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def idempotency_key(key: str | None = Header(
        None, alias=idempotency.HEADER, max_length=idempotency.MAX_KEY_CHARS,
        description="any unique string (a UUID) per logical request: a retry with the same key and the same "
                    "upload from the same API key returns the first request's job (`Idempotent-Replayed: true`) "
                    "instead of starting another; the same key with another upload is 422 "
                    "`idempotency_key_reused`, while the first is still being received 409 "
                    "`idempotency_key_in_use`. Kept as long as the job (JOB_TTL_S)")) -> str | None:
    return idempotency.check_key(key)


def _job_response(job: schemas.JobStatus, status_code: int, replayed: bool = False) -> JSONResponse:
    headers = {"Location": job.links["self"]}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(job.model_dump(mode="json"), status_code=status_code, headers=headers)


def _job_ended(body: schemas.CallbackEvent,
               webhook_id: str = Header(description="msg_<job id>, the same on every attempt"),
               webhook_timestamp: str = Header(description="Unix seconds of this attempt"),
               webhook_signature: str = Header(description="v1,<base64 HMAC-SHA256 signature>")):
    pass  # pragma: no cover - documentation of the receiver's side


def _callbacks(route: str) -> list:
    """What the service POSTs to a job's callback_url, for FastAPI's ``callbacks=`` (documentation only)."""
    r = APIRouter()
    r.add_api_route(
        "{$request.body#/callback_url}", _job_ended, methods=["POST"], response_class=Response, name="jobEnded",
        operation_id=f"jobEnded_{route}", summary="jobEnded: the job is done or failed",
        description="Sent once the job ends, as `application/json`, signed by the Standard Webhooks scheme with "
                    "the API key's secret: verify `webhook-signature` = `v1,` + base64 HMAC-SHA256(secret, "
                    "`{webhook-id}.{webhook-timestamp}.{body}`) and refuse timestamps older than 5 minutes "
                    "(docs/api.md has the code). Any 2xx acknowledges it; anything else (or no answer within "
                    "CALLBACK_TIMEOUT_S) is retried CALLBACK_RETRIES times with doubling delays. `webhook-id` is "
                    "the same on every attempt: drop duplicates by it.",
        responses={200: {"description": "received (any 2xx)"}})
    return r.routes


@router.post(
    "/predict", tags=["predict"], response_model=schemas.PredictionResult, openapi_extra=_UPLOAD_BODY,
    summary="Estimate the BDI-II score of a video (waits for the result)",
    responses={200: {"headers": {"Idempotent-Replayed": _REPLAY_HEADERS["Idempotent-Replayed"]}},
               202: {"model": schemas.JobStatus, "description": "Not done within the wait: poll `Location`",
                     "headers": _REPLAY_HEADERS},
               **openapi_problem_responses(*_UPLOAD_ERRORS, *_JOB_ERRORS)},
    callbacks=_callbacks("predict"),
)
async def predict(request: Request, owner: str = Depends(require_key), gw: Gateway = Depends(gateway),
                  wait_s: float | None = Query(None, ge=0, le=3600,
                                               description="wait at most this long (capped by PREDICT_WAIT_S)"),
                  key: str | None = Depends(idempotency_key)):
    submitted: Submitted = await gw.submit(request, owner, key)
    job = await gw.wait(submitted.job_id, owner, wait_s)
    if job.status == schemas.JobState.done:
        if submitted.replayed:
            return JSONResponse(job.result.model_dump(mode="json"), headers={"Idempotent-Replayed": "true"})
        return job.result
    if job.status == schemas.JobState.failed:
        raise Problem(job.error.code, job.error.detail, job_id=job.id)
    return _job_response(job, 202, submitted.replayed)


@router.post(
    "/jobs", tags=["jobs"], status_code=202, response_model=schemas.JobStatus, openapi_extra=_UPLOAD_BODY,
    summary="Submit a video; poll the job at `Location`",
    responses={202: {"headers": _REPLAY_HEADERS}, **openapi_problem_responses(*_UPLOAD_ERRORS)},
    callbacks=_callbacks("jobs"),
)
async def create_job(request: Request, owner: str = Depends(require_key), gw: Gateway = Depends(gateway),
                     key: str | None = Depends(idempotency_key)):
    submitted = await gw.submit(request, owner, key)
    return _job_response(gw.status(submitted.job_id, owner), 202, submitted.replayed)


@router.get("/jobs/{job_id}", tags=["jobs"], response_model=schemas.JobStatus, summary="Status, progress, result",
            responses=openapi_problem_responses("unknown_job", "unauthorised", "queue_unavailable"))
def get_job(job_id: str, owner: str = Depends(require_key), gw: Gateway = Depends(gateway)):
    return gw.status(job_id, owner)


@router.get("/jobs/{job_id}/faces", tags=["jobs"], response_class=Response,
            summary="Contact sheet of the aligned faces the model saw (when asked for with faces_preview)",
            responses={200: {"content": {"image/jpeg": {}}, "description": "one row per clip (up to 8), 8 frames "
                                                                         "of each; deleted with the job"},
                       **openapi_problem_responses("unknown_job", "no_faces_preview", "unauthorised",
                                                   "queue_unavailable")})
def get_faces(job_id: str, owner: str = Depends(require_key), gw: Gateway = Depends(gateway)):
    return Response(gw.faces_preview(job_id, owner), media_type="image/jpeg",
                    headers={"Cache-Control": "no-store"})  # faces: never kept by a browser or proxy


@router.delete("/jobs/{job_id}", tags=["jobs"], status_code=204, response_class=Response,
               summary="Cancel a job (if running) and forget it",
               responses=openapi_problem_responses("unknown_job", "unauthorised", "queue_unavailable"))
def delete_job(job_id: str, owner: str = Depends(require_key), gw: Gateway = Depends(gateway)):
    gw.delete(job_id, owner)
    return Response(status_code=204)


@router.get("/healthz", tags=["operations"], response_model=schemas.Health, summary="Alive")
def healthz():
    return schemas.Health()


@router.get("/readyz", tags=["operations"], response_model=schemas.Readiness,
            summary="Broker, backend and model ready (503 with the reasons otherwise)",
            responses={503: {"model": schemas.Readiness, "description": "not ready; `checks` says why"}})
def readyz(gw: Gateway = Depends(gateway)):
    r = gw.readiness()
    if not r.ready:
        return JSONResponse(r.model_dump(), status_code=503, headers={"Retry-After": str(gw.settings.retry_after_s)})
    return r


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
def metrics(gw: Gateway = Depends(gateway)):
    return Response(gw.render_metrics(), media_type=gw.metrics.content_type)


@router.get("/models", tags=["operations"], response_model=schemas.Models, summary="The served model",
            responses=openapi_problem_responses("backend_unavailable"))
def models(gw: Gateway = Depends(gateway)):
    return gw.models()


# ---------------------------------------------------------------------------------------------- the results page
@router.get("/", include_in_schema=False)
def results_page():
    """The results page (service/static/index.html): plain HTML + JS, nothing fetched from elsewhere."""
    return FileResponse(STATIC / "index.html", headers={
        "Cache-Control": "no-cache",
        # Only this service's own files run or load on the page; nothing from anywhere else.
        "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; "
                                   "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


@router.get("/ui/config", include_in_schema=False)
def ui_config(request: Request):
    """What the page needs to know before the first call: whether to ask for an API key, the size limit."""
    s = request.app.state.settings
    return {"api_key_required": bool(s.api_keys), "max_upload_bytes": s.max_upload_bytes,
            "bands": [{"name": b.name, "low": b.low, "high": b.high} for b in labels.SEVERITY_BANDS],
            "min_score": labels.MIN_SCORE, "max_score": labels.MAX_SCORE}
