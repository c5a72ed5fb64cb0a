"""The in-memory job store: lifecycle, terminal states are final, per-owner counts, TTL, events."""

import time

from service.jobs import DONE, FAILED, INFERRING, Job, MemoryJobStore


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
