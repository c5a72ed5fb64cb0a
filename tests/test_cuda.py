"""GPU paths that the CPU-only CI cannot reach: AMP training, checkpoints moving GPU → CPU, GPU vs CPU inference,
the TorchServe handler choosing the GPU. Every test is skipped where ``torch.cuda.is_available()`` is false.

Run them on a machine with an NVIDIA GPU: ``python -m pytest -q tests/test_cuda.py`` (docs/training.md, "Measured
on a GPU"). They import neither the face pipeline nor TorchServe, so they run in a bare PyTorch image.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from djldml.clips import CLIP_SHAPE
from djldml.inference import clip_distributions
from djldml.model_card import CARD_FILENAME
from djldml.model_file import MODEL_FILENAME, load_model, save_model
from djldml.network import build_network
from djldml.serving import handler
from trainer.config import SYNTHETIC_CONFIG, load_config
from trainer.train import train

from .trainer.conftest import TINY
from .trainer.fakes import FakePreparedDataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DEMO_MAR = Path(__file__).resolve().parents[1] / "model_store" / "djldml-demo.mar"


def random_clips(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 1, 3))
    return np.clip(base + rng.integers(-40, 40, (n, *CLIP_SHAPE)), 0, 255).astype(np.uint8)


def peaked_net(preset: str = "c3d-tiny"):
    """A seeded network with distinct, peaked clip distributions (a random init gives near-uniform ones)."""
    torch.manual_seed(0)
    net = build_network(preset)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)
        net.head.weight.mul_(30.0)
    return net.eval()


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("preset", ["c3d-tiny", "c3d"])
def test_amp_training_on_cuda_checkpoint_loads_on_cpu(preset, tmp_path):
    data = FakePreparedDataset(n_train=8, n_dev=4, n_test=2, n_frames=24, seed=0)
    cfg = load_config(SYNTHETIC_CONFIG, {**TINY, "preset": preset, "device": "cuda", "amp": True,
                                         "lr": 1e-4 if preset == "c3d" else 1e-3, "out": str(tmp_path / "run")})
    run_dir = train(cfg, data)
    records = rows(run_dir)
    assert len(records) == cfg.epochs
    assert all(math.isfinite(r["train_total"]) and math.isfinite(r["dev_mae"]) for r in records), records
    net = load_model(run_dir, "cpu")  # written on the GPU, read on a CPU-only machine
    assert all(p.device.type == "cpu" for p in net.parameters())
    ckpt = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in ckpt["model"]["state_dict"].values())
    # Same weights, two devices: the float32 GPU forward (TF32 off) matches the CPU one.
    clips = random_clips(4)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        on_cpu = clip_distributions(net, clips)
        on_gpu = clip_distributions(load_model(run_dir, "cuda"), clips)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    assert np.abs(on_cpu - on_gpu).max() < 1e-4


def test_resume_on_cuda_continues_the_run(tmp_path):
    """The optimizer state (fused AdamW on CUDA) is saved from the GPU and loaded back onto it."""
    data = FakePreparedDataset(n_train=8, n_dev=4, n_test=2, n_frames=24, seed=0)
    base = {**TINY, "device": "cuda", "amp": True, "out": str(tmp_path / "run")}
    train(load_config(SYNTHETIC_CONFIG, {**base, "epochs": 1}), data)
    run_dir = train(load_config(SYNTHETIC_CONFIG, {**base, "epochs": 2, "resume": True}), data)
    assert [r["epoch"] for r in rows(run_dir)] == [0, 1]


@pytest.mark.parametrize("amp, tol", [(False, 1e-4), (True, 2e-2)])
def test_gpu_and_cpu_inference_agree(amp, tol):
    net = peaked_net()
    clips = random_clips(12)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        on_cpu = clip_distributions(net, clips)
        on_gpu = clip_distributions(peaked_net().cuda(), clips, amp=amp)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    assert on_gpu.shape == on_cpu.shape == (12, 64)
    np.testing.assert_allclose(on_gpu.sum(1), 1.0, atol=1e-6)
    assert np.abs(on_cpu - on_gpu).max() < tol


class FakeContext:
    """The parts of ts.context.Context the handler uses, with the gpu_id TorchServe gives a GPU worker."""

    def __init__(self, model_dir: Path, gpu_id: int | None, yaml_config: dict | None = None):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id}
        self.model_yaml_config = yaml_config or {}
        self.status: dict[int, tuple[int, str]] = {}

    def get_request_header(self, idx, key):
        return None

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = (code, phrase)

    def set_response_content_type(self, idx, value):
        pass


@pytest.mark.parametrize("amp", [False, True])
def test_torchserve_handler_runs_on_the_gpu_it_is_given(amp, tmp_path):
    from djldml.clips import clips_to_bytes

    net = peaked_net()
    save_model(net, tmp_path / MODEL_FILENAME)
    (tmp_path / CARD_FILENAME).write_text(json.dumps({"name": "t", "synthetic_demo": True}))
    service = handler.DJLDMLHandler()
    service.initialize(FakeContext(tmp_path, 0, {"handler": {"clip_batch": 4, "amp": amp}}))
    assert next(service.net.parameters()).device == torch.device("cuda:0")
    assert service.amp is amp
    clips = random_clips(6)
    ctx = FakeContext(tmp_path, 0)
    (answer,) = service.handle([{"body": clips_to_bytes(clips)}], ctx)
    got = np.asarray(json.loads(answer)["distributions"])
    assert ctx.status == {}
    assert np.abs(got - clip_distributions(net, clips)).max() < (2e-2 if amp else 1e-3)

    on_cpu = handler.DJLDMLHandler()
    on_cpu.initialize(FakeContext(tmp_path, None))  # no gpu_id: a CPU worker
    assert next(on_cpu.net.parameters()).device.type == "cpu"


@pytest.mark.skipif(not DEMO_MAR.is_file(), reason="model_store/djldml-demo.mar is missing")
def test_demo_archive_on_gpu_matches_cpu():
    from service.backends.in_process import InProcessBackend

    clips = random_clips(16, seed=1)
    cpu = InProcessBackend(DEMO_MAR, device="cpu")
    gpu = InProcessBackend(DEMO_MAR, device="auto")
    assert gpu.device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        delta = np.abs(cpu.clip_distributions(clips) - gpu.clip_distributions(clips)).max()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    assert delta < 1e-4 and not math.isnan(delta)
