"""MetaStudioPictureModelingJobSensor, dbt-style: poke results, the deferral and its trigger, the
resume from each event, and soft_fail. Only the hook's job read is replaced; no HTTP, no database."""

from __future__ import annotations

import time
from datetime import timedelta
from unittest import mock

import pytest
from testsupport import BAD_JOB_IDS
from testsupport.tasks import (
    AK,
    ASSET_ID,
    JOB_ID,
    REGION,
    SK,
    context,
    job,
    patch_job_reads,
    push_counts,
    pushed,
    use_connection,
)

from airflow_provider_metastudio._compat import (
    AIRFLOW_V_3,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow_provider_metastudio.exceptions import (
    MetaStudioError,
    MetaStudioJobFailedError,
    MetaStudioValidationError,
)
from airflow_provider_metastudio.links.picture_modeling import XCOM_CONSOLE_URL_KEY, console_url
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor
from airflow_provider_metastudio.triggers.picture_modeling import (
    DEFER_TIMEOUT_MARGIN,
    MetaStudioPictureModelingJobTrigger,
    job_event,
)

TRIGGER_PATH = "airflow_provider_metastudio.triggers.picture_modeling.MetaStudioPictureModelingJobTrigger"
CONSOLE_URL = console_url(REGION, ASSET_ID)


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    use_connection(monkeypatch)
    yield
    mock.patch.stopall()


def sensor(**kwargs):
    kwargs = {"task_id": "wait", "job_id": JOB_ID, "poke_interval": 7, "timeout": 600, **kwargs}
    return MetaStudioPictureModelingJobSensor(**kwargs)


def success_event(try_number=1, state="SUCCEED"):
    # Built by the trigger's own function, so these tests follow the event's real shape.
    return {**job_event(job(state), accept_partial_success=True), "try_number": try_number}


# -- poke ----------------------------------------------------------------------------------------------


def test_poke_of_a_succeeded_job_is_done_with_the_job_as_xcom_value_and_pushes_the_console_url():
    reads = patch_job_reads(job("SUCCEED"))
    ctx = context()
    result = sensor().poke(ctx)
    assert result.is_done is True
    assert result.xcom_value == job("SUCCEED").to_dict()
    reads.assert_called_once_with(JOB_ID)
    assert pushed(ctx) == {XCOM_CONSOLE_URL_KEY: CONSOLE_URL}


@pytest.mark.parametrize("state", ["WAITING", "PROCESSING", "SOME_NEW_STATE"])
def test_poke_of_a_running_or_unknown_state_is_false(state):
    patch_job_reads(job(state))
    assert sensor().poke(context()) is False


def test_console_url_is_pushed_once_per_try_across_pokes():
    patch_job_reads(job("PROCESSING"), job("PROCESSING"), job("SUCCEED"))
    task, ctx = sensor(), context()
    task.poke(ctx), task.poke(ctx), task.poke(ctx)
    assert push_counts(ctx) == {XCOM_CONSOLE_URL_KEY: 1}


def test_poke_does_not_push_a_console_url_before_the_model_asset_is_known():
    patch_job_reads(job("WAITING", model_asset_id=None))
    ctx = context()
    assert sensor().poke(ctx) is False
    assert pushed(ctx) == {}


@pytest.mark.parametrize("state", ["FAILED", "CANCELED"])
def test_poke_of_a_failed_job_raises_with_the_service_error(state):
    patch_job_reads(job(state, error_info={"error_code": "MSS.00000001", "error_msg": "no face found"}))
    with pytest.raises(MetaStudioJobFailedError, match=f"{state}: MSS.00000001 no face found") as exc:
        sensor().poke(context())
    assert (exc.value.job_id, exc.value.state) == (JOB_ID, state)


@pytest.mark.parametrize(("accept", "done"), [(True, True), (False, False)], ids=["accepted", "not-accepted"])
def test_partial_success_is_done_only_when_accepted(accept, done):
    patch_job_reads(job("PARTIAL_SUCCEED", model_cover_url=None))
    task = sensor(accept_partial_success=accept)
    if done:
        assert task.poke(context()).is_done
    else:
        with pytest.raises(MetaStudioJobFailedError, match="PARTIAL_SUCCEED"):
            task.poke(context())


def test_poke_errors_of_the_hook_propagate():
    patch_job_reads(MetaStudioError("MetaStudio show failed: HTTP 404", status=404))
    with pytest.raises(MetaStudioError, match="HTTP 404"):
        sensor().poke(context())


@pytest.mark.parametrize("job_id", BAD_JOB_IDS.values(), ids=list(BAD_JOB_IDS))
def test_a_bad_job_id_fails_the_poke_naming_the_field_before_any_request(requests_mock, job_id):
    # The real hook: the id is refused before any request, whichever layer checks it.
    with pytest.raises(MetaStudioValidationError, match="job_id"):
        sensor(job_id=job_id).poke(context())
    assert requests_mock.call_count == 0


def test_poke_mode_times_out_after_a_real_read_with_durations_in_the_message():
    patch_job_reads(job("PROCESSING"))
    task = sensor(timeout=60)
    task._wait_started = time.time() - 61  # what execute() set 61 s ago
    with pytest.raises(AirflowSensorTimeout, match=JOB_ID) as exc:
        task.poke(context())
    assert "PROCESSING" in str(exc.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"poke_interval": 0}, "poke_interval"), ({"timeout": 0}, "timeout")],
    ids=["zero-poke-interval", "zero-timeout"],
)
def test_bad_wait_settings_fail_when_the_task_is_built(kwargs, field):
    with pytest.raises(MetaStudioValidationError, match=field):
        sensor(**kwargs)


# -- deferral ------------------------------------------------------------------------------------------


def test_deferrable_sensor_pokes_once_then_defers_with_the_trigger_and_its_deadline():
    reads = patch_job_reads(job("PROCESSING"))
    task = sensor(deferrable=True, timeout=600, poke_interval=7, accept_partial_success=False)
    before = time.time()
    with pytest.raises(TaskDeferred) as exc:
        task.execute(context(try_number=3))
    after = time.time()
    reads.assert_called_once()
    deferred = exc.value
    assert isinstance(deferred.trigger, MetaStudioPictureModelingJobTrigger)
    assert deferred.method_name == "execute_complete"
    # Airflow's own timeout leaves the trigger room for its final read and its timeout event.
    assert deferred.timeout == timedelta(seconds=600 + DEFER_TIMEOUT_MARGIN)
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == TRIGGER_PATH
    assert before <= kwargs["wait_started"] <= after
    assert kwargs["end_time"] == kwargs["wait_started"] + 600
    assert kwargs["last_seen"] >= kwargs["wait_started"]
    assert {k: v for k, v in kwargs.items() if k not in ("wait_started", "end_time", "last_seen")} == {
        "job_id": JOB_ID,
        "metastudio_conn_id": "metastudio_default",
        "poll_interval": 7.0,
        "accept_partial_success": False,
        "last_state": "PROCESSING",
        "timeout": 600.0,
        "try_number": 3,
    }


def test_trigger_kwargs_carry_no_secret():
    patch_job_reads(job("PROCESSING"))
    with pytest.raises(TaskDeferred) as exc:
        sensor(deferrable=True).execute(context())
    serialized = repr(exc.value.trigger.serialize())
    assert AK not in serialized and SK not in serialized


def test_deferrable_sensor_of_a_finished_job_returns_at_once_without_deferring():
    patch_job_reads(job("SUCCEED"))
    assert sensor(deferrable=True).execute(context()) == job("SUCCEED").to_dict()


def test_deferred_sensor_pushes_the_console_url_once_across_defer_and_resume():
    # Airflow keeps a try's XComs across a deferral and resumes a fresh instance with the defer kwargs.
    patch_job_reads(job("PROCESSING"), job("SUCCEED"))
    task, ctx = sensor(deferrable=True), context()
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(ctx)
    sensor(deferrable=True).execute_complete(ctx, success_event(), **(deferred.value.kwargs or {}))
    assert push_counts(ctx) == {XCOM_CONSOLE_URL_KEY: 1}


# -- resume from the trigger's event ------------------------------------------------------------------


def test_success_event_reads_the_job_once_more_for_a_usable_cover_url():
    # The event carries no cover URL (a signed credential Airflow would store): the result has a fresh one.
    reads = patch_job_reads(job("SUCCEED"))
    event = success_event()
    assert "model_cover_url" not in str(event)
    ctx = context()
    result = sensor().execute_complete(ctx, event)
    assert result == job("SUCCEED").to_dict()
    assert result["model_cover_url"] == job("SUCCEED").model_cover_url
    reads.assert_called_once_with(JOB_ID)
    assert pushed(ctx) == {XCOM_CONSOLE_URL_KEY: CONSOLE_URL}


def test_failed_event_raises_the_job_failure():
    event = {
        "status": "failed",
        "job_id": JOB_ID,
        "state": "FAILED",
        "error_code": "MSS.00000001",
        "error_msg": "no face found",
        "try_number": 1,
    }
    with pytest.raises(MetaStudioJobFailedError, match="FAILED: MSS.00000001 no face found"):
        sensor().execute_complete(context(), event)


def test_timeout_event_raises_the_sensor_timeout_with_the_trigger_message():
    message = "still PROCESSING after 600 s"
    event = {"status": "timeout", "job_id": JOB_ID, "message": message, "try_number": 1}
    with pytest.raises(AirflowSensorTimeout, match=message):
        sensor().execute_complete(context(), event)


def test_error_event_raises_with_the_service_fields():
    event = {
        "status": "error",
        "job_id": JOB_ID,
        "message": "MetaStudio show failed: HTTP 403 APIGW.0302",
        "status_code": 403,
        "error_code": "APIGW.0302",
        "error_msg": "denied",
        "request_id": "req-9",
    }
    with pytest.raises(MetaStudioError, match="HTTP 403") as exc:
        sensor().execute_complete(context(), event)
    assert (exc.value.status, exc.value.error_code, exc.value.request_id) == (403, "APIGW.0302", "req-9")


@pytest.mark.parametrize("event", [None, {}, {"job_id": JOB_ID}], ids=["none", "empty", "no-status"])
def test_malformed_event_is_an_error(event):
    with pytest.raises(MetaStudioError, match="Malformed trigger event"):
        sensor().execute_complete(context(), event)


def test_an_earlier_trys_event_starts_this_try_over():
    # Airflow 3.0 resumes a retry with the failed try's event: this try must wait for itself.
    reads = patch_job_reads(job("PROCESSING"))
    with pytest.raises(TaskDeferred) as exc:
        sensor(deferrable=True).execute_complete(context(try_number=2), success_event(try_number=1))
    reads.assert_called_once()
    assert exc.value.trigger.serialize()[1]["try_number"] == 2


def test_an_event_of_this_try_is_not_stale():
    patch_job_reads(job("SUCCEED"))
    assert sensor().execute_complete(context(try_number=2), success_event(try_number=2))["state"] == "SUCCEED"


# -- soft_fail: only a timeout skips --------------------------------------------------------------------


def resume(task, event):
    return task.resume_execution("execute_complete", {"event": event}, context())


def test_soft_fail_skips_on_a_timeout_event():
    event = {"status": "timeout", "job_id": JOB_ID, "message": "still WAITING", "try_number": 1}
    with pytest.raises(AirflowSkipException, match="still WAITING"):
        resume(sensor(soft_fail=True), event)


def test_soft_fail_does_not_skip_a_failed_job():
    event = {"status": "failed", "job_id": JOB_ID, "state": "CANCELED", "try_number": 1}
    with pytest.raises(MetaStudioJobFailedError, match="CANCELED"):
        resume(sensor(soft_fail=True), event)


def test_soft_fail_does_not_skip_an_error_event():
    event = {"status": "error", "job_id": JOB_ID, "message": "HTTP 401", "status_code": 401}
    with pytest.raises(MetaStudioError, match="HTTP 401") as exc:
        resume(sensor(soft_fail=True), event)
    assert not isinstance(exc.value, AirflowSkipException)


def test_without_soft_fail_a_timeout_fails():
    event = {"status": "timeout", "job_id": JOB_ID, "message": "still WAITING", "try_number": 1}
    with pytest.raises(AirflowSensorTimeout):
        resume(sensor(), event)


# Airflow's own deferral timeout (the trigger never reported): next_method "__fail__" with the
# scheduler's error text, which differs between Airflow 2 and 3.
DEFERRAL_TIMEOUT = "Trigger timeout" if AIRFLOW_V_3 else "Trigger/execution timeout"


def test_airflows_deferral_timeout_is_a_sensor_timeout_naming_the_job():
    with pytest.raises(AirflowSensorTimeout, match=f"{JOB_ID} still not finished after the timeout of 600 s"):
        sensor().resume_execution("__fail__", {"error": DEFERRAL_TIMEOUT}, context())


def test_soft_fail_skips_on_airflows_deferral_timeout():
    with pytest.raises(AirflowSkipException):
        sensor(soft_fail=True).resume_execution("__fail__", {"error": DEFERRAL_TIMEOUT}, context())


def test_soft_fail_does_not_skip_a_crashed_trigger():
    with pytest.raises(Exception, match="Trigger failure") as exc:
        sensor(soft_fail=True).resume_execution("__fail__", {"error": "Trigger failure"}, context())
    assert not isinstance(exc.value, (AirflowSkipException, AirflowSensorTimeout))
