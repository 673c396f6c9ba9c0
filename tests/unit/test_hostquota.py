"""The host-wide quota file (hostquota.py): slots first come first served across real processes,
no secret in the file or its name, and a safe fallback to the process limiter."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time

import pytest

from airflow_provider_metastudio import hostquota, ratelimit
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.hostquota import HostLimiter, HostReservations, reservation_path
from airflow_provider_metastudio.ratelimit import RateLimiter, get_limiter

pytestmark = pytest.mark.airflow_independent

AK = "HPUAEXAMPLEAK0000001"
SK = "SKsecret-7b1f0c9e2d4a+/="
PROJECT_ID = "0d697589d98091f12f92c0073501cd79"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(ratelimit, "_LIMITERS", {})
    monkeypatch.setattr(hostquota, "_HOSTS", {})


def config(extra=None):
    return MetaStudioConnectionConfig.from_parts(
        login=AK, password=SK, extra={"project_id": PROJECT_ID, **(extra or {})}, host="http://127.0.0.1:9"
    )


def test_slots_are_handed_out_in_turn_and_pushed_by_answers_and_retry_after(tmp_path):
    clock = Clock()
    host = HostReservations(str(tmp_path / "q.json"), clock=clock)
    assert [host.reserve("create_by_url", 0.5) for _ in range(4)] == [0.0, 0.5, 1.0, 1.5]
    assert host.reserve("show", 1.0) == 0.0  # calls have their own slots
    clock.now += 10.0  # idle: the next slot is now, not a backlog
    assert host.reserve("create_by_url", 0.5) == 0.0
    host.push("create_by_url", 3.0)  # a 429 said "Retry-After: 3"
    assert host.reserve("create_by_url", 0.5) == pytest.approx(3.0)
    host.push("create_by_url", 1.0, shift=0.25)  # within the queue: the free slots move on
    assert host.reserve("create_by_url", 0.5) == pytest.approx(3.75)
    stored = json.loads((tmp_path / "q.json").read_text())
    assert set(stored) == {"create_by_url", "show"} and all(isinstance(v, float) for v in stored.values())


def test_a_stale_or_torn_file_frees_the_slots(tmp_path):
    clock = Clock()
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"create_by_url": clock.now + 7200}))  # a clock stepped back 2 h
    assert HostReservations(str(path), clock=clock).reserve("create_by_url", 0.5) == 0.0
    path.write_text('{"create_by_u')
    assert HostReservations(str(path), clock=clock).reserve("create_by_url", 0.5) == 0.0


def _take_slots(path: str, count: int, interval: float, start: float, out: multiprocessing.Queue) -> None:
    time.sleep(max(0.0, start - time.time()))
    seen: list[float] = []  # the time the reservation read under the lock

    def clock() -> float:
        seen.append(time.time())
        return seen[-1]

    host = HostReservations(path, clock=clock)
    slots = []
    for _ in range(count):
        wait = host.reserve("create_by_url", interval)
        assert wait is not None
        slots.append(seen[-1] + wait)
        time.sleep(0.001)  # the other process gets its turns in between
    out.put(slots)


def test_two_processes_contending_for_one_file_get_distinct_slots_one_interval_apart(tmp_path):
    path, count, interval = str(tmp_path / "q.json"), 200, 0.01
    out: multiprocessing.Queue = multiprocessing.Queue()
    start = time.time() + 0.5
    procs = [
        multiprocessing.Process(target=_take_slots, args=(path, count, interval, start, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=30) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
    assert [p.exitcode for p in procs] == [0, 0]
    slots = sorted(results[0] + results[1])
    # Both took turns (neither got all the early slots) and no two slots are closer than 1/rate:
    # the lock made every read-modify-write whole.
    assert min(results[0]) < max(results[1]) and min(results[1]) < max(results[0])
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= interval - 1e-6
    # First come first served: the slots are one queue, not two interleaved at random gaps.
    assert slots[-1] - slots[0] == pytest.approx((2 * count - 1) * interval, abs=0.05)


def test_an_unusable_directory_falls_back_to_the_process_limiter_with_one_warning(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    path = str(tmp_path / "a-file" / "quota.json")  # its "directory" is a file: no one can create it
    process = RateLimiter(2.0)
    limiter = HostLimiter(process, hostquota.host_reservations(path), "create_by_url")
    with caplog.at_level(logging.WARNING, logger=hostquota.__name__):
        waits = [limiter.reserve() for _ in range(3)]
        limiter.settle()
        limiter.backoff(1.0)
    assert waits[0] == 0.0 and waits[1] == pytest.approx(0.5, abs=0.05)  # the process limiter paced
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not usable" in warnings[0].getMessage() and "a-file" in warnings[0].getMessage()


def test_a_directory_others_may_write_is_refused(tmp_path, caplog):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    host = HostReservations(str(shared / "q.json"))
    with caplog.at_level(logging.WARNING, logger=hostquota.__name__):
        assert host.reserve("show", 1.0) is None
    assert "not owned by this user only" in caplog.text
    assert not (shared / "q.json").exists()


def test_the_file_is_named_by_a_hash_and_holds_no_secret(tmp_path):
    cfg = config({"host_quota": str(tmp_path)})
    path = reservation_path(cfg)
    assert path is not None and os.path.dirname(path) == str(tmp_path)
    assert SK not in path and AK not in path and PROJECT_ID not in path
    limiter = get_limiter(cfg.endpoint, cfg.project_id, "create_by_url", 2.0, path)
    limiter.reserve()
    limiter.settle()
    text = open(path).read()
    assert SK not in text and AK not in text and set(json.loads(text)) == {"create_by_url"}
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    # The quota is the project's: another identity on the same project shares the file (as the
    # process limiters do), another project has its own.
    assert reservation_path(config({"host_quota": str(tmp_path)})) == path
    extra = {"project_id": PROJECT_ID, "host_quota": str(tmp_path)}
    other = MetaStudioConnectionConfig.from_parts(
        login="HPUAOTHERAK000000002", password=SK, extra=extra, host="http://127.0.0.1:9"
    )
    assert reservation_path(other) == path
    extra = {"project_id": "0" * 32, "host_quota": str(tmp_path)}
    other = MetaStudioConnectionConfig.from_parts(
        login=AK, password=SK, extra=extra, host="http://127.0.0.1:9"
    )
    assert reservation_path(other) != path


def test_the_connection_extra_turns_it_off_or_names_the_directory(tmp_path):
    assert config().host_quota == hostquota.default_dir()
    assert config({"host_quota": "false"}).host_quota is None
    assert config({"host_quota": False}).host_quota is None
    assert reservation_path(config({"host_quota": False})) is None
    assert config({"host_quota": str(tmp_path)}).host_quota == str(tmp_path)
    cfg = config({"host_quota": False})
    assert isinstance(
        get_limiter(cfg.endpoint, cfg.project_id, "show", 1.0, reservation_path(cfg)), RateLimiter
    )


def test_limiters_of_two_processes_share_the_hosts_slots(tmp_path):
    # Two processes' limiters (separate RateLimiter objects) on one file: the second waits behind
    # the first instead of both going at once.
    path = str(tmp_path / "q.json")
    a = HostLimiter(RateLimiter(2.0), HostReservations(path), "create_by_url")
    b = HostLimiter(RateLimiter(2.0), HostReservations(path), "create_by_url")
    assert a.reserve() == 0.0
    assert b.reserve() == pytest.approx(a.interval, abs=0.05)
