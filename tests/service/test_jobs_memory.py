"""The in-memory job store: lifecycle, terminal states are final, per-owner counts, TTL, events."""

import json
import time

import pytest

from service.jobs import DONE, FAILED, INFERRING, QUEUED, Job, JobState, MemoryJobStore
from tests.service.fakes import all_at_once


def test_lifecycle_and_terminal_states_are_final():
    s = MemoryJobStore(ttl_s=60)
    s.create(Job(id="a", owner="o"))
    assert s.active_count("o") == 1
    assert s.update("a", status=INFERRING, progress=0.5).status == INFERRING
    assert s.update("a", status=DONE, result={"x": 1}).status == DONE
    # a late writer (a redelivered task) cannot reopen or overwrite a finished job
    again = s.update("a", status=FAILED, error={"code": "no_face"})
    assert again.status == DONE and again.error is None and again.result == {"x": 1}
    assert s.active_count("o") == 0
    assert s.update("missing", status=DONE) is None


def test_delete_and_ttl():
    s = MemoryJobStore(ttl_s=1)
    s.create(Job(id="a", owner="o"))
    assert s.delete("a") and not s.delete("a")
    s.create(Job(id="b", owner="o", updated_at=time.time() - 5))
    assert s.get("b") is None


def test_events_are_drained_once():
    s = MemoryJobStore(ttl_s=60)
    s.record_finished({"status": "done"})
    assert s.drain_finished() == [{"status": "done"}]
    assert s.drain_finished() == []


def test_reservations_are_slots_until_the_job_or_a_release():
    s = MemoryJobStore(ttl_s=100)
    assert s.reserve("o", "a", 2) and s.reserve("o", "b", 2)
    assert not s.reserve("o", "c", 2) and s.reserve("other", "c", 2)
    s.release("o", "a")
    assert s.active_count("o") == 1 and s.reserve("o", "d", 2)
    s.create(Job(id="b", owner="o"))  # the reservation becomes the job's slot: still 2 in use
    assert s.active_count("o") == 2 and not s.reserve("o", "e", 2)
    s.update("b", status="done")
    assert s.active_count("o") == 1 and s.reserve("o", "e", 2)


def test_simultaneous_reservations_take_exactly_the_limit():
    s = MemoryJobStore(ttl_s=100)
    results = all_at_once(16, lambda i: s.reserve("o", f"j{i}", 4))
    assert sorted(results) == [False] * 12 + [True] * 4


def test_the_job_record_is_checked_both_ways():
    """pydantic: an update of a field that does not exist, or of the wrong type, is refused and changes nothing;
    the JSON round trip keeps every field (status as its plain string)."""
    s = MemoryJobStore(ttl_s=60)
    s.create(Job(id="a", owner="o"))
    with pytest.raises(ValueError, match="no such job field"):
        s.update("a", stauts=DONE)
    with pytest.raises(ValueError):
        s.update("a", progress="half", status=DONE)
    assert s.get("a").status == QUEUED and s.get("a").progress == 0.0
    job = s.update("a", status="inferring", progress=0.5, result=None)
    assert job.status is JobState.inferring and isinstance(job.progress, float)
    doc = json.loads(job.to_json())
    assert doc["status"] == "inferring" and Job.from_json(job.to_json()) == job
