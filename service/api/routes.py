"""HTTP routes: parse, call one function, answer with a schema. The logic lives in service.gateway."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from ..auth import require_key
from ..gateway import Gateway
from . import schemas
from .problems import Problem, openapi_problem_responses

router = APIRouter()

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
                    "properties": {"video": {"type": "string", "format": "binary",
                                             "description": "the interview video"}},
                },
                "encoding": {"video": {"contentType": "video/*, application/octet-stream"}},
            }
        },
    }
}
_UPLOAD_ERRORS = ("invalid_request", "unsupported_media_type", "upload_too_large", "request_timeout", "not_a_video",
                  "video_too_long", "video_too_short", "frame_too_large", "unauthorised", "too_many_jobs",
                  "queue_unavailable", "backend_unavailable")
_JOB_ERRORS = ("no_face", "too_few_face_clips", "video_error", "model_error", "worker_lost", "job_timeout",
               "internal_error")


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _job_response(job: schemas.JobStatus, status_code: int) -> JSONResponse:
    return JSONResponse(job.model_dump(mode="json"), status_code=status_code, headers={"Location": job.links["self"]})


@router.post(
    "/predict", tags=["predict"], response_model=schemas.PredictionResult, openapi_extra=_UPLOAD_BODY,
    summary="Estimate the BDI-II score of a video (waits for the result)",
    responses={202: {"model": schemas.JobStatus, "description": "Not done within the wait: poll `Location`"},
               **openapi_problem_responses(*_UPLOAD_ERRORS, *_JOB_ERRORS)},
)
async def predict(request: Request, owner: str = Depends(require_key), gw: Gateway = Depends(gateway),
                  wait_s: float | None = Query(None, ge=0, le=3600,
                                               description="wait at most this long (capped by PREDICT_WAIT_S)")):
    job_id = await gw.submit(request, owner)
    job = await gw.wait(job_id, owner, wait_s)
    if job.status == schemas.JobState.done:
        return job.result
    if job.status == schemas.JobState.failed:
        raise Problem(job.error.code, job.error.detail, job_id=job.id)
    return _job_response(job, 202)


@router.post(
    "/jobs", tags=["jobs"], status_code=202, response_model=schemas.JobStatus, openapi_extra=_UPLOAD_BODY,
    summary="Submit a video; poll the job at `Location`",
    responses=openapi_problem_responses(*_UPLOAD_ERRORS),
)
async def create_job(request: Request, owner: str = Depends(require_key), gw: Gateway = Depends(gateway)):
    job_id = await gw.submit(request, owner)
    return _job_response(gw.status(job_id, owner), 202)


@router.get("/jobs/{job_id}", tags=["jobs"], response_model=schemas.JobStatus, summary="Status, progress, result",
            responses=openapi_problem_responses("unknown_job", "unauthorised", "queue_unavailable"))
def get_job(job_id: str, owner: str = Depends(require_key), gw: Gateway = Depends(gateway)):
    return gw.status(job_id, owner)


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

