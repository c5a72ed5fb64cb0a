"""The rules that used to have several copies, each tested once here where its one implementation now lives:
device choice, the model file's readers, the handler knobs, the model's clip shape, TorchServe's READY workers,
the job states, the atomic write and the OpenMP thread limit."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from djldml.atomic import atomic_path, temporary_beside
from djldml.clips import CLIP_SHAPE, validate_model_clips
from djldml.device import resolve_device, torchserve_device
from djldml.errors import ModelError
from djldml.model_file import FORMAT, load_model, model_dict, read_model_file
from djldml.network import build_network
from djldml.openmp import openmp_threads
from djldml.serving.handler import handler_knobs
from service.api.schemas import JobStatus
from service.backends.torchserve import WORKER_READY, worker_states
from service.jobs import DONE, FAILED, JobState

# --- device ---------------------------------------------------------------------------------------------------


def test_auto_device_is_the_first_gpu_or_the_cpu():
    assert resolve_device("auto") == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda:1")  # explicit names are taken as given


def test_torchserve_device_follows_the_gpu_id():
    assert torchserve_device(None) == torch.device("cpu")
    assert torchserve_device(0) == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


# --- model file -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return build_network("c3d-tiny").eval()


def test_one_reader_for_model_files_checkpoints_and_run_dirs(tiny_net, tmp_path):
    model = model_dict(tiny_net)
    assert model["format"] == FORMAT and all(v.device.type == "cpu" for v in model["state_dict"].values())
    torch.save(model, tmp_path / "model.pt")
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": model, "config": {"seed": 3}, "dev": {"mae": 1.0}, "epoch": 2, "optimizer": {}},
               run / "best.pt")
    for path, facts in ((tmp_path / "model.pt", {}), (run / "best.pt", {"config": {"seed": 3}, "dev": {"mae": 1.0},
                                                                         "epoch": 2}), (run, None)):
        got, got_facts = read_model_file(path)
        assert facts is None or got_facts == facts
        net = load_model(path)
        assert not net.training
        for k, v in tiny_net.state_dict().items():
            assert torch.equal(net.state_dict()[k], v), k


def test_model_file_reader_refuses_other_files(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "x.pt")
    with pytest.raises(ModelError, match="neither"):
        read_model_file(tmp_path / "x.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "junk.pt")


# --- handler knobs and clip shape -----------------------------------------------------------------------------


def test_handler_knobs_default_and_amp_only_on_a_gpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    assert handler_knobs(None, cpu) == (handler_knobs({}, cpu)[0], False)
    assert handler_knobs({"clip_batch": "4", "amp": True}, cpu) == (4, False)
    assert handler_knobs({"clip_batch": 4, "amp": True}, gpu) == (4, True)


def test_model_clip_shape_is_checked_with_one_message():
    validate_model_clips(np.zeros((2, *CLIP_SHAPE), np.uint8))
    validate_model_clips(np.zeros((0, *CLIP_SHAPE), np.uint8))
    with pytest.raises(ModelError, match=r"clips must be \[N, 16, 112, 112, 3\], got \[1, 8, 112, 112, 3\]"):
        validate_model_clips(np.zeros((1, 8, 112, 112, 3), np.uint8))
    with pytest.raises(ModelError, match="uint8"):
        validate_model_clips(np.zeros((1, *CLIP_SHAPE), np.float32))


# --- TorchServe workers and job states ------------------------------------------------------------------------


def test_worker_states_cover_every_version():
    described = [{"workers": [{"status": "UNLOADING"}]}, {"workers": [{"status": WORKER_READY}, {}]}, {}]
    assert worker_states(described) == ["UNLOADING", WORKER_READY, "None"]
    assert WORKER_READY not in worker_states([{"workers": []}])


def test_job_states_are_one_enum_stored_as_plain_strings():
    assert [s.value for s in JobState] == ["queued", "preprocessing", "inferring", "done", "failed"]
    assert (DONE, FAILED) == ("done", "failed")
    assert JobStatus.model_fields["status"].annotation is JobState  # the API's field is the same enum
    assert json.loads(json.dumps({"status": DONE})) == {"status": "done"}


# --- atomic write ---------------------------------------------------------------------------------------------


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]  # no temporary left behind
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".f.txt.")
        tmp.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


def test_temporary_names_differ_between_threads(tmp_path):
    names = []
    t = threading.Thread(target=lambda: names.append(temporary_beside(tmp_path / "x")))
    t.start()
    t.join()
    assert names[0] != temporary_beside(tmp_path / "x")


# --- OpenMP ---------------------------------------------------------------------------------------------------


def test_openmp_threads_limits_every_runtime_and_restores():
    import yuface  # noqa: F401  (loads its own libgomp beside torch's)
    from threadpoolctl import threadpool_info

    def openmp():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]

    before = openmp()
    if not before:
        pytest.skip("no OpenMP runtime loaded")
    with openmp_threads(1):
        assert openmp() == [1] * len(before)
    assert openmp() == before
