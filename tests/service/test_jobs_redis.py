"""The Redis job store against a private redis-server: same semantics as the in-memory one, plus TTL and a
fast StoreUnavailable when Redis is gone."""

import time

import pytest

from devstack import free_port, start_redis
from service.jobs import DONE, FAILED, INFERRING, Job, RedisJobStore, StoreUnavailable
from tests.service.fakes import all_at_once

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    r = start_redis(workdir=tmp_path_factory.mktemp("redis"))
    yield r.url
    r.stop()


def test_lifecycle_terminal_states_and_counts(redis_url):
    s = RedisJobStore(redis_url, ttl_s=60)
    s.create(Job(id="a", owner="o1"))
    s.create(Job(id="b", owner="o1"))
    assert s.active_count("o1") == 2 and s.active_count("o2") == 0
    assert s.update("a", status=INFERRING, progress=0.5).progress == 0.5
    assert s.update("a", status=DONE, result={"x": 1}).status == DONE
    late = s.update("a", status=FAILED, error={"code": "no_face"})  # a late writer cannot reopen it
    assert late.status == DONE and late.error is None
    assert s.active_count("o1") == 1
    assert s.delete("b") and not s.delete("b") and s.get("b") is None
    assert s.active_count("o1") == 0
    assert s.update("missing", status=DONE) is None
    assert 0 < s.r.ttl(RedisJobStore.PREFIX + "a") <= 60


def test_expired_jobs_leave_the_count(redis_url):
    s = RedisJobStore(redis_url, ttl_s=1)
    s.create(Job(id="c", owner="o3"))
    assert s.active_count("o3") == 1
    time.sleep(1.2)
    assert s.get("c") is None and s.active_count("o3") == 0


def test_events_drain_once(redis_url):
    s = RedisJobStore(redis_url, ttl_s=60)
    s.record_finished({"status": "done", "timings": {"total": 1.0}})
    assert s.drain_finished() == [{"status": "done", "timings": {"total": 1.0}}]
    assert s.drain_finished() == []


def test_unreachable_redis_fails_fast():
    s = RedisJobStore(f"redis://127.0.0.1:{free_port()}/0", ttl_s=60)
    t = time.monotonic()
    with pytest.raises(StoreUnavailable):
        s.get("x")
    assert time.monotonic() - t < 3
    assert s.ping()[0] is False


def test_a_worker_store_waits_out_its_patience_with_doubling_waits(caplog):
    """patience 1 s: tries after 0.2, 0.4 s (then 0.8 s would pass the deadline): three tries, two logged waits."""
    s = RedisJobStore(f"redis://127.0.0.1:{free_port()}/0", ttl_s=60, patience_s=1.0)
    t = time.monotonic()
    with caplog.at_level("WARNING", logger="service.jobs"), pytest.raises(StoreUnavailable, match="unreachable"):
        s.get("x")
    waits = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert [w.rsplit(" ", 2)[-2] for w in waits] == ["0.2", "0.4"], waits
    assert 0.6 <= time.monotonic() - t < 1.0 + 3  # the waits, plus three refused connections


def test_reservations_are_atomic_slots_until_the_job_or_a_release(redis_url):
    s = RedisJobStore(redis_url, ttl_s=60)
    assert s.reserve("r1", "r-a", 2) and s.reserve("r1", "r-b", 2)
    assert not s.reserve("r1", "r-c", 2) and s.reserve("r2", "r-c", 2)
    s.release("r1", "r-a")
    assert s.active_count("r1") == 1 and s.reserve("r1", "r-d", 2)
    assert s.reserved("r-b") and not s.reserved("r-a")
    s.create(Job(id="r-b", owner="r1"))  # the reservation becomes the job's slot
    assert s.r.exists(RedisJobStore.RESERVED + "r-b") == 0 and not s.reserved("r-b")
    assert s.active_count("r1") == 2 and not s.reserve("r1", "r-e", 2)
    s.update("r-b", status=DONE)
    assert s.active_count("r1") == 1 and s.reserve("r1", "r-e", 2)
    s.r.delete(RedisJobStore.RESERVED + "r-d")  # a reservation whose gateway died expires: the slot comes back
    assert s.active_count("r1") == 1


def test_simultaneous_reservations_from_many_clients_take_exactly_the_limit(redis_url):
    stores = [RedisJobStore(redis_url, ttl_s=60) for _ in range(16)]  # separate connections, like gateways
    results = all_at_once(16, lambda i: stores[i].reserve("race", f"j{i}", 4))
    assert sorted(results) == [False] * 12 + [True] * 4


def test_leases_are_exclusive_renewable_and_lapse(redis_url):
    s = RedisJobStore(redis_url, ttl_s=60)
    assert s.take_lease("l1", "a", 0.3) and not s.take_lease("l1", "b", 0.3)
    assert s.take_lease("l1", "a", 0.3) and s.has_lease("l1")
    s.drop_lease("l1", "b")  # not the holder
    assert s.has_lease("l1")
    time.sleep(0.4)
    assert not s.has_lease("l1") and s.take_lease("l1", "b", 5)
    s.drop_lease("l1", "b")
    assert not s.has_lease("l1")
