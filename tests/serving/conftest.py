"""Fixtures of the serving tests: a small synthetic archive and one real TorchServe for the whole session.

The archive is a randomly initialised c3d-tiny network (seeded), exported through trainer.export like any
model: its card says synthetic and untrained. TorchServe starts once (≈3 s) on free ports in its own temp dir,
with token auth ON so that the token path is what the tests exercise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from devstack import start_torchserve
from djldml.clips import CLIP_SHAPE
from djldml.model_file import save_model
from djldml.network import build_network
from trainer.export import export_model

MODEL_NAME = "djldml-test"

SYNTHETIC_CARD = {
    "synthetic_demo": True,
    "description": "randomly initialised c3d-tiny for tests: untrained, synthetic, meaningless scores",
    "training": {"epochs": 0, "seed": 0},
    "metrics": {"note": "untrained"},
    "data": {"source": "none (random weights)", "synthetic": True},
}


def random_clips(n: int, seed: int = 0) -> np.ndarray:
    """Synthetic clips (a random colour per clip plus noise; no faces, no people) for the network and the wire."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 1, 3))
    return np.clip(base + rng.integers(-40, 40, (n, *CLIP_SHAPE)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    torch.manual_seed(0)
    net = build_network("c3d-tiny")
    # A random init gives near-uniform outputs; larger fc and head weights make the clips' distributions
    # distinct and peaked, so that equality tests between backends can fail.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)
        net.head.weight.mul_(30.0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(net, path)
    return path


@pytest.fixture(scope="session")
def model_store(tmp_path_factory, tiny_model_file):
    store = tmp_path_factory.mktemp("model_store")
    export_model(tiny_model_file, store / f"{MODEL_NAME}.mar", MODEL_NAME, "0.1", SYNTHETIC_CARD)
    return store


@pytest.fixture(scope="session")
def tiny_mar(model_store):
    return model_store / f"{MODEL_NAME}.mar"


@pytest.fixture(scope="session")
def torchserve(model_store, tmp_path_factory):
    handle = start_torchserve(model_store, {MODEL_NAME: f"{MODEL_NAME}.mar"},
                              workdir=tmp_path_factory.mktemp("torchserve"), token_auth=True)
    yield handle
    handle.stop()
    assert not handle.alive()
