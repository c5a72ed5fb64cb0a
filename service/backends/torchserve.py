"""TorchServe backend: clips → HTTP requests to TorchServe's inference API → per-clip distributions.

Clips are sent in requests that stay under TorchServe's ``max_request_size`` (``max_request_bytes`` here must
not exceed it; default = TorchServe's default, 6,553,500 bytes ≈ 10 clips), several at once so that
TorchServe's batching can run them together. Body and answer are the handler's wire format
(djldml/serving/handler.py). Failures map onto two errors:
- ``BackendUnavailable`` (retry later): connection refused/reset, timeout, 5xx (503 no worker, 507 out of
  memory), 404 model not registered, or an auth failure (a deployment fault, not the caller's);
- ``ModelError`` (do not retry): the handler rejected the clips (400 with its JSON error), or 413.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from djldml import labels
from djldml.clips import clips_to_bytes, validate_clips
from djldml.errors import ModelError
from djldml.model_card import ModelCard

from .archive import open_archive
from .base import BackendUnavailable, ModelInfo

#: TorchServe's default max_request_size; raise both together (docker/config.properties and this setting).
DEFAULT_MAX_REQUEST_BYTES = 6_553_500
_NPY_HEADER_ROOM = 1024  # a .npy header is 128 bytes; keep margin


WORKER_READY = "READY"  # a TorchServe worker that has loaded the model and takes requests


def worker_states(described: list[dict[str, Any]]) -> list[str]:
    """The ``status`` of every worker, all versions, in a management API ``GET /models/<name>`` answer."""
    return [str(w.get("status")) for version in described for w in version.get("workers", [])]


class TorchServeBackend:
    def __init__(self, inference_url: str, management_url: str | None = None, model_name: str = "djldml-demo",
                 token: str | None = None, timeout: float = 120.0,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, *, management_token: str | None = None,
                 mar_path: str | Path | None = None, max_parallel: int = 4, key_file: str | Path | None = None):
        """``token``: the inference key; ``management_token`` (default: ``token``) for the management API.
        ``mar_path``: the archive TorchServe serves, when this host can read it (model_info's sha256).
        ``key_file``: TorchServe's ``key_file.json`` (token auth on, same host): the keys are read from it, and
        read again whenever it changes — TorchServe makes new keys each time it starts, so a restarted
        TorchServe is usable again without restarting this process. It takes precedence over the tokens."""
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/") if management_url else None
        self.model_name = model_name
        self.max_request_bytes = max_request_bytes
        self.mar_path = Path(mar_path) if mar_path else None
        self.max_parallel = max(1, max_parallel)
        self.key_file = Path(key_file) if key_file else None
        self._key_stamp: tuple[int, int] | None = None
        self._set_keys(token, management_token)
        self._client = httpx.Client(timeout=timeout)
        self._info: ModelInfo | None = None
        self._info_stamp: tuple[int, int] | None = None

    def _set_keys(self, token: str | None, management_token: str | None) -> None:
        self._inference_headers = {"Content-Type": "application/octet-stream", **_bearer(token)}
        self._management_headers = _bearer(management_token or token)
        self._ping_headers = _bearer(token)  # /ping is on the inference API

    def _refresh_keys(self) -> None:
        """Re-read ``key_file`` when it changed (a stat per request; a half-written file is retried next time)."""
        if self.key_file is None:
            return
        try:
            st = self.key_file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._key_stamp:
                return
            keys = json.loads(self.key_file.read_text())
            self._set_keys(keys["inference"]["key"], keys["management"]["key"])
            self._key_stamp = stamp
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or being rewritten: the request goes with the keys we have (401 → unavailable)

    # ------------------------------------------------------------------------------------------ inference

    def clips_per_request(self, clips: np.ndarray) -> int:
        per_clip = clips[0].nbytes if len(clips) else 1
        n = (self.max_request_bytes - _NPY_HEADER_ROOM) // per_clip
        if n < 1:
            raise ModelError(f"one clip ({per_clip} bytes) exceeds the request limit of {self.max_request_bytes}")
        return n

    def clip_distributions(self, clips: np.ndarray) -> np.ndarray:
        validate_clips(clips)
        if len(clips) == 0:
            return np.zeros((0, labels.NUM_BINS))
        n = self.clips_per_request(clips)
        chunks = [clips[i : i + n] for i in range(0, len(clips), n)]
        if len(chunks) == 1:
            return self._predict(chunks[0])
        with ThreadPoolExecutor(min(self.max_parallel, len(chunks))) as pool:
            return np.concatenate(list(pool.map(self._predict, chunks)))

    def _predict(self, clips: np.ndarray) -> np.ndarray:
        url = f"{self.inference_url}/predictions/{self.model_name}"
        self._refresh_keys()
        try:
            r = self._client.post(url, content=clips_to_bytes(clips), headers=self._inference_headers)
        except httpx.TimeoutException:
            raise BackendUnavailable("torchserve timed out") from None
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"torchserve unreachable ({exc.__class__.__name__})") from None
        if r.status_code == 200:
            return _parse_distributions(r, len(clips))
        error = _handler_error(r)
        if r.status_code == 400 and error is not None:
            raise ModelError(error.get("message", "torchserve rejected the clips"))
        if r.status_code == 413:
            raise ModelError(f"request of {len(clips)} clips exceeds torchserve's max_request_size; "
                             "lower max_request_bytes to match config.properties")
        if r.status_code == 404:
            raise BackendUnavailable(f"model {self.model_name} is not registered in torchserve")
        raise BackendUnavailable(f"torchserve answered {r.status_code}")

    # ------------------------------------------------------------------------------------------ status, info

    def ready(self) -> tuple[bool, str]:
        """READY workers per the management API (``/ping`` is healthy before the model is loaded)."""
        self._refresh_keys()
        try:
            if self.management_url is None:
                r = self._client.get(f"{self.inference_url}/ping", headers=self._ping_headers, timeout=5.0)
                healthy = r.status_code == 200 and r.json().get("status") == "Healthy"
                return (True, "") if healthy else (False, f"torchserve ping answered {r.status_code}")
            r = self._client.get(f"{self.management_url}/models/{self.model_name}",
                                 headers=self._management_headers, timeout=5.0)
        except (httpx.TransportError, ValueError) as exc:
            return False, f"torchserve unreachable ({exc.__class__.__name__})"
        if r.status_code != 200:
            return False, f"torchserve management answered {r.status_code} for model {self.model_name}"
        states = worker_states(r.json())
        if WORKER_READY in states:
            return True, ""
        return False, f"model {self.model_name}: no READY worker ({len(states)} workers)"

    def model_info(self) -> ModelInfo:
        """From the local archive when ``mar_path`` exists (with its sha256), else the card the handler describes."""
        if self.mar_path is not None and self.mar_path.is_file():
            st = self.mar_path.stat()
            stamp = (st.st_mtime_ns, st.st_size)  # re-read after a new archive was exported over the old one
            if self._info is None or self._info_stamp != stamp:
                self._info, self._info_stamp = open_archive(self.mar_path).model_info(), stamp
        elif self._info is None:
            self._info = self._described_info()
        return self._info

    def _described_info(self) -> ModelInfo:
        if self.management_url is None:
            raise BackendUnavailable("no model archive and no torchserve management URL to describe the model")
        self._refresh_keys()
        try:
            r = self._client.get(f"{self.management_url}/models/{self.model_name}",
                                 params={"customized": "true"}, headers=self._management_headers, timeout=10.0)
            r.raise_for_status()
            card = r.json()[0].get("customizedMetadata") or {}
            card = json.loads(card) if isinstance(card, str) else card
        except (httpx.HTTPError, ValueError, IndexError) as exc:
            raise BackendUnavailable(f"cannot describe model {self.model_name} ({exc.__class__.__name__})") from None
        try:
            return ModelInfo.from_card(ModelCard.from_dict(card))
        except ModelError as exc:
            raise BackendUnavailable(f"model {self.model_name} describes itself badly ({exc.message})") from None

    def close(self) -> None:
        self._client.close()


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _handler_error(r: httpx.Response) -> dict | None:
    """The handler's ``{"error": {...}}`` body, or None (TorchServe's own errors look different)."""
    try:
        body = r.json()
    except ValueError:
        return None
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) and "code" in err else None


def _parse_distributions(r: httpx.Response, n: int) -> np.ndarray:
    try:
        d = np.asarray(r.json()["distributions"], dtype=np.float64)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"torchserve answer is not a distribution list ({exc.__class__.__name__})") from None
    if d.shape != (n, labels.NUM_BINS):
        raise ModelError(f"torchserve returned {d.shape} for {n} clips")
    return d
