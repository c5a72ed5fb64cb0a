"""Errors as RFC 9457 ``application/problem+json`` with a stable ``code``.

Every failure a client can see has one entry in ``PROBLEMS``: its HTTP status and a title. Clients match on
``code`` (also the last segment of ``type``), never on ``title`` or ``detail``. Pipeline failures raised by
djldml carry the same codes (djldml/errors.py), so a job that fails in the worker reports the code it would
have had in the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:djldml:problem:"


@dataclass(frozen=True)
class ProblemType:
    status: int
    title: str


PROBLEMS: dict[str, ProblemType] = {
    # The upload
    "invalid_request": ProblemType(422, "The request is malformed (missing 'video' field or bad parameter)"),
    "unsupported_media_type": ProblemType(415, "Send multipart/form-data with a video file in the 'video' field"),
    "upload_too_large": ProblemType(413, "The upload exceeds the size limit"),
    "request_timeout": ProblemType(408, "The upload stalled: nothing was received for too long"),
    "not_a_video": ProblemType(422, "The upload is not a video that can be decoded"),
    "video_too_long": ProblemType(422, "The video is longer than the limit"),
    "video_too_short": ProblemType(422, "The video is shorter than the limit"),
    "frame_too_large": ProblemType(422, "The video's frames are larger than the limit"),
    # The face-clip pipeline
    "no_face": ProblemType(422, "No face was found in the video"),
    "face_orientation": ProblemType(422, "The face is turned sideways or upside down and could not be corrected"),
    "too_few_face_clips": ProblemType(422, "Too few stretches of the video show a face to make clips"),
    "video_error": ProblemType(422, "The video cannot be turned into face clips"),
    # Access
    "unauthorised": ProblemType(401, "A valid X-API-Key header is required"),
    "too_many_jobs": ProblemType(429, "This API key has too many unfinished jobs"),
    "unknown_job": ProblemType(404, "No such job (never existed, expired, or deleted)"),
    "no_faces_preview": ProblemType(404, "This job keeps no contact sheet of faces (ask with faces_preview=true)"),
    "idempotency_key_reused": ProblemType(422, "This Idempotency-Key was already used for a different request"),
    "idempotency_key_in_use": ProblemType(409, "A request with this Idempotency-Key is still being processed"),
    "callback_not_allowed": ProblemType(422, "The callback_url is not allowed (host not on the allow-list, not "
                                             "https, or no signing secret for this key)"),
    "not_found": ProblemType(404, "No such resource"),
    "method_not_allowed": ProblemType(405, "Method not allowed on this resource"),
    # The service
    "queue_unavailable": ProblemType(503, "The job queue is unavailable; retry later"),
    "backend_unavailable": ProblemType(503, "The inference backend is unavailable; retry later"),
    "upload_store_unavailable": ProblemType(503, "The upload store (object store) is unavailable; retry later"),
    "not_ready": ProblemType(503, "The service is not ready"),
    "worker_lost": ProblemType(500, "The worker processing this job died repeatedly"),
    "job_timeout": ProblemType(500, "The job took longer than the service's time limit"),
    "model_error": ProblemType(500, "The model could not process the clips"),
    "internal_error": ProblemType(500, "Internal error"),
}

RETRYABLE = {"queue_unavailable", "backend_unavailable", "upload_store_unavailable", "not_ready", "too_many_jobs",
             "idempotency_key_in_use"}


class Problem(Exception):
    """Raise anywhere below a route to answer with a problem document."""

    def __init__(self, code: str, detail: str | None = None, **extra: Any):
        if code not in PROBLEMS:
            code = "internal_error"
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.extra = extra

    @property
    def status(self) -> int:
        return PROBLEMS[self.code].status


def problem_body(code: str, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    p = PROBLEMS.get(code, PROBLEMS["internal_error"])
    body = {"type": TYPE_PREFIX + code, "title": p.title, "status": p.status, "code": code}
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def problem_response(code: str, detail: str | None = None, retry_after: int | None = None,
                     headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    body = problem_body(code, detail, **extra)
    headers = dict(headers or {})
    if retry_after and code in RETRYABLE:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_MEDIA_TYPE, headers=headers or None)


def install_handlers(app, retry_after_s: int, on_problem=None) -> None:
    """Route every error FastAPI/Starlette can raise through problem+json. ``on_problem(code)`` counts them."""

    def respond(code: str, detail: str | None = None, headers: dict[str, str] | None = None, **extra) -> JSONResponse:
        if on_problem:
            on_problem(code)
        return problem_response(code, detail, retry_after=retry_after_s, headers=headers, **extra)

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem):
        return respond(exc.code, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return respond("invalid_request", "request validation failed", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 405:  # Starlette's Allow names one route's methods; a path may have several routes
            return respond("method_not_allowed", headers={"Allow": _allowed_methods(request)})
        fallback = "invalid_request" if exc.status_code < 500 else "internal_error"
        code = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large", 415: "unsupported_media_type",
                401: "unauthorised"}.get(exc.status_code, fallback)
        return respond(code, str(exc.detail) if exc.detail else None, headers=exc.headers)  # e.g. Allow on 405

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        import logging

        logging.getLogger("service.api").exception("unhandled error: %s", exc.__class__.__name__)
        return respond("internal_error")


def _allowed_methods(request: Request) -> str:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def openapi_problem_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for a route: each status with the codes it may carry, as problem+json."""
    by_status: dict[int, list[str]] = {}
    for c in codes:
        by_status.setdefault(PROBLEMS[c].status, []).append(c)
    return {
        status: {
            "description": "; ".join(f"`{c}`: {PROBLEMS[c].title}" for c in cs),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, cs in sorted(by_status.items())
    }
