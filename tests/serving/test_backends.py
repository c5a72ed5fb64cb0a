"""Both inference backends: TorchServe over HTTP (mocked transport, then a real TorchServe) and in-process."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from devstack import free_port
from djldml.clips import clips_from_bytes
from djldml.errors import ModelError
from service.backends.base import BackendUnavailable
from service.backends.in_process import InProcessBackend
from service.backends.torchserve import TorchServeBackend

from .conftest import MODEL_NAME, random_clips

CLIP_BYTES = 16 * 112 * 112 * 3


def _mocked(handler, **kw) -> TorchServeBackend:
    b = TorchServeBackend("http://ts.invalid", "http://mgmt.invalid", MODEL_NAME, **kw)
    b._client = httpx.Client(transport=httpx.MockTransport(handler))
    return b


def _answer(request: httpx.Request) -> httpx.Response:
    n = len(clips_from_bytes(request.content))
    return httpx.Response(200, json={"distributions": np.full((n, 64), 1 / 64).tolist()})


# ---------------------------------------------------------------------------------------------- unit (mocked)


def test_batches_stay_under_the_request_limit_and_keep_order():
    seen = []

    def handler(request):
        assert request.headers["content-type"] == "application/octet-stream"
        assert request.headers["authorization"] == "Bearer tok"
        assert len(request.content) <= 3 * CLIP_BYTES + 1024
        clips = clips_from_bytes(request.content)
        seen.append(len(clips))
        # Echo each clip's first pixel as a point mass, so the order of the answer is checkable.
        d = np.zeros((len(clips), 64))
        d[np.arange(len(clips)), clips[:, 0, 0, 0, 0] % 64] = 1.0
        return httpx.Response(200, json={"distributions": d.tolist()})

    b = _mocked(handler, token="tok", max_request_bytes=3 * CLIP_BYTES + 1024)
    clips = np.zeros((10, 16, 112, 112, 3), np.uint8)
    clips[:, 0, 0, 0, 0] = np.arange(10)
    d = b.clip_distributions(clips)
    assert sorted(seen) == [1, 3, 3, 3]
    assert d.argmax(1).tolist() == list(range(10))


@pytest.mark.parametrize(("status", "body", "error"), [
    (503, b"", BackendUnavailable), (507, b"", BackendUnavailable), (500, b"boom", BackendUnavailable),
    (404, b'{"code": 404, "type": "ModelNotFoundException"}', BackendUnavailable),
    (400, b'{"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed"}',
     BackendUnavailable),
    (400, json.dumps({"error": {"code": "model_error", "message": "bad clips"}}).encode(), ModelError),
    (413, b"", ModelError),
    (200, b'{"distributions": [[1.0]]}', ModelError),  # wrong shape
    (200, b"<html>", ModelError),
])
def test_http_failures_map_to_typed_errors(status, body, error):
    b = _mocked(lambda r: httpx.Response(status, content=body))
    with pytest.raises(error):
        b.clip_distributions(random_clips(1))


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                 httpx.RemoteProtocolError("reset")])
def test_transport_failures_are_backend_unavailable(exc):
    def handler(request):
        raise exc

    with pytest.raises(BackendUnavailable):
        _mocked(handler).clip_distributions(random_clips(1))


def test_nothing_listening_is_backend_unavailable():
    url = f"http://127.0.0.1:{free_port()}"
    b = TorchServeBackend(url, url, MODEL_NAME, timeout=5)
    with pytest.raises(BackendUnavailable):
        b.clip_distributions(random_clips(1))
    ok, reason = b.ready()
    assert not ok and "unreachable" in reason


def test_ready_needs_a_ready_worker():
    def mgmt(status):
        return lambda r: httpx.Response(200, json=[{"workers": [{"status": status}]}])

    assert _mocked(mgmt("READY")).ready() == (True, "")
    ok, reason = _mocked(mgmt("UNLOADING")).ready()
    assert not ok and reason


def test_empty_clips_need_no_request():
    b = _mocked(lambda r: pytest.fail("no request expected"))
    assert b.clip_distributions(np.zeros((0, 16, 112, 112, 3), np.uint8)).shape == (0, 64)


def test_in_process_refuses_bad_clips(tiny_mar):
    b = InProcessBackend(tiny_mar, device="cpu")
    for bad in (np.zeros((1, 8, 112, 112, 3), np.uint8), np.zeros((1, 16, 112, 112, 3), np.float32)):
        with pytest.raises(ModelError):
            b.clip_distributions(bad)
    assert b.ready() == (True, "")
    assert b.model_info().name == MODEL_NAME and b.model_info().synthetic_demo


# ---------------------------------------------------------------------------------------------- real TorchServe


@pytest.mark.integration
def test_torchserve_and_in_process_give_the_same_distributions(torchserve, tiny_mar):
    clips = random_clips(13, seed=5)
    local = InProcessBackend(tiny_mar, device="cpu")
    # 4 clips per request → 4 concurrent requests that TorchServe may batch together.
    remote = TorchServeBackend(torchserve.inference_url, torchserve.management_url, MODEL_NAME,
                               token=torchserve.token, management_token=torchserve.management_token,
                               max_request_bytes=4 * CLIP_BYTES + 1024, mar_path=tiny_mar)
    try:
        assert remote.ready() == (True, "")
        a, b = local.clip_distributions(clips), remote.clip_distributions(clips)
        assert a.shape == b.shape == (13, 64)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
        assert np.abs(a[0] - a[1]).max() > 1e-3  # the clips' answers differ, so order mistakes would show
        here = local.model_info()  # same archive, same sha256; only the in-process one knows its engine
        assert here.extra.pop("engine")["runtime"] in ("openvino", "torch")
        assert "engine" not in remote.model_info().extra
        assert remote.model_info() == here
    finally:
        remote.close()


@pytest.mark.integration
def test_torchserve_token_and_errors(torchserve, tiny_mar):
    url, mgmt = torchserve.inference_url, torchserve.management_url
    clips = random_clips(2)
    no_token = TorchServeBackend(url, mgmt, MODEL_NAME)
    with pytest.raises(BackendUnavailable):
        no_token.clip_distributions(clips)
    assert no_token.ready()[0] is False
    assert TorchServeBackend(url, None, MODEL_NAME, token=torchserve.token).ready() == (True, "")  # /ping
    good = TorchServeBackend(url, mgmt, MODEL_NAME, token=torchserve.token,
                             management_token=torchserve.management_token)
    with pytest.raises(ModelError):  # the handler's 400: wrong clip length
        good.clip_distributions(np.zeros((1, 8, 112, 112, 3), np.uint8))
    with pytest.raises(BackendUnavailable):  # not registered
        TorchServeBackend(url, None, "no-such-model", token=torchserve.token).clip_distributions(clips)
    # The worker survived the bad request; without a local archive the card comes from the handler.
    assert good.clip_distributions(clips).shape == (2, 64)
    info = good.model_info()
    assert info.name == MODEL_NAME and info.synthetic_demo and info.sha256 == ""


@pytest.mark.integration
def test_torchserve_raw_body_needs_octet_stream(torchserve):
    """A body sent as a form is parsed by TorchServe (the handler gets no bytes) and refused as a 400."""
    from djldml.clips import clips_to_bytes

    headers = {"Authorization": f"Bearer {torchserve.token}", "Content-Type": "application/x-www-form-urlencoded"}
    r = httpx.post(f"{torchserve.inference_url}/predictions/{MODEL_NAME}", content=clips_to_bytes(random_clips(1)),
                   headers=headers, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_error"
