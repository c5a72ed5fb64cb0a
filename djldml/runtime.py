"""Which engine runs the network's forward pass — decided here, once, for the trainer, the worker and the handler.

- On a CUDA device: PyTorch, as before (float32, or float16 autocast with the archive's ``amp``).
- On the CPU: OpenVINO when the ``openvino`` package is importable, else PyTorch. Measured on 2 cores (docs/deploy.md,
  ``python -m bench backends``), OpenVINO in float32 ran c3d-tiny, c3d-small and the paper-size c3d 3.2–3.3×,
  3.2–3.3× and 2.0–2.1× faster than eager PyTorch. For c3d that takes fewer
  multiplications (:mod:`djldml.temporal_winograd`): its direct 3D convolutions already ran at ≈92 % of the cores'
  float32 FMA peak. ONNX Runtime and ``torch.compile`` were slower than OpenVINO (and ``torch.compile`` needs a
  C++ compiler and ~35 s per compile). OpenVINO runs two streams, each batch cut into requests that they take in turn
  (``python -m bench.bench_openvino_configs``, :data:`REQUEST_BUDGET_BYTES`).
- ``DJLDML_RUNTIME=torch`` forces PyTorch everywhere (``openvino`` forces OpenVINO and fails without it; ``auto``,
  the default, is the rule above). The in-process backend reads it through ``service.settings``; the TorchServe
  handler reads the environment its worker inherits.

PyTorch stays the reference: OpenVINO runs in float32 (``INFERENCE_PRECISION_HINT=f32``). Its CPU default on a
processor with AVX512-BF16 or AMX is bfloat16, which moved peaked distributions by up to 1.3e-3–5.7e-3
(``bench backends``) — far over the 1e-4 the served distribution may differ from PyTorch's
(tests/serving/test_runtime.py).

Where the OpenVINO model comes from: ``trainer export`` writes the network as OpenVINO IR (``openvino/model.xml``
and ``.bin``, float32, tagged with the sha256 of ``model.pt`` and the ``temporal_winograd.LAYOUT`` it was
converted in) beside the state dict in the .mar, so loading is a read (model.bin memory-mapped) and a compile
(c3d: 0.06–0.12 s, after 0.7–1.1 s for its model.pt). An archive without it, whose IR belongs to other weights,
or whose IR predates the layout of a network with layers to rewrite, is converted from the state dict at load
time (a trace — one forward pass — and ``openvino.convert_model``: 1.3–1.9 s for c3d-tiny there).

What the engines share: the same ``to_tensor`` (uint8 clips → float32 ``[N, 3, T, H, W]``), the same clip batches
and mirror averaging (:func:`djldml.inference.clip_distributions`) and the same head → distribution rule
(:func:`djldml.network.head_distributions`); only the network's layers run elsewhere.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Protocol, Union

import numpy as np
import torch

from . import temporal_winograd
from .errors import ModelError
from .model_card import file_sha256
from .model_file import MODEL_FILENAME, load_model
from .network import DJLDMLNet, NetConfig, head_distributions

log = logging.getLogger(__name__)

RUNTIME_ENV = "DJLDML_RUNTIME"
RUNTIMES = ("auto", "torch", "openvino")

#: The OpenVINO IR inside an archive (paths relative to its root / TorchServe's model_dir).
IR_XML = "openvino/model.xml"
IR_BIN = "openvino/model.bin"
_SHA_KEY = ["djldml", "model_sha256"]  # rt_info entry of the IR: sha256 of the model.pt it was made from
_LAYOUT_KEY = ["djldml", "layout"]  # rt_info entry of the IR: temporal_winograd.LAYOUT of the network converted

#: OpenVINO CPU streams (at most; never more than threads): measured on 2 cores, see compile_openvino.
STREAMS = 2

#: Bytes of the largest feature map one OpenVINO infer request may hold (its clips × the first convolution's output,
#: float32). Each stream keeps the intermediate tensors of the request it runs, so this bounds the engine's memory
#: whatever the batch. Measured on 2 cores (``python -m bench.bench_engine_memory``, docs/deploy.md "Memory"): c3d
#: (49 MiB a clip), 16 clips at 1 / 2 / 4 / 8 clips per request: peak RSS 1.76 / 1.79 / 2.38 / 3.54 GiB (eager
#: 2.26) in 3.45 / 3.42 / 3.29 / 3.28 s; c3d-small (6.1 MiB a clip), 32 clips at 1 to 10: 0.30-0.31 s, 0.51-0.63
#: GiB. 64 MiB: c3d 1 clip, c3d-small 10, c3d-tiny 20.
REQUEST_BUDGET_BYTES = 64 * 2**20


#: The path of a model.xml beside its model.bin, or (model.xml, model.bin) as bytes. Union, not ``|``: the
#: handler packed in a .mar also runs on Python 3.9 (tests/serving/test_handler.py).
IR = Union[str, tuple[bytes, bytes]]  # noqa: UP007


class ClipNetwork(Protocol):
    """What :func:`djldml.inference.clip_distributions` runs on: a DJLDMLNet or an :class:`OpenVINONetwork`."""

    config: NetConfig

    @property
    def device(self) -> torch.device: ...

    def clip_distributions(self, x: torch.Tensor) -> torch.Tensor:
        """float32 ``[N, 3, T, H, W]`` (``djldml.clips.to_tensor``) → float32 ``[N, 64]`` distributions."""


def requested(value: str | None = None) -> str:
    """The runtime asked for: ``value`` (a setting) if given, else ``$DJLDML_RUNTIME``, else ``"auto"``.

    Raises ModelError for anything but ``auto``, ``torch`` or ``openvino``.
    """
    name = (value if value is not None else os.environ.get(RUNTIME_ENV, "") or "auto").strip().lower()
    if name not in RUNTIMES:
        raise ModelError(f"{RUNTIME_ENV} must be one of {', '.join(RUNTIMES)}; got {name!r}")
    return name


def openvino_available() -> bool:
    try:
        _openvino()
    except ImportError:
        return False
    return True


def choose(device: Any = "cpu", runtime: str | None = None) -> str:
    """``"torch"`` or ``"openvino"`` for a network on ``device`` — the one rule (module docstring).

    ``runtime``: ``auto``/``torch``/``openvino`` (None: :func:`requested`). A CUDA device is always PyTorch (the
    GPU path is unchanged); ModelError when ``openvino`` is forced but not installed.
    """
    name = requested(runtime)
    if torch.device(device).type != "cpu" or name == "torch":
        return "torch"
    if openvino_available():
        return "openvino"
    if name == "openvino":
        raise ModelError(f"{RUNTIME_ENV}=openvino but the openvino package is not installed")
    return "torch"


def inference_threads() -> int:
    """Threads OpenVINO may use: as many as PyTorch's intra-op pool (``OMP_NUM_THREADS`` / ``torch.set_num_threads``
    limit both), so switching engines does not change how much of the machine inference takes."""
    return max(1, torch.get_num_threads())


# ---------------------------------------------------------------------------------------------- OpenVINO


def _openvino():
    """The ``openvino`` module, with its usage telemetry off.

    ``openvino.convert_model`` reports usage to OpenVINO's telemetry service (and writes ~/intel/) unless the
    user opted out; a clinical service must not phone home. With ``openvino_telemetry`` unimportable, OpenVINO
    uses its own no-op stub (openvino/tools/ovc/telemetry_stub.py). If something imported openvino before us, the
    converter modules are pointed at that stub instead.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)
    import openvino as ov

    try:
        from openvino.tools.ovc import telemetry_stub
    except ImportError:  # pragma: no cover - a build without the converter: nothing to silence
        return ov
    for name in ("openvino.tools.ovc.convert_impl", "openvino.tools.ovc.telemetry_utils", "openvino.tools.ovc.utils"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "tm", telemetry_stub) is not telemetry_stub:
            module.tm = telemetry_stub
    return ov


class _HeadOutput(torch.nn.Module):
    """The layers the engine runs, as they are: clips → the head's raw output (``[N, 64]`` logits or ``[N, 1]``
    score). The engine itself runs :class:`djldml.temporal_winograd.EngineNetwork` (the same, its large
    convolutions rewritten); benchmarks time this one as eager PyTorch's side."""

    def __init__(self, net: DJLDMLNet):
        super().__init__()
        self.features, self.fc, self.head = net.features, net.fc, net.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x)))


def to_openvino(net: DJLDMLNet, model_sha256: str = ""):
    """Convert a network (eval mode, CPU) to an ``openvino.Model`` with a dynamic batch dimension, float32.

    Input ``clips``: float32 ``[N, 3, 16, 112, 112]``; output: the head's raw output. What is converted is
    :class:`djldml.temporal_winograd.EngineNetwork` — the network with its large 3×3×3 convolutions as Winograd
    F(m, 3) along time (fewer multiplications; see that module) — tagged with its ``LAYOUT``. ``model_sha256``
    (of the model.pt the weights came from) is recorded in the model's rt_info so a reader can tell its IR is
    current.
    """
    from .clips import CLIP_LENGTH, FACE_SIZE

    ov = _openvino()
    example = torch.zeros(1, 3, CLIP_LENGTH, FACE_SIZE, FACE_SIZE)
    with torch.no_grad():
        engine_net = temporal_winograd.EngineNetwork(net.cpu().eval(), CLIP_LENGTH).eval()
        # Traced here without trace checking: convert_model's own tracing re-runs the network to check the
        # trace, 3-4 forward passes instead of one (6 s instead of 1.7 s for c3d-tiny on a busy 2-core machine).
        traced = torch.jit.trace(engine_net, example, check_trace=False)
        model = ov.convert_model(traced, example_input=example, input=[(-1, 3, CLIP_LENGTH, FACE_SIZE, FACE_SIZE)])
    model.inputs[0].get_tensor().set_names({"clips"})
    model.set_rt_info(temporal_winograd.LAYOUT, _LAYOUT_KEY)
    if model_sha256:
        model.set_rt_info(model_sha256, _SHA_KEY)
    return model


def write_ir(net: DJLDMLNet, out_dir: str, model_sha256: str) -> list[str]:
    """Write the network as OpenVINO IR under ``out_dir`` (``IR_XML``, ``IR_BIN``; weights float32, not
    compressed to float16); returns the two paths. ``trainer export`` packs them into the .mar."""
    ov = _openvino()
    xml = os.path.join(out_dir, IR_XML)
    os.makedirs(os.path.dirname(xml), exist_ok=True)
    ov.save_model(to_openvino(net, model_sha256), xml, compress_to_fp16=False)
    return [xml, os.path.join(out_dir, IR_BIN)]


def read_ir(model_dir: str) -> IR | None:
    """The IR of an extracted archive (TorchServe's model_dir) as the path of its model.xml, or None when it has none.

    A path, not the files' bytes: OpenVINO then memory-maps model.bin instead of copying it (c3d: 1.2 s less load
    on the 2 development cores, docs/deploy.md "CPU inference engine")."""
    paths = [os.path.join(model_dir, name) for name in (IR_XML, IR_BIN)]
    if not all(os.path.isfile(p) for p in paths):
        return None
    return paths[0]


def _model_from_ir(ir: IR, model_sha256: str, rewrites: bool = True):
    """The IR as an ``openvino.Model`` if it was made from the model.pt with ``model_sha256`` and, when the network
    has layers to rewrite (``rewrites``), in the current ``temporal_winograd.LAYOUT``; else None."""
    ov = _openvino()
    try:
        if isinstance(ir, str):
            model = ov.Core().read_model(ir)
        else:
            weights = ov.Tensor(np.frombuffer(ir[1], dtype=np.uint8).copy())
            model = ov.Core().read_model(ir[0].decode("utf-8"), weights)
        made_from = model.get_rt_info(_SHA_KEY).astype(str) if model.has_rt_info(_SHA_KEY) else ""
        layout = model.get_rt_info(_LAYOUT_KEY).astype(str) if model.has_rt_info(_LAYOUT_KEY) else ""
    except Exception as exc:  # an IR this OpenVINO cannot read: convert from the state dict instead
        log.warning("OpenVINO IR in the archive unreadable (%s); converting from the state dict",
                    exc.__class__.__name__)
        return None
    if made_from != model_sha256:
        log.warning("OpenVINO IR in the archive is not of its model.pt; converting from the state dict")
        return None
    if rewrites and layout != temporal_winograd.LAYOUT:  # correct, but made before the rewrite: slower to serve
        log.warning("OpenVINO IR in the archive predates layout %s; converting from the state dict "
                    "(re-export the archive to skip this at load)", temporal_winograd.LAYOUT)
        return None
    return model


class OpenVINONetwork:
    """A DJLDMLNet's ``clip_distributions`` on an OpenVINO model compiled for the CPU in float32.

    ``source``: where the model came from — ``"archive IR"`` or ``"converted at load"``.
    """

    runtime = "openvino"
    training = False

    def __init__(self, compiled: Any, config: NetConfig, source: str, clips_per_request: int = 1):
        ov = _openvino()
        self.config = config
        self.source = source
        self.clips_per_request = max(1, int(clips_per_request))
        self._compiled = compiled
        #: Parallel infer requests: one per stream the compiled model has (STREAMS, ``compile_openvino``).
        self.streams = max(1, int(compiled.get_property("NUM_STREAMS")))
        self._queue = ov.AsyncInferQueue(compiled, self.streams)
        self._out: dict[int, np.ndarray] = {}
        self._queue.set_callback(self._done)
        self._lock = threading.Lock()  # one queue: calls from several threads take turns

    def _done(self, request: Any, part: int) -> None:
        self._out[part] = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def head_output(self, x: torch.Tensor) -> np.ndarray:
        """float32 ``[N, 3, T, H, W]`` on the CPU → the head's raw output, float32 ``[N, 64]`` (or ``[N, 1]``).

        The batch goes as requests of at most ``clips_per_request`` clips (:func:`clips_per_request`), and never
        fewer requests than streams, through one infer request per stream, run side by side (AsyncInferQueue);
        the outputs are put back in order.
        """
        clips = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        size = request_clips(self.clips_per_request, len(clips), self.streams)
        parts = [clips[i:i + size] for i in range(0, len(clips), size)] or [clips]
        with self._lock:
            self._out.clear()
            for i, part in enumerate(parts):
                self._queue.start_async({0: part}, i, share_inputs=True)  # no copy: part lives until wait_all
            self._queue.wait_all()
            return np.concatenate([self._out[i] for i in range(len(parts))])

    def clip_distributions(self, x: torch.Tensor) -> torch.Tensor:
        """float32 ``[N, 3, T, H, W]`` on the CPU → float32 ``[N, 64]``, as DJLDMLNet.clip_distributions."""
        return head_distributions(self.config, torch.from_numpy(self.head_output(x)))

    # The trainer's evaluation toggles train/eval around a run; this network only ever infers.
    def eval(self) -> OpenVINONetwork:
        return self

    def train(self, mode: bool = True) -> OpenVINONetwork:
        if mode:
            raise ModelError("an OpenVINO-compiled network cannot be trained")
        return self


def compile_openvino(net: DJLDMLNet, ir: IR | None = None, model_sha256: str = "",
                     threads: int | None = None, precision: str = "f32") -> OpenVINONetwork:
    """``net`` compiled by OpenVINO for the CPU: from ``ir`` when it is ``net``'s (same ``model_sha256``), else
    converted from ``net``. ``threads``: default :func:`inference_threads`. ``precision``: ``f32`` (what is
    served); ``bf16`` only for ``bench backends`` to show what the served precision costs."""
    ov = _openvino()
    from .clips import CLIP_LENGTH

    rewrites = bool(temporal_winograd.plan(net.features, CLIP_LENGTH))
    model = _model_from_ir(ir, model_sha256, rewrites) if ir is not None and model_sha256 else None
    source = "archive IR" if model is not None else "converted at load"
    if model is None:
        model = to_openvino(net, model_sha256)
    threads = int(threads or inference_threads())
    compiled = ov.Core().compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": precision,  # f32, not the bf16 default of AVX512-BF16/AMX CPUs (docstring)
        # Two streams sharing the threads, each running part of a batch (OpenVINONetwork.clip_distributions),
        # not one stream whose threads meet at a barrier after every layer: on the shared 2 cores a descheduled
        # thread stalls the other less this way (docs/deploy.md "CPU inference engine", bench backends).
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": min(STREAMS, threads),
        "INFERENCE_NUM_THREADS": threads,
    })
    return OpenVINONetwork(compiled, net.config, source, clips_per_request(net))


def request_clips(clips_per_request: int, n_clips: int, streams: int) -> int:
    """Clips in each OpenVINO request for a batch of ``n_clips``: at most ``clips_per_request``, and small enough
    that every stream gets one (at least 1)."""
    return max(1, min(clips_per_request, -(-n_clips // streams)))


def clips_per_request(net: DJLDMLNet) -> int:
    """Clips per OpenVINO infer request for ``net``: as many as keep the first convolution's output — the largest
    feature map of these networks, each later stage at most doubling the channels while it quarters the frame
    area — within ``REQUEST_BUDGET_BYTES`` (at least 1)."""
    from .clips import CLIP_LENGTH, FACE_SIZE

    first = next((layer for layer in net.features if isinstance(layer, torch.nn.Conv3d)), None)
    if first is None:
        return 1
    per_clip = first.out_channels * CLIP_LENGTH * FACE_SIZE * FACE_SIZE * 4
    return max(1, REQUEST_BUDGET_BYTES // per_clip)


def prepare(net: DJLDMLNet, runtime: str | None = None, ir: IR | None = None,
            model_sha256: str = "") -> ClipNetwork:
    """What inference runs on for ``net`` (loaded on its device, eval mode): ``net`` itself for PyTorch, or its
    :class:`OpenVINONetwork` (see :func:`choose`; ``ir``/``model_sha256`` as :func:`compile_openvino`)."""
    if choose(net.device, runtime) == "torch":
        return net
    return compile_openvino(net, ir, model_sha256)


def load_model_dir(model_dir: str, device: Any = "cpu", runtime: str | None = None) -> ClipNetwork:
    """The network of a model directory (an extracted .mar: ``model.pt``, optionally the IR) ready for inference
    on ``device`` with the engine :func:`choose` picks. The TorchServe handler and the in-process backend both
    load this way. Raises ModelError for an unreadable model file or an unknown/unavailable runtime."""
    model_path = os.path.join(model_dir, MODEL_FILENAME)
    net = load_model(model_path, device)
    if choose(device, runtime) == "torch":
        return net
    return compile_openvino(net, read_ir(model_dir), file_sha256(model_path))


def runtime_name(net: ClipNetwork) -> str:
    """``"torch"`` or ``"openvino"``: which engine ``net`` runs on (for logs and benchmarks)."""
    return getattr(net, "runtime", "torch")
