"""The TorchServe handler without TorchServe: batches of requests through handle(), with a fake context."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from djldml.clips import clips_to_bytes
from djldml.errors import ModelError
from djldml.inference import clip_distributions
from djldml.model_file import load_model
from djldml.serving import handler

from .conftest import random_clips


class FakeContext:
    """The parts of ts.context.Context the handler uses."""

    def __init__(self, model_dir, headers=None, yaml_config=None):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.model_yaml_config = yaml_config or {}
        self.headers = headers or {}
        self.status: dict[int, tuple[int, str]] = {}
        self.content_types: dict[int, str] = {}

    def get_request_header(self, idx, key):
        return self.headers.get(key)

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = (code, phrase)

    def set_response_content_type(self, idx, value):
        self.content_types[idx] = value


@pytest.fixture(scope="module")
def model_dir(tiny_mar, tmp_path_factory):
    d = tmp_path_factory.mktemp("extracted")
    with zipfile.ZipFile(tiny_mar) as z:
        z.extractall(d)
    return d


@pytest.fixture(scope="module")
def service(model_dir):
    s = handler.DJLDMLHandler()
    s.initialize(FakeContext(model_dir))
    return s


def test_batch_of_requests_is_split_back_in_order(service, model_dir):
    a, b = random_clips(3, seed=1), random_clips(2, seed=2)
    ctx = FakeContext(model_dir)
    out = service.handle([{"body": bytearray(clips_to_bytes(a))}, {"body": clips_to_bytes(b)}], ctx)
    assert len(out) == 2 and ctx.status == {}
    got = [np.array(json.loads(o)["distributions"]) for o in out]
    ref = clip_distributions(service.net, np.concatenate([a, b]))
    assert got[0].shape == (3, 64) and got[1].shape == (2, 64)
    np.testing.assert_allclose(np.concatenate(got), ref, atol=1e-6)
    assert np.abs(got[0][0] - got[0][1]).max() > 1e-3  # distinct clips give distinct answers
    np.testing.assert_allclose(np.concatenate(got).sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("body", [
    b"", b"not numpy", None, {"json": "object"}, "a string",
    clips_to_bytes(np.zeros((1, 8, 112, 112, 3), np.uint8)),  # wrong clip length
    clips_to_bytes(np.zeros((1, 16, 112, 112, 3), np.uint8))[:-10],  # truncated
])
def test_a_bad_body_fails_only_its_own_request(service, model_dir, body):
    good = random_clips(2)
    ctx = FakeContext(model_dir)
    out = service.handle([{"body": clips_to_bytes(good)}, {"body": body}, {"data": clips_to_bytes(good)}], ctx)
    assert set(ctx.status) == {1} and ctx.status[1][0] == 400
    err = json.loads(out[1])["error"]
    assert err["code"] == ModelError.code and err["message"]
    assert np.array(json.loads(out[0])["distributions"]).shape == (2, 64)
    assert json.loads(out[0]) == json.loads(out[2])


def test_float_or_pickled_clips_are_refused():
    for arr in (np.zeros((1, 16, 112, 112, 3), np.float32), np.array([{"a": 1}], dtype=object)):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        with pytest.raises(ModelError):
            handler.parse_clips(buf.getvalue())


def test_all_bad_batch_runs_no_network(service, model_dir):
    ctx = FakeContext(model_dir)
    out = service.handle([{"body": b"x"}, {"body": b"y"}], ctx)
    assert [ctx.status[i][0] for i in (0, 1)] == [400, 400] and len(out) == 2


def test_empty_clip_array_gives_empty_list(service, model_dir):
    ctx = FakeContext(model_dir)
    (out,) = service.handle([{"body": clips_to_bytes(np.zeros((0, 16, 112, 112, 3), np.uint8))}], ctx)
    assert json.loads(out) == {"distributions": []}


def test_describe_returns_the_model_card(service, model_dir):
    (out,) = service.handle([{"body": b""}], FakeContext(model_dir, headers={"describe": "True"}))
    card = json.loads(out)
    assert card["name"] == "djldml-test" and card["synthetic_demo"] is True


def test_module_entry_point_initialises_once(model_dir, monkeypatch):
    monkeypatch.setattr(handler, "_service", handler.DJLDMLHandler())
    ctx = FakeContext(model_dir, yaml_config={"handler": {"clip_batch": 4, "amp": True}})
    assert handler.handle(None, ctx) is None  # TorchServe's initialisation call
    assert handler._service.batch_size == 4 and handler._service.amp is False  # amp only on a GPU
    (out,) = handler.handle([{"body": clips_to_bytes(random_clips(1))}], ctx)
    assert len(json.loads(out)["distributions"]) == 1


def test_handler_imports_only_djldml_torch_numpy():
    tree = ast.parse(Path(handler.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) <= {"djldml", "torch", "numpy"}, roots


def test_archive_runs_on_its_packed_sources_alone(model_dir, tmp_path):
    """The extracted .mar, first on sys.path (as TorchServe puts it), imports its own djldml copy and works."""
    clips = random_clips(2)
    (tmp_path / "clips.npy").write_bytes(clips_to_bytes(clips))
    script = f"""
import json, sys
sys.path.insert(0, {str(model_dir)!r})
import djldml, torchserve_handler as h
assert djldml.__file__.startswith({str(model_dir)!r}), djldml.__file__
class C:
    system_properties = {{"model_dir": {str(model_dir)!r}, "gpu_id": None}}
    model_yaml_config = {{}}
    def get_request_header(self, i, k): return None
    def set_response_status(self, *a, **k): raise AssertionError("error status")
    def set_response_content_type(self, *a): pass
h.handle(None, C())
from djldml.serving import handler as logic
print("runtime", getattr(logic._service.net, "runtime", "torch"))
body = open({str(tmp_path / "clips.npy")!r}, "rb").read()
print(h.handle([{{"body": body}}], C())[0])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.array(json.loads(done.stdout.strip().splitlines()[-1])["distributions"])
    assert "runtime openvino" in done.stdout  # the packed djldml.runtime runs the archive's IR on the CPU
    net = load_model(model_dir / "model.pt")
    np.testing.assert_allclose(got, clip_distributions(net, clips), atol=1e-4)  # the engine's bound vs PyTorch


_TYPE_NAMES = {"int", "str", "float", "bytes", "bytearray", "list", "dict", "tuple", "set", "bool", "type"}


def _runtime_type_unions(tree: ast.AST) -> list[int]:
    """Lines with ``X | Y`` on types outside annotations (TypeError before Python 3.10); vermin misses these."""
    annotations = set()
    for node in ast.walk(tree):
        for ann in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if ann is not None:
                annotations |= {id(n) for n in ast.walk(ann)}

    def typeish(n: ast.AST) -> bool:
        if isinstance(n, ast.Constant):
            return n.value is None
        name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else ""
        return name in _TYPE_NAMES or name[:1].isupper() or name in ("ndarray", "Tensor")

    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
            and id(n) not in annotations and (typeish(n.left) or typeish(n.right))]


def test_packed_sources_run_on_python_3_9(model_dir):
    """The stock TorchServe 0.12 image runs Python 3.9: the packed sources must parse and run there."""
    files = [model_dir / "torchserve_handler.py", *sorted((model_dir / "djldml").rglob("*.py"))]
    for f in files:
        tree = ast.parse(f.read_text(), filename=str(f), feature_version=(3, 9))
        assert not _runtime_type_unions(tree), f"{f.name}: X | Y on types at lines {_runtime_type_unions(tree)}"
    pytest.importorskip("vermin", reason="vermin (dev dependency) checks 3.9 runtime compatibility")
    done = subprocess.run([str(Path(sys.executable).parent / "vermin"), "--no-tips", "-t=3.9-", "--violations",
                           *map(str, files)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:]


def test_the_cards_input_normalisation_is_applied(model_dir, tmp_path):
    """A card recording inference.input_normalisation (Sports-1M C3D: RGB 0–255) makes the handler feed the network
    that, and nothing else changes; the card without it (the fixture's) keeps the default [-1, 1]."""
    import shutil

    from djldml.clips import SPORTS1M_C3D

    d = tmp_path / "normalised"
    shutil.copytree(model_dir, d)
    card = json.loads((d / "model_card.json").read_text())
    assert "input_normalisation" not in card["inference"]
    card["inference"]["input_normalisation"] = SPORTS1M_C3D.to_dict()
    (d / "model_card.json").write_text(json.dumps(card))
    s = handler.DJLDMLHandler()
    s.initialize(FakeContext(d))
    assert s.normalisation == SPORTS1M_C3D
    clips = random_clips(2, seed=5)
    (out,) = s.handle([{"body": clips_to_bytes(clips)}], FakeContext(d))
    got = np.array(json.loads(out)["distributions"])
    mirror = bool(card["inference"].get("mirror_average"))
    np.testing.assert_allclose(got, clip_distributions(s.net, clips, mirror=mirror, normalisation=SPORTS1M_C3D),
                               atol=1e-6)
    assert np.abs(got - clip_distributions(s.net, clips, mirror=mirror)).max() > 1e-4
