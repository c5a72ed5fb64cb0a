"""The one place where settings choose the implementations: embedded mode or full stack.

| setting absent            | then                                                            |
|---------------------------|-----------------------------------------------------------------|
| ``DJLDML_BROKER_URL``     | jobs run in a thread pool of the gateway; job store in memory    |
| ``DJLDML_TORCHSERVE_URL`` | the in-process backend loads ``MODEL_STORE/MODEL_NAME.mar``     |
| ``DJLDML_UPLOAD_STORE``   | uploads wait in the local ``UPLOAD_DIR``, not an object store    |
"""

from __future__ import annotations

import logging

from .backends.base import BackendUnavailable, InferenceBackend, ModelInfo
from .jobs import JobStore, MemoryJobStore, RedisJobStore
from .settings import Settings
from .storage import LocalUploadStorage, UploadStorage


def build_store(s: Settings, worker: bool = False) -> JobStore:
    """The job store; a worker's waits up to STORE_PATIENCE_S for an unreachable Redis, the gateway's not at all."""
    if s.embedded:
        return MemoryJobStore(s.job_ttl_s)
    return RedisJobStore(s.broker_url, s.job_ttl_s, patience_s=s.store_patience_s if worker else 0.0)


def build_storage(s: Settings) -> UploadStorage:
    """The object store when ``DJLDML_UPLOAD_STORE`` is set (s3://bucket/prefix), else the private UPLOAD_DIR.
    Raises UnsafeUploadDir when UPLOAD_DIR (with an object store: of the local copies) is not private."""
    if s.upload_store:
        from .s3_storage import S3UploadStorage

        return S3UploadStorage(s.upload_store, s.upload_dir, endpoint_url=s.s3_endpoint_url, region=s.s3_region,
                               part_bytes=s.s3_part_bytes, server_side_encryption=s.s3_server_side_encryption)
    return LocalUploadStorage(s.upload_dir)


def build_backend(s: Settings) -> InferenceBackend:
    if s.torchserve_url:
        from .backends.torchserve import TorchServeBackend

        return TorchServeBackend(
            s.torchserve_url, s.torchserve_management_url, s.model_name, token=s.torchserve_token,
            timeout=s.backend_timeout_s, max_request_bytes=s.torchserve_max_request_bytes,
            management_token=s.torchserve_management_token, mar_path=s.model_archive,
            key_file=s.torchserve_key_file,
        )
    from .backends.in_process import InProcessBackend

    return InProcessBackend(s.model_archive, runtime=s.runtime)


class UnavailableBackend:
    """Stands in when the configured backend cannot be built (e.g. no model archive): never ready, says why.

    The gateway still starts (and /readyz explains); a worker's jobs fail with ``backend_unavailable``.
    """

    def __init__(self, reason: str):
        self.reason = reason

    def clip_distributions(self, clips):
        raise BackendUnavailable(self.reason)

    def model_info(self) -> ModelInfo:
        raise BackendUnavailable(self.reason)

    def ready(self) -> tuple[bool, str]:
        return False, self.reason

    def close(self) -> None:
        pass


def build_backend_or_unavailable(s: Settings) -> InferenceBackend:
    try:
        return build_backend(s)
    except Exception as exc:  # a missing or broken model must not stop the process from explaining itself
        logging.getLogger("service").error("inference backend unavailable: %s: %s", exc.__class__.__name__, exc)
        return UnavailableBackend(f"{exc.__class__.__name__}: {exc}")


def build_runner(s: Settings, store: JobStore, backend: InferenceBackend, storage: UploadStorage):
    if s.embedded:
        from .embedded import EmbeddedRunner

        return EmbeddedRunner(store, backend, storage, s)
    from .runners import CeleryRunner

    return CeleryRunner(s.broker_url)
