"""Every setting of the service, read from the environment (prefix ``DJLDML_``), in one class.

The wiring follows from two of them: no ``DJLDML_BROKER_URL`` → embedded mode (jobs run in a thread pool of the
gateway, the job store is in memory); no ``DJLDML_TORCHSERVE_URL`` → the in-process backend loads
``MODEL_STORE/MODEL_NAME.mar``. docs/configuration.md lists them all; keep it in step with this file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from djldml.scoring import BATCH_CLIPS

from .storage import default_upload_dir


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DJLDML_", extra="ignore", protected_namespaces=())

    # Wiring
    broker_url: str | None = Field(None, description="Redis URL of the Celery broker and job store; absent = embedded")
    torchserve_url: str | None = Field(None, description="TorchServe inference API; absent = in-process backend")
    torchserve_management_url: str | None = Field(None, description="TorchServe management API (model status)")
    torchserve_token: str | None = Field(None, description="inference API bearer token (TorchServe token auth on)")
    torchserve_management_token: str | None = Field(None, description="management API bearer token")
    torchserve_key_file: Path | None = Field(
        None, description="TorchServe's key_file.json (same host): keys read from it, again when it changes"
    )
    torchserve_max_request_bytes: int = Field(6_553_500, gt=0, description="TorchServe's max_request_size")
    runtime: Literal["auto", "torch", "openvino"] = Field(
        "auto", description="CPU inference engine of the in-process backend (and, read from the environment, of the "
                            "TorchServe handler): auto = OpenVINO when installed, torch forces PyTorch; a GPU always "
                            "runs PyTorch (djldml.runtime)")
    model_name: str = "djldml-demo"
    model_store: Path = Path("model_store")
    upload_dir: Path = Field(default_factory=default_upload_dir,
                             description="private (0700) directory of uploads; default ~/.cache/djldml/uploads "
                                         "(with an object store: of this host's transient local copies)")
    upload_store: str | None = Field(
        None, description="s3://bucket/prefix: uploads go to an S3-compatible object store (gateway and workers "
                          "on different hosts); unset = the local UPLOAD_DIR (one host or a shared volume)")
    s3_endpoint_url: str | None = Field(None, description="S3 API endpoint (MinIO, Ceph, rclone); unset = AWS")
    s3_region: str | None = Field(None, description="S3 region; unset = AWS_REGION / AWS_DEFAULT_REGION / us-east-1")
    s3_part_bytes: int = Field(8 * 1024**2, ge=5 * 1024**2,
                               description="multipart part size; the gateway holds at most two per upload")
    s3_server_side_encryption: str | None = Field(None, description="AES256 or aws:kms for every upload object")

    # Limits
    max_upload_bytes: int = Field(2 * 1024**3, gt=0, description="largest accepted upload, enforced while streaming")
    max_duration_s: float = Field(1800.0, gt=0, description="longest accepted video, seconds")
    min_duration_s: float = Field(0.5, ge=0, description="shortest accepted video, seconds")
    max_clips: int | None = Field(
        None, gt=0, description="override the model card's clip selection (face clips spread over a video); unset "
                                "= the card's, so that scores equal `trainer evaluate --videos`")
    max_concurrent_jobs_per_key: int = Field(4, gt=0, description="unfinished jobs one API key may have")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated API keys; empty = open API (a warning at start-up)"
    )
    allow_open_api: bool = Field(
        False, description="serve without API keys on a non-loopback address; without it the gateway refuses"
    )

    # Timeouts and lifetimes
    upload_idle_timeout_s: float = Field(
        30.0, gt=0, description="an upload that sends nothing for this long is dropped (408, partial file deleted)"
    )
    predict_wait_s: float = Field(60.0, ge=0, description="POST /predict waits this long before answering 202")
    job_ttl_s: int = Field(3600, gt=0, description="how long job status and result are kept")
    backend_timeout_s: float = Field(120.0, gt=0, description="one inference request to the backend")
    backend_retries: int = Field(3, ge=0, description="retries of a batch while the backend is unavailable")
    backend_retry_delay_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry")
    inference_batch_clips: int = Field(
        BATCH_CLIPS, gt=0, description="clips per backend request (TorchServe body limit); `trainer evaluate "
                                       "--videos` batches as the default does")
    job_time_limit_s: int = Field(
        960, gt=0, description="longest a job may run in a worker (the face pipeline's own budget is 900 s); "
                               "past it the job fails with job_timeout"
    )
    broker_visibility_timeout_s: int | None = Field(
        None, gt=0, description="an unacknowledged job is redelivered after this long (worker lost); "
                                "default JOB_TIME_LIMIT_S + 60: it must exceed the longest job"
    )
    broker_restore_interval_s: int = Field(60, gt=0, description="how often workers look for such jobs")
    max_job_attempts: int = Field(3, gt=0, description="deliveries of one job whose worker died before it fails")
    store_patience_s: float = Field(
        60.0, ge=0, description="a worker waits this long for an unreachable Redis (bounded backoff) before "
                                "deferring the job to a redelivery"
    )
    lease_s: float = Field(
        30.0, gt=0, description="a running job's lease, renewed every third of it; once it lapses (the worker "
                                "died) the sweeper enqueues the job again"
    )
    sweep_interval_s: float = Field(15.0, gt=0, description="how often the gateway's sweeper runs")
    stale_job_s: float = Field(
        300.0, gt=0, description="a queued job not updated for this long is enqueued again by the sweeper "
                                 "(its message may have been lost); a duplicate of a waiting job is a no-op"
    )
    embedded_workers: int = Field(
        2, gt=0, description="job threads in embedded mode; 2: one job's face clips overlap another's inference "
                             "(more videos/min on 2 cores: `python -m bench e2e`, docs/deploy.md)")
    inference_threads: int | None = Field(
        None, gt=0, description="PyTorch and OpenVINO threads of each Celery pool process; unset = the process's "
                                "cores // --concurrency, at least 1 (service.worker_threads; docs/deploy.md, "
                                "\"Throughput under load\")")
    retry_after_s: int = Field(5, gt=0, description="Retry-After of 503 answers")

    # Job-end notifications (service.callbacks)
    callback_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated hosts (or host:port, or *.domain) a job's callback_url "
                                          "may name; empty = callbacks refused")
    callback_secrets: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="comma-separated API_KEY=SECRET pairs: the Standard Webhooks signing "
                                          "secret (whsec_<base64>) of each key's callbacks; '*' = any other key "
                                          "(and the open API)")
    callback_timeout_s: float = Field(5.0, gt=0, description="one callback POST (connect + answer)")
    callback_retries: int = Field(5, ge=0, description="retries of a callback that failed (non-2xx, no answer)")
    callback_retry_delay_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry, max 60 s")

    @field_validator("upload_store", "s3_endpoint_url", "s3_region", "s3_server_side_encryption", mode="before")
    @classmethod
    def _empty_is_unset(cls, v):
        return v or None

    @field_validator("upload_store")
    @classmethod
    def _store_url(cls, v):
        if v is not None:
            from .s3_storage import parse_store_url

            parse_store_url(v)  # ValueError → a settings error at start-up, not at the first upload
        return v

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v):
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @field_validator("callback_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v):
        if isinstance(v, str):
            return [h.strip().lower() for h in v.split(",") if h.strip()]
        return v

    @field_validator("callback_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, v):
        if isinstance(v, str):  # "KEY=whsec_...,*=whsec_...": a secret's base64 may itself end in '='
            pairs = [p.strip().split("=", 1) for p in v.split(",") if p.strip()]
            if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
                raise ValueError("DJLDML_CALLBACK_SECRETS: expected API_KEY=SECRET pairs separated by commas")
            return {k.strip(): s.strip() for k, s in pairs}
        return v

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def visibility_timeout_s(self) -> int:
        """The broker's visibility timeout, seconds: as set, else the job time limit + 60 s. A message is
        unacknowledged from the moment a worker fetches it until its job ends; with late acks and prefetch 1 a
        worker fetches a message only when a slot is free, so that is the job's run time, at most the time
        limit. Anything shorter would redeliver live jobs; it is also how long a job whose whole worker died
        waits before it runs again (plus up to BROKER_RESTORE_INTERVAL_S)."""
        return self.broker_visibility_timeout_s or self.job_time_limit_s + 60

    @property
    def model_archive(self) -> Path:
        return self.model_store / f"{self.model_name}.mar"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
