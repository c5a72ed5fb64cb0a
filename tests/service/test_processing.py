"""run_job: the one function both modes use — statuses, result, typed failures, retries, cancel, upload removal."""

import numpy as np
import pytest

from djldml.errors import NoFace
from service import processing
from service.backends.base import BackendUnavailable
from service.jobs import DONE, FAILED, INFERRING, Job, MemoryJobStore, new_job_id
from service.settings import Settings
from service.storage import LocalUploadStorage
from tests.service.fakes import FakeBackend, expected_score, fake_clips


@pytest.fixture
def env(tmp_path, monkeypatch):
    settings = Settings(upload_dir=tmp_path / "up", inference_batch_clips=2, backend_retries=2,
                        backend_retry_delay_s=0.01)
    storage = LocalUploadStorage(settings.upload_dir)
    store = MemoryJobStore(ttl_s=60)
    clips = fake_clips(5)
    monkeypatch.setattr(processing, "extract_face_clips", lambda path, config: clips)

    def new_job():
        w = storage.open_writer(1000)
        w.write(b"video")
        w.close()
        job = Job(id=new_job_id(), owner="o")
        store.create(job)
        return job.id, w.path

    return settings, storage, store, clips, new_job


def run(env, backend, job_id, path):
    settings, storage, store, _, _ = env
    return processing.run_job(job_id, path, store=store, backend=backend, storage=storage, settings=settings)


def test_done_with_a_consistent_result_and_no_upload_left(env):
    _, _, store, clips, new_job = env
    job_id, path = new_job()
    backend = FakeBackend()
    assert run(env, backend, job_id, path) == DONE
    assert not path.exists()
    r = store.get(job_id).result
    assert backend.batch_sizes == [2, 2, 1]  # inference_batch_clips
    d = np.array(r["distribution"])
    assert len(d) == 64 and d.sum() == pytest.approx(1.0)
    assert r["bdi_score"] == pytest.approx(float((d * np.arange(64)).sum()))
    assert r["bdi_score"] == pytest.approx(expected_score(clips))
    assert r["quality"]["clips_used"] == 5 and len(r["timeline"]) == 5
    assert r["model"]["synthetic_demo"] is True
    assert {"queue_wait", "face_clips", "inference", "total"} <= set(r["timings_s"])  # inference: with aggregation
    assert store.get(job_id).progress == 1.0


def test_typed_pipeline_error_fails_the_job_with_its_code(env, monkeypatch):
    _, _, store, _, new_job = env
    job_id, path = new_job()

    def no_face(path, config):
        raise NoFace("no face in any frame")

    monkeypatch.setattr(processing, "extract_face_clips", no_face)
    assert run(env, FakeBackend(), job_id, path) == FAILED
    assert store.get(job_id).error["code"] == "no_face"
    assert not path.exists()


def test_backend_briefly_down_is_retried(env):
    _, _, store, _, new_job = env
    job_id, path = new_job()
    backend = FakeBackend(fail_times=2)
    assert run(env, backend, job_id, path) == DONE


def test_backend_down_for_good_fails_typed(env):
    _, _, store, _, new_job = env
    job_id, path = new_job()
    assert run(env, FakeBackend(fail_times=100), job_id, path) == FAILED
    assert store.get(job_id).error["code"] == "backend_unavailable"
    assert not path.exists()


def test_unexpected_error_fails_the_job_and_does_not_raise(env, monkeypatch):
    _, _, store, _, new_job = env
    job_id, path = new_job()

    class Broken(FakeBackend):
        def clip_distributions(self, clips):
            raise RuntimeError("bug")

    assert run(env, Broken(), job_id, path) == FAILED
    assert store.get(job_id).error["code"] == "internal_error"
    assert not path.exists()


def test_second_delivery_of_a_finished_job_changes_nothing(env):
    _, _, store, _, new_job = env
    job_id, path = new_job()
    run(env, FakeBackend(), job_id, path)
    before = store.get(job_id)
    backend = FakeBackend()
    assert run(env, backend, job_id, path) == DONE
    assert backend.calls == 0 and store.get(job_id).result == before.result


def test_deleted_job_stops_and_removes_upload(env):
    _, _, store, _, new_job = env
    job_id, path = new_job()

    class Deleting(FakeBackend):
        def clip_distributions(self, clips):
            store.delete(job_id)  # DELETE /jobs/{id} while inferring
            return super().clip_distributions(clips)

    backend = Deleting()
    assert run(env, backend, job_id, path) == "gone"
    assert backend.calls == 1 and store.get(job_id) is None and not path.exists()


def test_status_moves_through_inferring(env):
    _, _, store, _, new_job = env
    job_id, path = new_job()
    seen = []

    class Watching(FakeBackend):
        def clip_distributions(self, clips):
            seen.append(store.get(job_id).status)
            return super().clip_distributions(clips)

    run(env, Watching(), job_id, path)
    assert seen and set(seen) == {INFERRING}


def test_unreachable_store_keeps_the_upload_for_a_retry(env):
    settings, storage, store, _, new_job = env
    job_id, path = new_job()
    from service.jobs import StoreUnavailable

    class DeadStore(MemoryJobStore):
        def get(self, job_id):
            raise StoreUnavailable("down")

    with pytest.raises(StoreUnavailable):
        processing.run_job(job_id, path, store=DeadStore(60), backend=FakeBackend(), storage=storage,
                           settings=settings, final=False)
    assert path.exists()
    with pytest.raises(StoreUnavailable):
        processing.run_job(job_id, path, store=DeadStore(60), backend=FakeBackend(), storage=storage,
                           settings=settings, final=True)
    assert not path.exists()


def test_backend_unavailable_is_the_interface_error():
    assert BackendUnavailable.code == "backend_unavailable"


def test_a_job_whose_worker_keeps_dying_fails_instead_of_looping(env):
    settings, _, store, _, new_job = env
    job_id, path = new_job()
    store.update(job_id, attempts=settings.max_job_attempts)  # three deliveries started, none finished
    backend = FakeBackend()
    assert run(env, backend, job_id, path) == FAILED
    assert store.get(job_id).error["code"] == "worker_lost" and backend.calls == 0 and not path.exists()


def test_a_job_past_its_time_limit_fails_as_job_timeout(env, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    _, _, store, _, new_job = env
    job_id, path = new_job()

    def too_slow(path, config):
        raise SoftTimeLimitExceeded()  # what Celery raises in the task at JOB_TIME_LIMIT_S

    monkeypatch.setattr(processing, "extract_face_clips", too_slow)
    assert run(env, FakeBackend(), job_id, path) == FAILED
    assert store.get(job_id).error["code"] == "job_timeout"
    assert not path.exists()
