"""The trigger and its shared tenant poller, run in real event loops against the emulator."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from airflow_provider_metastudio import tenant
from airflow_provider_metastudio.tenant import connections, registry
from airflow_provider_metastudio.triggers.picture_modeling import MetaStudioPictureModelingJobTrigger

CLASSPATH = "airflow_provider_metastudio.triggers.picture_modeling.MetaStudioPictureModelingJobTrigger"
FAST = pytest.mark.metastudio_emulator(waiting_seconds=0.3, processing_seconds=0.7, quotas_enabled=False)


def _trigger(
    job_id: str, *, interval: float = 0.2, within: float = 30.0, **kw
) -> MetaStudioPictureModelingJobTrigger:
    return MetaStudioPictureModelingJobTrigger(
        job_id=job_id, end_time=time.time() + within, poll_interval=interval, **kw
    )


async def _events(trigger: MetaStudioPictureModelingJobTrigger) -> list[dict]:
    return [e.payload async for e in trigger.run()]


def test_serialize_holds_plain_values_only():
    trigger = MetaStudioPictureModelingJobTrigger(
        job_id="job-1",
        end_time=1234.5,
        metastudio_conn_id="ms",
        poll_interval=7,
        accept_partial_success=False,
        wait_started=1000.0,
        timeout=234.5,
        last_seen=1200.0,
        try_number=2,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs == {
        "job_id": "job-1",
        "end_time": 1234.5,
        "metastudio_conn_id": "ms",
        "poll_interval": 7.0,
        "accept_partial_success": False,
        "last_state": None,
        "wait_started": 1000.0,
        "timeout": 234.5,
        "last_seen": 1200.0,
        "try_number": 2,
    }
    rebuilt = MetaStudioPictureModelingJobTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


@FAST
def test_success_event_carries_what_the_task_needs(metastudio_emulator, metastudio_connection):
    job = metastudio_emulator.jobs.create(name="ok")
    events = asyncio.run(_events(_trigger(job["job_id"])))
    assert len(events) == 1
    event = events[0]
    assert event["status"] == "success"
    assert event["job_id"] == job["job_id"]
    assert event["state"] == "SUCCEED"
    assert event["model_asset_id"] == job["model_asset_id"]
    # No cover URL (a signed credential stored and logged by Airflow): the task reads the job again.
    assert "job" not in event and not any("cover" in key for key in event)


@FAST
@pytest.mark.parametrize(
    "outcome, accept, status",
    [
        ("FAILED", True, "failed"),
        ("CANCELED", True, "failed"),
        ("PARTIAL_SUCCEED", True, "success"),
        ("PARTIAL_SUCCEED", False, "failed"),
    ],
    ids=["failed", "canceled", "partial-accepted", "partial-refused"],
)
def test_terminal_outcomes(outcome, accept, status, metastudio_emulator, metastudio_connection):
    job = metastudio_emulator.jobs.create(name="x", outcome=outcome)
    (event,) = asyncio.run(_events(_trigger(job["job_id"], accept_partial_success=accept)))
    assert event["status"] == status
    assert event["state"] == outcome
    if outcome == "FAILED":
        info = metastudio_emulator.jobs.get(job["job_id"])["error_info"]
        assert (event["error_code"], event["error_msg"]) == (info["error_code"], info["error_msg"])


@FAST
def test_timeout_event_after_deadline(metastudio_emulator, metastudio_connection):
    job = metastudio_emulator.jobs.create(name="slow", waiting_seconds=3600)
    started = time.monotonic()
    (event,) = asyncio.run(_events(_trigger(job["job_id"], within=3.0)))
    assert event["status"] == "timeout"
    assert event["last_state"] == "WAITING"
    assert time.monotonic() - started < 10


@FAST
def test_unknown_job_is_an_error_event_with_status_code_and_request_id(
    metastudio_emulator, metastudio_connection
):
    (event,) = asyncio.run(_events(_trigger("f503894a-20e2-4274-ad88-8364f59a93da_SMS")))
    assert event["status"] == "error"
    assert event["status_code"] == 404
    assert event["error_code"]
    assert event["request_id"]
    assert event["request_id"] in event["message"]


@FAST
def test_invalid_job_id_is_an_error_event_without_any_request(metastudio_emulator, metastudio_connection):
    (event,) = asyncio.run(_events(_trigger("../etc/passwd")))
    assert event["status"] == "error"
    assert "job_id" in event["message"]
    assert metastudio_emulator.recorder.counters()["total"] == 0


@FAST
def test_job_finished_long_before_the_wait_is_found(metastudio_emulator, metastudio_connection):
    old = metastudio_emulator.jobs.create(name="old", waiting_seconds=0, processing_seconds=0)
    metastudio_emulator.clock.advance(3600)  # ended an hour before anyone watched it
    for i in range(3):
        metastudio_emulator.jobs.create(name=f"recent-{i}", waiting_seconds=0, processing_seconds=0)
    (event,) = asyncio.run(_events(_trigger(old["job_id"])))
    assert event["status"] == "success"
    assert event["job_id"] == old["job_id"]


@FAST
def test_unknown_state_keeps_waiting_with_one_warning(
    metastudio_emulator, metastudio_connection, caplog, capfd
):
    job = metastudio_emulator.jobs.create(name="odd", waiting_seconds=3600)
    metastudio_emulator.jobs.set_state(job["job_id"], "ARCHIVING")

    async def scenario():
        task = asyncio.ensure_future(_events(_trigger(job["job_id"], interval=0.1)))
        # Neither list shows the job: the poller must ask for its details, then keep waiting.
        for _ in range(100):
            if metastudio_emulator.recorder.count(call="show") >= 2:
                break
            await asyncio.sleep(0.1)
        assert metastudio_emulator.recorder.count(call="show") >= 2
        assert not task.done()
        metastudio_emulator.jobs.set_state(job["job_id"], "SUCCEED")
        return await asyncio.wait_for(task, 10)

    with caplog.at_level(logging.INFO):
        (event,) = asyncio.run(scenario())
    assert event["status"] == "success"
    # Airflow 3 routes trigger logs through structlog (stdout), Airflow 2 through logging (which
    # also prints them): count in whichever saw them.
    out, err = capfd.readouterr()
    needle = "reports state 'ARCHIVING'"
    in_logging = sum(needle in r.getMessage() for r in caplog.records)
    assert (in_logging or (out + err).count(needle)) == 1


@FAST
def test_many_triggers_share_one_poller_and_make_few_calls(metastudio_emulator, metastudio_connection):
    jobs = [
        metastudio_emulator.jobs.create(name=f"j{i}", waiting_seconds=0.2, processing_seconds=0.3 + 0.05 * i)
        for i in range(60)
    ]

    async def scenario():
        return await asyncio.gather(*(_events(_trigger(j["job_id"], interval=0.3)) for j in jobs))

    started = time.monotonic()
    results = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert [r[0]["status"] for r in results] == ["success"] * 60
    assert [r[0]["job_id"] for r in results] == [j["job_id"] for j in jobs]
    c = metastudio_emulator.recorder.counters()
    rounds = elapsed / 0.3 + 2
    # Per-job polling would make 60 details calls per round; the poller makes a list call or two,
    # and its safety net at most half the details quota (1/s).
    assert c["requests"].get("show", 0) <= elapsed * 0.5 + 2
    assert c["requests"]["list"] <= 3 * rounds
    assert registry._POLLERS == {} or all(not v for v in registry._POLLERS.values())


@pytest.mark.metastudio_emulator(waiting_seconds=0.5, processing_seconds=2)
def test_documented_quotas_are_never_exceeded(metastudio_emulator, metastudio_connection):
    jobs = [metastudio_emulator.jobs.create(name=f"q{i}", processing_seconds=1 + 0.1 * i) for i in range(30)]

    async def scenario():
        return await asyncio.gather(*(_events(_trigger(j["job_id"], interval=0.2)) for j in jobs))

    results = asyncio.run(scenario())
    assert all(r[0]["status"] == "success" for r in results)
    assert metastudio_emulator.recorder.count(status=429) == 0


@FAST
def test_a_cancelled_trigger_does_not_disturb_the_others(metastudio_emulator, metastudio_connection):
    a = metastudio_emulator.jobs.create(name="a", processing_seconds=1.0)
    b = metastudio_emulator.jobs.create(name="b", waiting_seconds=3600)

    async def scenario():
        ta = asyncio.ensure_future(_events(_trigger(a["job_id"])))
        tb = asyncio.ensure_future(_events(_trigger(b["job_id"])))
        await asyncio.sleep(0.5)
        tb.cancel()
        result = await asyncio.wait_for(ta, 10)
        with pytest.raises(asyncio.CancelledError):
            await tb
        loop_pollers = registry._POLLERS.get(asyncio.get_running_loop(), {})
        return result, dict(loop_pollers)

    (event,), left = asyncio.run(scenario())
    assert event["status"] == "success"
    assert left == {}  # the last release stopped the poller


@FAST
def test_two_triggers_on_one_job_with_different_intervals(metastudio_emulator, metastudio_connection):
    job = metastudio_emulator.jobs.create(name="shared", processing_seconds=1.0)

    async def scenario():
        return await asyncio.gather(
            _events(_trigger(job["job_id"], interval=0.1)), _events(_trigger(job["job_id"], interval=5))
        )

    started = time.monotonic()
    fast, slow = asyncio.run(scenario())
    assert fast[0]["status"] == slow[0]["status"] == "success"
    # The slow watcher is answered by the fast one's rounds, well before its own 5 s interval.
    assert time.monotonic() - started < 4
    assert (
        metastudio_emulator.recorder.counters()["requests"].get("show", 0) <= 2
    )  # each new watch's first look


@FAST
def test_more_than_a_page_finishing_before_any_other_job_finished(metastudio_emulator, metastudio_connection):
    # No terminal job exists at the first round; then 150 (more than one list page) finish
    # between two rounds. All must be seen, not only the newest page.
    jobs = [
        metastudio_emulator.jobs.create(name=f"p{i}", waiting_seconds=0.5, processing_seconds=2.6)
        for i in range(150)
    ]

    async def scenario():
        return await asyncio.gather(
            *(_events(_trigger(j["job_id"], interval=3.0, within=25.0)) for j in jobs)
        )

    results = asyncio.run(scenario())
    assert [r[0]["status"] for r in results] == ["success"] * 150


@FAST
def test_restarted_triggerer_finds_jobs_that_ended_while_down(metastudio_emulator, metastudio_connection):
    emu = metastudio_emulator
    watched = emu.jobs.create(name="watched", waiting_seconds=0, processing_seconds=0)
    emu.clock.advance(600)  # it ended ten minutes before the (re)started triggerer picked it up
    for i in range(250):  # newer finished jobs: the watched one is on the third page
        emu.jobs.create(name=f"done-{i}", waiting_seconds=0, processing_seconds=0)
    for i in range(150):  # and two pages of running jobs
        emu.jobs.create(name=f"running-{i}", waiting_seconds=3600)
    started = time.monotonic()
    (event,) = asyncio.run(_events(_trigger(watched["job_id"], interval=5.0)))
    assert event["status"] == "success"
    assert event["job_id"] == watched["job_id"]
    # Found in the first round (its finished scan reads back an hour, and the new watch's first
    # details call runs beside it), not after confirmation passes of the running list.
    assert time.monotonic() - started < 4
    assert emu.recorder.count(call="show") <= 1
    assert emu.recorder.count(call="list") <= 3


@FAST
@pytest.mark.parametrize("ttl, lookups", [(30.0, 1), (0.0, 20)], ids=["shared", "expired"])
def test_triggers_of_one_connection_share_a_lookup(
    ttl, lookups, metastudio_emulator, metastudio_connection, monkeypatch
):
    from airflow_provider_metastudio.hooks import metastudio as hook_module

    seen: list[str] = []
    real = hook_module.aget_connection

    async def counting(conn_id):
        seen.append(conn_id)
        return await real(conn_id)

    monkeypatch.setattr(hook_module, "aget_connection", counting)
    monkeypatch.setattr(connections, "CONFIG_TTL", ttl)
    jobs = [metastudio_emulator.jobs.create(name=f"c{i}", processing_seconds=0.5) for i in range(20)]

    async def scenario():
        return await asyncio.gather(*(_events(_trigger(j["job_id"])) for j in jobs))

    results = asyncio.run(scenario())
    assert [r[0]["status"] for r in results] == ["success"] * 20
    assert seen == [metastudio_connection] * lookups


def _info_text(caplog, capfd) -> str:
    # Airflow 3 routes task and trigger logs through structlog (stdout), Airflow 2 through logging
    # (which may print them too): whichever saw them; read once, capfd.readouterr() consumes.
    out, err = capfd.readouterr()
    in_logging = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    return in_logging if "Picture modeling job" in in_logging else out + err


@FAST
def test_trigger_logs_only_what_changed_after_the_deferring_task(
    metastudio_emulator, metastudio_connection, caplog, capfd
):
    job = metastudio_emulator.jobs.create(name="logged", processing_seconds=0.5)
    with caplog.at_level(logging.INFO):
        (event,) = asyncio.run(_events(_trigger(job["job_id"], last_state="WAITING")))
    assert event["status"] == "success"
    text = _info_text(caplog, capfd)
    assert "(first look)" not in text
    # The changes logged start at the deferring task's state and chain to the end, each once (on a
    # loaded machine the poller may also see PROCESSING on the way: WAITING -> PROCESSING -> SUCCEED).
    changes = re.findall(rf"Picture modeling job {job['job_id']}: (\w+) -> (\w+) after", text)
    assert changes and changes[0][0] == "WAITING" and changes[-1][1] == "SUCCEED", changes
    assert all(a[1] == b[0] for a, b in zip(changes, changes[1:], strict=False)), changes
    assert len(changes) == len(set(changes)) and text.count("-> SUCCEED after") == 1, changes


@FAST
@pytest.mark.parametrize("reschedules, first_looks", [(0, 1), (3, 0)], ids=["first-poke", "rescheduled"])
def test_a_rescheduled_poke_does_not_log_a_first_look(
    reschedules, first_looks, metastudio_emulator, metastudio_connection, caplog, capfd
):
    from airflow_provider_metastudio._compat import AIRFLOW_V_3
    from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor

    job = metastudio_emulator.jobs.create(name="poked", waiting_seconds=3600)
    sensor = MetaStudioPictureModelingJobSensor(task_id="wait", job_id=job["job_id"], mode="reschedule")
    from unittest import mock

    context: dict = {"ti": mock.Mock()}
    if AIRFLOW_V_3:
        context["task_reschedule_count"] = reschedules
    with caplog.at_level(logging.INFO):
        assert sensor.poke(context) is False
    # Airflow 2 gives no reschedule count: there a running job's first look is never at INFO.
    text = _info_text(caplog, capfd)
    assert text.count("(first look) -> WAITING") == (first_looks if AIRFLOW_V_3 else 0)


# -- the service misbehaving as the real one may (emulator faults) ---------------------------------


@pytest.fixture
def patient_poller(monkeypatch):
    """The poller's safety net and backoff, scaled down to test time."""
    monkeypatch.setattr(tenant.TenantPoller, "net_min_period", 1.0)
    monkeypatch.setattr(tenant.TenantPoller, "backoff_max", 1.0)


@FAST
def test_an_outage_longer_than_the_hooks_retries_ends_no_wait(
    metastudio_emulator, metastudio_connection, patient_poller, caplog
):
    emu = metastudio_emulator
    jobs = [emu.jobs.create(name=f"o{i}", waiting_seconds=0.5, processing_seconds=1.0 + i) for i in range(5)]
    emu.faults.outage(6, call="*", kind="503")  # every job ends during it

    async def scenario():
        return await asyncio.gather(*(_events(_trigger(j["job_id"], interval=0.3)) for j in jobs))

    with caplog.at_level(logging.DEBUG, logger="airflow_provider_metastudio"):
        results = asyncio.run(scenario())
    assert [r[0]["status"] for r in results] == ["success"] * 5
    assert emu.recorder.count(status=503) > 5
    # The outage is logged once when it starts and once when it ends (per kind of call), not per
    # failed call: the hook's own retries inside the poller log at DEBUG.
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    poller_lines = [r for r in info if r.name == tenant.__name__]
    assert sum("calls fail" in r.getMessage() for r in poller_lines) == 2
    # (a kind of call that no wait needs after the outage has no call left to log its recovery)
    assert 1 <= sum("work again" in r.getMessage() for r in poller_lines) <= 2
    assert not [r for r in info if "retrying in" in r.getMessage()]


@FAST
def test_an_error_about_one_job_ends_only_its_wait(metastudio_emulator, metastudio_connection):
    emu = metastudio_emulator
    bad = emu.jobs.create(name="bad", waiting_seconds=3600)
    good = emu.jobs.create(name="good", processing_seconds=1.5)
    emu.faults.set_job_error(bad["job_id"], 400, "MSS.00000003", f"invalid job_id {bad['job_id']}")

    async def scenario():
        return await asyncio.gather(_events(_trigger(bad["job_id"])), _events(_trigger(good["job_id"])))

    (bad_event,), (good_event,) = asyncio.run(scenario())
    assert bad_event["status"] == "error"
    assert (bad_event["status_code"], bad_event["error_code"]) == (400, "MSS.00000003")
    assert bad_event["request_id"] and bad_event["request_id"] in bad_event["message"]
    assert good_event["status"] == "success"


@FAST
def test_a_job_deleted_while_watched_ends_its_wait_with_the_service_answer(
    metastudio_emulator, metastudio_connection, patient_poller
):
    emu = metastudio_emulator
    job = emu.jobs.create(name="vanishing", waiting_seconds=3600)

    async def scenario():
        task = asyncio.ensure_future(_events(_trigger(job["job_id"], interval=0.2, within=60)))
        while emu.recorder.count(call="show") < 1:  # seen (running) first
            await asyncio.sleep(0.05)
        emu.jobs.delete(job["job_id"])
        return await asyncio.wait_for(task, 15), time.monotonic()

    started = time.monotonic()
    (event,), ended = asyncio.run(scenario())
    assert event["status"] == "error" and event["status_code"] == 404
    assert ended - started < 10  # the safety net's period here is 1 s, not the 60 s deadline


@FAST
def test_jobs_the_lists_report_late_and_out_of_order_are_all_found(
    metastudio_emulator, metastudio_connection, patient_poller
):
    emu = metastudio_emulator
    emu.faults.set_list_quirks(ignore_sort=True, visibility_delay=3600, stale_update_time=True)
    jobs = [
        emu.jobs.create(name=f"l{i}", waiting_seconds=0.2, processing_seconds=0.5 + 0.3 * i) for i in range(4)
    ]

    async def scenario():
        return await asyncio.gather(*(_events(_trigger(j["job_id"], interval=0.3, within=60)) for j in jobs))

    started = time.monotonic()
    results = asyncio.run(scenario())
    assert [r[0]["status"] for r in results] == ["success"] * 4
    assert time.monotonic() - started < 20  # by the details safety net, not the deadline


@FAST
def test_a_job_that_ends_just_before_the_deadline_is_reported_as_ended(
    metastudio_emulator, metastudio_connection
):
    job = metastudio_emulator.jobs.create(name="close-call", waiting_seconds=0.5, processing_seconds=1.5)
    # The next poll would come long after the deadline: only the final read can see the end.
    (event,) = asyncio.run(_events(_trigger(job["job_id"], interval=60, within=3)))
    assert event["status"] == "success"


@FAST
def test_a_trigger_rebuilt_after_its_deadline_reads_the_job_once(metastudio_emulator, metastudio_connection):
    job = metastudio_emulator.jobs.create(name="done-long-ago", waiting_seconds=0, processing_seconds=0)
    trigger = MetaStudioPictureModelingJobTrigger(
        job_id=job["job_id"], end_time=time.time() - 600, wait_started=time.time() - 1200, timeout=600
    )
    (event,) = asyncio.run(_events(trigger))
    assert event["status"] == "success"


@FAST
def test_a_timeout_message_states_the_whole_wait(metastudio_emulator, metastudio_connection):
    job = metastudio_emulator.jobs.create(name="slow", waiting_seconds=3600)
    now = time.time()
    trigger = MetaStudioPictureModelingJobTrigger(
        job_id=job["job_id"],
        end_time=now + 1,
        wait_started=now - 599,
        timeout=600,
        poll_interval=0.2,
        last_state="WAITING",
        last_seen=now - 12,
    )
    (event,) = asyncio.run(_events(trigger))
    assert event["status"] == "timeout" and event["last_state"] == "WAITING"
    assert re.fullmatch(
        rf"Picture modeling job {job['job_id']} still WAITING after 60\d s \(timeout 600 s; "
        r"last seen WAITING \d s ago\)",
        event["message"],
    ), event["message"]
