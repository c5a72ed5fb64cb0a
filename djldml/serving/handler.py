"""The TorchServe handler's logic: a batch of requests, each a .npy clip array → per-clip BDI-II distributions.

Packed into the .mar by ``trainer export`` (entry file djldml/serving/torchserve_handler.py) together with the
``djldml`` sources it imports, so the archive runs in a stock TorchServe image: this file imports only
``djldml``, torch and numpy (not ``ts``, not ``service``).

Wire format (one request):
- body: ``djldml.clips.clips_to_bytes(clips)`` — a .npy ``uint8 [N, 16, 112, 112, 3]`` array, sent with
  ``Content-Type: application/octet-stream`` (anything else reaches the handler parsed, not raw);
- 200 response: JSON ``{"distributions": [[64 floats], ...]}``, one row per clip, in order;
- a bad body gives that request alone a 400 with ``{"error": {"code": "model_error", "message": ...}}``; the
  other requests of the batch are still answered, and the worker lives on.

TorchServe batches several requests (``batchSize`` / ``maxBatchDelay`` of the archive's model-config.yaml):
``preprocess`` parses each body, ``inference`` concatenates the good ones into one network run and splits
the result back, ``postprocess`` turns each part into its response. The in-process backend imports these
same functions, so both backends compute the same numbers.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Union

import numpy as np
import torch

from djldml.clips import InputNormalisation, clips_from_bytes, validate_model_clips
from djldml.device import torchserve_device
from djldml.errors import DJLDMLError, ModelError
from djldml.inference import DEFAULT_BATCH, clip_distributions, clip_inputs
from djldml.model_card import CARD_FILENAME
from djldml.runtime import ClipNetwork, load_model_dir, runtime_name

log = logging.getLogger(__name__)

MAX_CLIPS_PER_REQUEST = 1024

Parsed = Union[np.ndarray, DJLDMLError]  # noqa: UP007 (a request's clips, or why it has none; 3.9-safe)


def request_body(request: object) -> object:
    """The raw body of one TorchServe request (``body`` for raw bodies, ``data`` for form fields)."""
    if isinstance(request, dict):
        return request.get("body", request.get("data"))
    return request


def parse_clips(body: object) -> np.ndarray:
    """One request body → ``uint8 [N, 16, 112, 112, 3]``; ModelError for anything else."""
    if not isinstance(body, (bytes, bytearray)):  # noqa: UP038 (3.9-safe)
        raise ModelError("request body must be a .npy clip array sent as application/octet-stream")
    clips = clips_from_bytes(body, max_clips=MAX_CLIPS_PER_REQUEST)
    validate_model_clips(clips)
    return clips


def handler_knobs(knobs: dict | None, device: torch.device) -> tuple[int, bool]:
    """(clips per forward, AMP) from the ``handler:`` section of the archive's model-config.yaml.

    ``clip_batch`` defaults to djldml.inference.DEFAULT_BATCH; ``amp`` (float16 autocast) applies on a GPU only.
    """
    knobs = knobs or {}
    return int(knobs.get("clip_batch", DEFAULT_BATCH)), bool(knobs.get("amp", False)) and device.type == "cuda"


def preprocess(requests: list) -> list[Parsed]:
    """Parse every request on its own, so one bad body fails only its own request."""
    parsed: list[Parsed] = []
    for request in requests:
        try:
            parsed.append(parse_clips(request_body(request)))
        except DJLDMLError as exc:
            parsed.append(exc)
    return parsed


def inference(net: ClipNetwork, parsed: list[Parsed], batch_size: int = DEFAULT_BATCH, amp: bool = False,
              mirror: bool = False, normalisation: InputNormalisation | None = None, dynamics: str = "none") -> list:
    """One network run over all good requests' clips, split back per request (errors pass through);
    ``mirror``: the model card's mirror averaging, ``normalisation``: its input normalisation, ``dynamics``:
    its input dynamics
    (djldml.inference.clip_distributions)."""
    good = [p for p in parsed if isinstance(p, np.ndarray)]
    if not good:
        return list(parsed)
    dists = clip_distributions(net, np.concatenate(good), batch_size=batch_size, amp=amp, mirror=mirror,
                               normalisation=normalisation, dynamics=dynamics)
    out: list = []
    start = 0
    for p in parsed:
        if isinstance(p, np.ndarray):
            out.append(dists[start : start + len(p)])
            start += len(p)
        else:
            out.append(p)
    return out


def postprocess(results: list) -> list[tuple[int, dict]]:
    """Each request's (HTTP status, JSON body)."""
    responses = []
    for r in results:
        if isinstance(r, DJLDMLError):
            responses.append((400, {"error": {"code": r.code, "message": r.message}}))
        else:
            responses.append((200, {"distributions": np.asarray(r, dtype=np.float64).tolist()}))
    return responses


class DJLDMLHandler:
    """Holds the loaded network; TorchServe calls :func:`handle` (module level) which delegates here.

    On the CPU the network runs on the engine djldml.runtime chooses (OpenVINO when installed; the environment's
    ``DJLDML_RUNTIME=torch`` forces PyTorch); on a GPU on PyTorch."""

    def __init__(self) -> None:
        self.net: ClipNetwork | None = None
        self.card: dict = {}
        self.batch_size = DEFAULT_BATCH
        self.amp = False
        self.mirror = False
        self.normalisation: InputNormalisation | None = None
        self.dynamics = "none"

    def initialize(self, context) -> None:
        props = context.system_properties
        model_dir = props.get("model_dir", ".")
        device = torchserve_device(props.get("gpu_id"))
        # Optional knobs from the archive's model-config.yaml, section "handler".
        knobs = (getattr(context, "model_yaml_config", None) or {}).get("handler", {})
        self.batch_size, self.amp = handler_knobs(knobs, device)
        self.net = load_model_dir(model_dir, device)
        card_path = os.path.join(model_dir, CARD_FILENAME)
        if os.path.exists(card_path):
            with open(card_path, encoding="utf-8") as f:
                self.card = json.load(f)
        self.mirror, self.normalisation, self.dynamics = clip_inputs(self.card.get("inference"))
        log.info("djldml model loaded on %s (runtime %s, amp=%s, clip batch %d, mirror averaging %s)", device,
                 runtime_name(self.net), self.amp, self.batch_size, self.mirror)

    def handle(self, data: list, context) -> list:
        if _is_describe(context):  # GET /models/<name>?customized=true
            return [json.dumps(self.card)]
        if self.net is None:
            raise RuntimeError("handle() before initialize()")
        results = inference(self.net, preprocess(data), self.batch_size, self.amp, self.mirror, self.normalisation,
                            self.dynamics)
        out = []
        for idx, (status, body) in enumerate(postprocess(results)):
            if status != 200:
                context.set_response_status(status, body["error"]["code"], idx)
            context.set_response_content_type(idx, "application/json")
            out.append(json.dumps(body))
        return out


def _is_describe(context) -> bool:
    try:
        return context.get_request_header(0, "describe") == "True"
    except Exception:  # no such header / older context API
        return False


_service = DJLDMLHandler()


def handle(data, context):
    """TorchServe's entry point: called once with ``data=None`` to initialise, then once per batch."""
    if _service.net is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
