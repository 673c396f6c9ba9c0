"""End to end under faults: the main flow (create by URL -> sensor -> fetch with cover copy) on real
Airflow, in reschedule and deferrable modes, against an emulator that fails on purpose.

Retries are the hook's defaults (5 retries, 1 s exponential backoff with jitter); fault counts stay
small so every run finishes in seconds. Whatever the fault, a run never creates a job twice.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_metastudio import auth
from airflow_provider_metastudio.tenant import registry as tenant_registry
from airflow_provider_metastudio.testing import MetaStudioEmulator, cover_png
from airflow_provider_metastudio.triggers.picture_modeling import MetaStudioPictureModelingJobTrigger

# Jobs run long enough that the sensor's first poke (faults, retries and all) still finds them running,
# so reschedule mode really reschedules and deferrable mode really defers.
pytestmark = pytest.mark.metastudio_emulator(waiting_seconds=1, processing_seconds=5, seed=11)

MODES = ("reschedule", "deferrable")
CONN_ENV = "AIRFLOW_CONN_METASTUDIO_DEFAULT"
RESULT_KEYS = ("job_id", "state", "model_asset_id", "model_cover_url", "model_cover_url_expires_at")
# "20% 500 and HTML 502/503" on every read and cover download (never on the create: a 5xx there is
# ambiguous, the job may exist, so the hook rightly does not retry it; see the create tests below).
FAULT_RATES = {"500": 0.10, "502": 0.05, "503": 0.05}
FAULT_CALLS = ("show", "list", "cover")
SLOW_SECONDS = 2.0  # slower than usual ...
READ_TIMEOUT = 5.0  # ... but within the connection's timeout
RUN_BUDGET = 90.0  # generous ceiling for one faulty run, in seconds
EXPIRE_AFTER = 2.5  # token expiry, seconds after the job was created
TOKEN_JOB_SECONDS = (1.0, 6.0)  # waiting, processing: long enough for the expiry to land mid-wait


# -- running the fault DAGs ----------------------------------------------------------------------


@dataclass
class FaultRun:
    state: str
    tasks: dict[str, str]
    xcoms: dict[tuple[str, str], Any]
    run_id: str
    seconds: float


@pytest.fixture
def run_fault_dag(fault_dags: Any, read_xcoms: Any, metastudio_connection: str) -> Callable[..., FaultRun]:
    """Run ``fault_main_<mode>`` with ``dag.test()``; return task states, XComs and the wall time."""

    def run(mode: str, **conf: Any) -> FaultRun:
        dag = fault_dags.DAGS[f"fault_main_{mode}"]
        started = time.monotonic()
        dr = dag.test(run_conf=conf)
        seconds = time.monotonic() - started
        tasks = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
        state = str(getattr(dr.state, "value", dr.state))
        return FaultRun(state, tasks, read_xcoms(dag.dag_id, dr.run_id), dr.run_id, seconds)

    return run


@pytest.fixture(autouse=True)
def fresh_token_cache():
    """IAM tokens are cached per process: no test may see another emulator's token."""
    auth._TOKEN_CACHE.clear()
    yield
    auth._TOKEN_CACHE.clear()


# -- checks ----------------------------------------------------------------------------------------


def _object(url: str) -> str:
    return urlsplit(url).path


def assert_main_flow_succeeded(
    result: FaultRun, emu: MetaStudioEmulator, cover_dir: Path, mode: str
) -> dict[str, Any]:
    """The run succeeded in ``mode``; its XComs describe the one job the emulator has; the cover is copied."""
    assert result.tasks == {"create": "success", "wait": "success", "fetch": "success"}, result.tasks
    assert result.state == "success"
    x = result.xcoms
    job_id = x[("create", "job_id")]
    job = emu.jobs.get(job_id)
    assert job["state"] == "SUCCEED"
    assert x[("create", "model_asset_id")] == job["model_asset_id"]
    sensed = x[("wait", "return_value")]
    assert (sensed["job_id"], sensed["state"], sensed["model_asset_id"]) == (
        job_id,
        "SUCCEED",
        job["model_asset_id"],
    )
    fetched = x[("fetch", "return_value")]
    assert (fetched["job_id"], fetched["state"], fetched["model_asset_id"]) == (
        job_id,
        "SUCCEED",
        job["model_asset_id"],
    )
    for key in RESULT_KEYS:
        assert x[("fetch", key)] == fetched[key], key
    assert _object(fetched["model_cover_url"]) == _object(job["model_cover_url"])
    assert fetched["model_cover_url_expires_at"]
    cover = Path(x[("fetch", "model_cover_path")])
    assert cover == cover_dir / f"{job['model_asset_id']}.png"
    assert cover.read_bytes() == cover_png()
    assert_no_duplicate_create(emu, created=1)
    assert result.seconds < RUN_BUDGET
    # At least a poke that saw the end and the fetch. Usually more (a reschedule, or the trigger's
    # look and the resumed read), but on a loaded machine the wait task may start, and get through
    # its retried faults, only after the 6 s job has ended: CI once saw exactly these two.
    assert emu.recorder.count(call="show", status=200) >= 2
    if mode != "deferrable":  # never listed: lists are the trigger's
        assert emu.recorder.count(call="list") == 0
    return job


def assert_no_duplicate_create(emu: MetaStudioEmulator, *, created: int) -> None:
    counters = emu.recorder.counters()
    assert counters["jobs_created"] == created, counters
    assert len(emu.jobs.records()) == created
    assert emu.recorder.count(call="create_by_url", status=200) == created


def assert_one_shots_consumed(emu: MetaStudioEmulator) -> None:
    """Every injected fault actually hit a request (else the scenario tested nothing)."""
    assert emu.faults.settings()["one_shots"] == []


def _logs(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    out, err = capfd.readouterr()
    return out + err + caplog.text


# -- the main flow under each fault ----------------------------------------------------------------


def _reads(mode: str) -> tuple[str, ...]:
    """The read calls every mode's wait surely makes, where faults go: reschedule pokes ``show``;
    deferrable pokes once, its trigger's poller asks for a new watch's details at once (beside its
    first list scan, which may or may not come first: list faults are the trigger suites' part) and
    the resumed task reads the job again."""
    return ("show",)


def arrange_5xx(emu: MetaStudioEmulator, mode: str) -> None:
    emu.faults.set_rates(FAULT_RATES, calls=FAULT_CALLS)
    # The seeded draws may spare a short run: make sure each kind is seen at least once.
    emu.faults.inject("show", "500")
    emu.faults.inject(_reads(mode)[-1], "html", status=503)
    emu.faults.inject("cover", "html", status=502)


def check_5xx(emu: MetaStudioEmulator, mode: str, logs: str) -> None:
    for status in (500, 502, 503):
        assert emu.recorder.count(status=status) >= 1, status
    assert emu.recorder.count(call="create_by_url") == 1  # never faulted, never retried
    assert "HTTP 503" in logs and "retrying" in logs


def arrange_429(emu: MetaStudioEmulator, mode: str) -> None:
    for call in ("create_by_url", *_reads(mode)):
        emu.faults.inject(call, "429", 2)


def check_429(emu: MetaStudioEmulator, mode: str, logs: str) -> None:
    # 429 means the gateway did not take the request: even a create is retried, after Retry-After.
    assert emu.recorder.counters()["statuses"]["create_by_url"] == {"429": 2, "200": 1}
    for call in _reads(mode):
        assert emu.recorder.count(call=call, status=429) == 2


def arrange_drop(emu: MetaStudioEmulator, mode: str) -> None:
    for call in _reads(mode):
        emu.faults.inject(call, "drop", 2)
    emu.faults.inject("cover", "drop")


def check_drop(emu: MetaStudioEmulator, mode: str, logs: str) -> None:
    dropped = [e for e in emu.recorder.request_log() if e["status"] == 0]
    assert sorted(e["call"] for e in dropped) == sorted([*[c for c in _reads(mode) for _ in (1, 2)], "cover"])
    assert emu.recorder.count(call="create_by_url") == 1


# How many slow answers each read gets: every run makes at least two ``show`` calls (the first poke
# and a later one) but, in deferrable mode, maybe a single ``list`` (when the job has finished by the
# trigger's first scan, as on Airflow 3.0 whose ``dag.test()`` defers more slowly).
SLOW_READS = {"show": 2, "list": 1}


def arrange_slow(emu: MetaStudioEmulator, mode: str) -> None:
    emu.faults.inject("create_by_url", "delay", delay=SLOW_SECONDS)
    for call in _reads(mode):
        emu.faults.inject(call, "delay", SLOW_READS[call], delay=SLOW_SECONDS)


def check_slow(emu: MetaStudioEmulator, mode: str, logs: str) -> None:
    delayed = [e for e in emu.recorder.request_log() if e["fault"] == "delay"]
    assert len(delayed) == 1 + sum(SLOW_READS[call] for call in _reads(mode))
    assert all(e["status"] == 200 and e["duration"] >= SLOW_SECONDS for e in delayed), delayed
    # Within the timeout nothing is abandoned: no read timeout, no second create. (The emulator
    # charges its quota when a delayed request is finally handled, not when it arrived, so the
    # request right after a delayed one may draw a 429: the only other status allowed.)
    assert emu.recorder.count(call="create_by_url") == 1
    assert {e["status"] for e in emu.recorder.request_log()} <= {200, 429}
    assert "Timeout" not in logs


def arrange_malformed(emu: MetaStudioEmulator, mode: str) -> None:
    emu.faults.inject("show", "malformed")


def check_malformed(emu: MetaStudioEmulator, mode: str, logs: str) -> None:
    spoiled = [e for e in emu.recorder.request_log() if e["fault"] == "malformed"]
    assert [(e["call"], e["status"]) for e in spoiled] == [("show", 200)]
    assert "non-JSON body" in logs  # the retry says why


@dataclass(frozen=True)
class Scenario:
    arrange: Callable[[MetaStudioEmulator, str], None]
    check: Callable[[MetaStudioEmulator, str, str], None]
    read_timeout: float | None = None
    marks: tuple[Any, ...] = ()


SCENARIOS = {
    "5xx-and-html": Scenario(arrange_5xx, check_5xx),
    "429-bursts": Scenario(arrange_429, check_429),
    "dropped-connections": Scenario(arrange_drop, check_drop),
    # The delayed create and first poke eat 2 x SLOW_SECONDS of the job's run: it runs that much
    # longer, so the first poke still finds it running on a loaded machine.
    "slow-within-timeout": Scenario(
        arrange_slow,
        check_slow,
        read_timeout=READ_TIMEOUT,
        marks=(pytest.mark.metastudio_emulator(processing_seconds=5 + 2 * SLOW_SECONDS),),
    ),
    "malformed-json": Scenario(arrange_malformed, check_malformed),
}


def _use_connection(
    monkeypatch: pytest.MonkeyPatch,
    emu: MetaStudioEmulator,
    *,
    auth_type: str = "aksk",
    read_timeout: float | None = None,
) -> None:
    conn = emu.connection_dict(auth_type)
    if read_timeout is not None:
        conn["extra"]["timeout"] = {"connect": READ_TIMEOUT, "read": read_timeout}
    monkeypatch.setenv(CONN_ENV, json.dumps(conn))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "scenario", [pytest.param(name, marks=spec.marks, id=name) for name, spec in SCENARIOS.items()]
)
def test_main_flow_survives(
    scenario, mode, run_fault_dag, metastudio_emulator, monkeypatch, tmp_path, capfd, caplog
):
    spec = SCENARIOS[scenario]
    _use_connection(monkeypatch, metastudio_emulator, read_timeout=spec.read_timeout)
    spec.arrange(metastudio_emulator, mode)

    result = run_fault_dag(mode, name=f"{scenario}-{mode}", cover_dir=str(tmp_path))

    logs = _logs(capfd, caplog)
    assert_main_flow_succeeded(result, metastudio_emulator, tmp_path, mode)
    assert_one_shots_consumed(metastudio_emulator)
    spec.check(metastudio_emulator, mode, logs)


# -- the create must never be duplicated ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_create_dropped_after_processing_is_not_retried(
    mode, run_fault_dag, metastudio_emulator, tmp_path, capfd, caplog
):
    """The service took the create and the answer was lost: retrying would make a second job."""
    metastudio_emulator.faults.inject("create_by_url", "drop_after")

    result = run_fault_dag(mode, name=f"lost-answer-{mode}", cover_dir=str(tmp_path))

    assert result.tasks == {"create": "failed", "wait": "upstream_failed", "fetch": "upstream_failed"}
    assert metastudio_emulator.recorder.count(call="create_by_url") == 1
    assert [e["status"] for e in metastudio_emulator.recorder.request_log()] == [
        0
    ]  # nothing after the lost answer
    counters = metastudio_emulator.recorder.counters()
    assert counters["jobs_created"] == 1 and len(metastudio_emulator.jobs.records()) == 1
    assert ("create", "job_id") not in result.xcoms
    assert "connection failed after the request was sent" in _logs(capfd, caplog)


@pytest.mark.parametrize("mode", MODES)
def test_create_dropped_before_processing_never_duplicates(
    mode, run_fault_dag, metastudio_emulator, tmp_path
):
    """A drop before the service saw the body may be retried (the job does not exist), but the client
    cannot tell it from a lost answer: whichever it does, there is at most one job and it is the one
    the run reports."""
    metastudio_emulator.faults.inject("create_by_url", "drop")

    result = run_fault_dag(mode, name=f"dropped-{mode}", cover_dir=str(tmp_path))

    statuses = [
        e["status"] for e in metastudio_emulator.recorder.request_log() if e["call"] == "create_by_url"
    ]
    if result.tasks["create"] == "success":  # retried: exactly one job, and the run finished normally
        assert statuses == [0, 200]
        assert_main_flow_succeeded(result, metastudio_emulator, tmp_path, mode)
    else:  # not retried: nothing was created
        assert statuses == [0]
        assert result.tasks == {"create": "failed", "wait": "upstream_failed", "fetch": "upstream_failed"}
        assert_no_duplicate_create(metastudio_emulator, created=0)


# -- an IAM token expiring mid-wait -----------------------------------------------------------------


@pytest.mark.metastudio_emulator(
    waiting_seconds=TOKEN_JOB_SECONDS[0], processing_seconds=TOKEN_JOB_SECONDS[1]
)
@pytest.mark.parametrize("mode", MODES)
def test_token_expiring_mid_wait_is_renewed_once(
    mode, run_fault_dag, metastudio_emulator, monkeypatch, tmp_path
):
    emu = metastudio_emulator
    _use_connection(monkeypatch, emu, auth_type="password")
    timers: list[threading.Timer] = []
    new_job = emu.jobs.add

    def new_job_then_expire(**kwargs: Any) -> Any:
        job = new_job(**kwargs)
        timer = threading.Timer(EXPIRE_AFTER, emu.iam.expire_tokens)
        timer.start()
        timers.append(timer)
        return job

    monkeypatch.setattr(emu.jobs, "add", new_job_then_expire)
    try:
        result = run_fault_dag(mode, name=f"token-{mode}", cover_dir=str(tmp_path))
    finally:
        for timer in timers:
            timer.cancel()

    assert_main_flow_succeeded(result, emu, tmp_path, mode)
    assert len(timers) == 1 and not timers[0].is_alive()
    counters = emu.recorder.counters()
    # One login, one 401 on the expired token, one renewal: never a login storm.
    assert counters["tokens_issued"] == 2
    assert emu.recorder.count(call="iam") == 2
    log = emu.recorder.request_log()
    refused = [e for e in log if e["status"] == 401]
    assert len(refused) == 1 and refused[0]["call"] in ("show", "list")  # the poller reads both
    # The wait went on with the renewed token. On a quiet machine the 401 lands while the job still
    # runs; under load the wait's first read can come after the job's end (CI with two suites in
    # pytest-xdist beside it: 0.4 s after), and the renewal is the same.
    at = refused[0]["emulated_time"]
    assert any(
        e["call"] in ("show", "list") and e["status"] == 200 and e["emulated_time"] >= at for e in log
    ), log[-5:]


# -- a trigger rebuilt from serialize() after a triggerer restart ---------------------------------


TRIGGER_POLL = 0.2
TRIGGER_DEADLINE = 60.0


async def _first_life(trigger: MetaStudioPictureModelingJobTrigger, emu: MetaStudioEmulator) -> list[dict]:
    """Run the trigger until its first poll round is done, then cancel it as a triggerer stop does."""
    events: list[dict] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(event.payload)

    task = asyncio.create_task(consume())
    deadline = time.monotonic() + 20
    while emu.recorder.count(call="list") < 2:  # a round: the finished scan, then the confirmation scan
        assert time.monotonic() < deadline, "the trigger never polled"
        assert not task.done(), events
        await asyncio.sleep(0.02)
    await asyncio.sleep(TRIGGER_POLL / 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tenant_registry._POLLERS.get(asyncio.get_running_loop(), {}) == {}  # released on cancel
    return events


async def _second_life(trigger: Any) -> list[dict]:
    return [event.payload async for event in trigger.run()]


@pytest.mark.metastudio_emulator(quotas_enabled=False, waiting_seconds=0.5, processing_seconds=3)
@pytest.mark.parametrize("faulty", [False, True], ids=["clean", "with-faults"])
def test_trigger_rebuilt_from_serialize_mid_wait_fires_once(
    faulty, metastudio_emulator, metastudio_connection
):
    emu = metastudio_emulator
    if faulty:
        emu.faults.set_rates(FAULT_RATES, calls=FAULT_CALLS)
    job = emu.jobs.create(name="restart")
    trigger = MetaStudioPictureModelingJobTrigger(
        job_id=job["job_id"], end_time=time.time() + TRIGGER_DEADLINE, poll_interval=TRIGGER_POLL
    )

    assert asyncio.run(_first_life(trigger, emu)) == []
    assert emu.jobs.get(job["job_id"])["state"] in ("WAITING", "PROCESSING")  # really mid-wait

    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)  # what the triggerer stores must be plain JSON
    module_name, _, class_name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    events = asyncio.run(_second_life(rebuilt))

    assert len(events) == 1, events
    (event,) = events
    assert event["status"] == "success"
    assert event["job_id"] == job["job_id"]
    final = emu.jobs.get(job["job_id"])
    assert event["state"] == final["state"] == "SUCCEED"
    assert event["model_asset_id"] == final["model_asset_id"]
