"""The API's response documents (pydantic models), apart from the routes and the logic that fills them.

The field descriptions here are what /docs shows; the result's numbers come from djldml.prediction, whose
definitions they restate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from djldml import labels

from ..jobs import Job, JobState
from .problems import PROBLEMS


class Interval(BaseModel):
    mass: float = Field(description="probability mass the interval holds (0.9)")
    low: int = Field(description="lowest score in the central interval")
    high: int = Field(description="highest score in the central interval")


class TimelinePoint(BaseModel):
    start_time: float = Field(description="start of the clip in the video, seconds")
    score: float = Field(description="expected BDI-II score of this clip alone")


class Quality(BaseModel):
    duration_s: float = Field(description="video duration, seconds")
    fps: float = Field(description="frame rate of the video")
    width: int = Field(description="displayed frame width, pixels")
    height: int = Field(description="displayed frame height, pixels")
    frames_decoded: int = Field(description="frames the decoder produced")
    frames_with_face: int = Field(description="frames where a face was found (detected or interpolated)")
    clips_used: int = Field(description="16-frame face clips the model saw")
    dropped: dict[str, int] = Field(default_factory=dict, description="reason → frames dropped for it")
    corrections: dict[str, Any] = Field(
        default_factory=dict,
        description="what was chosen or corrected to make the clips: frame_rate {from, to} (resampled to the "
                    "model's rate), stream {index, chosen_by}, orientation {rotated_by, by}, display_flip, "
                    "deinterlaced, color_range, frames_after_decode_error; absent keys: nothing done")


class PreprocessingCheck(BaseModel):
    matches: bool | None = Field(description="true: this service makes face clips as the model's training did; "
                                             "false: see differences; null: the model records nothing to compare")
    differences: list[str] = Field(description="what differs (settings, library versions), empty when it matches")
    recorded: dict[str, Any] | None = Field(
        None, description="the model card's record: face settings and library versions (GET /models only)")


class ModelInference(BaseModel):
    """How the model card says clip distributions and the video prediction are computed beyond the network."""

    mirror_average: bool = Field(False, description="each clip's distribution averaged with its mirror image's")
    input_normalisation: dict[str, Any] | None = Field(
        None, description="pixel normalisation of the clips {range, mean, std, channel_order} "
                          "(e.g. RGB 0–255 for Sports-1M C3D weights); null: the default uint8 → [-1, 1]")
    calibration: dict[str, Any] | None = Field(
        None, description="calibration of the video distribution fitted on held-out development subjects "
                          "{method: temperature|gaussian|conformal, its parameter, interval_mass, fitted_on}; "
                          "null: uncalibrated")


class ModelEngine(BaseModel):
    """What computes the network's layers in the process that runs the model (djldml.runtime)."""

    runtime: str = Field(description="openvino (CPU, float32) or torch (eager PyTorch: the reference, and the GPU)")
    device: str = Field(description="cpu or cuda")
    model_from: str = Field(description="where the engine's network came from: archive IR, converted at load, or "
                                        "state dict (PyTorch)")


class Model(BaseModel):
    name: str = Field(description="model name (the archive is <name>.mar)")
    version: str = Field(description="model version from its card")
    sha256: str = Field(description="SHA-256 of the model archive (.mar)")
    synthetic_demo: bool = Field(description="true: trained on synthetic videos only; the scores mean nothing "
                                              "clinically")
    description: str = Field("", description="what the model is and how it was trained")
    preprocessing: PreprocessingCheck | None = Field(
        None, description="whether face clips are made here as they were for the model's training")
    inference: ModelInference | None = Field(
        None, description="the card's inference record: mirror averaging, input normalisation, calibration "
                          "(GET /models)")
    engine: ModelEngine | None = Field(
        None, description="what runs the network where the model is loaded in this service's processes; null "
                          "when TorchServe runs it (its model_log.log names the engine)")


class PredictionResult(BaseModel):
    job_id: str = Field(description="the job that produced this result")
    bdi_score: float = Field(description=f"expected BDI-II score, Σ k·p_k over {labels.MIN_SCORE}..{labels.MAX_SCORE}")
    distribution: list[float] = Field(
        min_length=labels.NUM_BINS, max_length=labels.NUM_BINS,
        description=f"probability of each score {labels.MIN_SCORE}..{labels.MAX_SCORE} (sums to 1): "
                    "the mean of the per-clip distributions")
    std: float = Field(description="standard deviation of the distribution")
    interval: Interval = Field(description="central interval of the distribution holding 90% of its mass")
    severity: str = Field(description="BDI-II band of the rounded score: "
                                      + ", ".join(f"{b.name} {b.low}–{b.high}" for b in labels.SEVERITY_BANDS))
    band_probabilities: dict[str, float] = Field(description="probability mass of each BDI-II band")
    clip_scores: list[float] = Field(description="expected score of each clip, in video order")
    timeline: list[TimelinePoint] | None = Field(description="per-clip scores with their start times")
    quality: Quality
    model: Model
    timings_s: dict[str, float] = Field(description="seconds per stage: queue_wait, face_clips, inference (with "
                                                    "the aggregation), total (upload excluded)")


class JobError(BaseModel):
    code: str = Field(description="stable problem code (see the error table in /docs)")
    status: int = Field(description="HTTP status that code maps to")
    title: str = Field(description="human-readable summary of the code")
    detail: str | None = Field(None, description="what went wrong in this case")


class JobStatus(BaseModel):
    id: str = Field(description="job id (also the last segment of its URL)")
    status: JobState = Field(description="queued → preprocessing → inferring → done | failed")
    progress: float = Field(ge=0, le=1, description="0..1, coarse")
    created_at: datetime = Field(description="when the upload was accepted (UTC)")
    updated_at: datetime = Field(description="last status or progress change (UTC)")
    result: PredictionResult | None = Field(None, description="present when status is done")
    error: JobError | None = Field(None, description="present when status is failed")
    callback_url: str | None = Field(None, description="where the job's end is POSTed (signed), if asked for")
    faces_preview: bool = Field(False, description="true: a contact sheet of the aligned faces the model saw is "
                                                   "kept with the job (links.faces once done)")
    links: dict[str, str] = Field(default_factory=dict, description="self: this job's URL; faces: its contact "
                                                                    "sheet (JPEG), when kept")


class CallbackEvent(BaseModel):
    """What the service POSTs to a job's ``callback_url`` when the job ends (Standard Webhooks signed)."""

    type: Literal["job.done", "job.failed"] = Field(description="job.done or job.failed")
    timestamp: datetime = Field(description="when the job ended (UTC)")
    data: JobStatus = Field(description="the job's document, as GET /jobs/{id} answers it")


class ProblemDoc(BaseModel):
    """RFC 9457 problem document (media type application/problem+json)."""

    type: str = Field(description="urn:djldml:problem:<code>")
    title: str = Field(description="human-readable summary of the code")
    status: int = Field(description="HTTP status")
    code: str = Field(description="stable machine-readable code (table in the API description)")
    detail: str | None = Field(None, description="what went wrong in this case")
    job_id: str | None = Field(None, description="the failed job, when the error came from a job")
    errors: list[dict[str, Any]] | None = Field(None, description="invalid_request: the fields at fault")


class Health(BaseModel):
    status: str = Field("ok", description="always ok: the process answers")


class Readiness(BaseModel):
    ready: bool = Field(description="true when every check is ok")
    checks: dict[str, str] = Field(description="component → 'ok' or the reason it is not ready")
    mode: str = Field(description="embedded or stack")


class Models(BaseModel):
    models: list[Model] = Field(description="the model this service serves")


def job_status(job: Job) -> JobStatus:
    """The client's view of a stored job (service.jobs.Job): no owner, upload path or idempotency scope."""
    error = None
    if job.error:
        code = job.error.get("code", "internal_error")
        p = PROBLEMS.get(code, PROBLEMS["internal_error"])
        error = JobError(code=code, status=p.status, title=p.title, detail=job.error.get("detail"))
    links = {"self": f"/jobs/{job.id}"}
    if job.faces_preview and job.status == "done":
        links["faces"] = f"/jobs/{job.id}/faces"
    return JobStatus(
        id=job.id, status=job.status, progress=min(1.0, max(0.0, job.progress)),
        created_at=datetime.fromtimestamp(job.created_at, UTC), updated_at=datetime.fromtimestamp(job.updated_at, UTC),
        result=job.result, error=error, callback_url=job.callback_url, faces_preview=job.faces_preview, links=links,
    )
