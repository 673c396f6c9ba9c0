"""Waits and creates that mean what they say: wait settings, what is handed to the trigger, soft_fail
in every sensor mode, XComs pushed once, and the retry lookup of the create operator.

Against the emulator over real HTTP; task contexts are mocks (the e2e tests run real Airflow).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest

from airflow_provider_metastudio._compat import AirflowSensorTimeout, AirflowSkipException, TaskDeferred
from airflow_provider_metastudio.exceptions import (
    MetaStudioError,
    MetaStudioJobFailedError,
    MetaStudioValidationError,
)
from airflow_provider_metastudio.operators.picture_modeling import (
    CLOCK_SKEW_MARGIN,
    MetaStudioCreatePictureModelingJobOperator,
    MetaStudioGetPictureModelingJobOperator,
    default_job_name,
    is_retry,
)
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor
from airflow_provider_metastudio.testing import MetaStudioEmulator
from airflow_provider_metastudio.triggers.picture_modeling import (
    DEFER_TIMEOUT_MARGIN,
    MetaStudioCreatePictureModelingJobTrigger,
)
from airflow_provider_metastudio.validation import MAX_NAME_LENGTH

pytestmark = pytest.mark.metastudio_emulator(quotas_enabled=False, waiting_seconds=0, processing_seconds=3600)

STYLE_ID = "system_male_001"
PICTURE_URL = "https://photos.example.com/face.png"
RUN_ID = "manual__2026-11-24T09:30:00+00:00"


@pytest.fixture
def emu(metastudio_emulator: MetaStudioEmulator, metastudio_connection: str) -> Iterator[MetaStudioEmulator]:
    yield metastudio_emulator


def _context(*, try_number: int = 1, retries: int = 2, run_start: datetime | None = None) -> dict[str, Any]:
    ti = mock.Mock(name="ti", dag_id="dag", task_id="create", run_id=RUN_ID, map_index=-1)
    ti.try_number = try_number
    ti.max_tries = retries  # first series: max_tries == retries
    ti.task.retries = retries
    dag_run = mock.Mock(name="dag_run", start_date=run_start or datetime.now(timezone.utc))
    return {"ti": ti, "dag_run": dag_run}


def _pushed(context: dict[str, Any]) -> Counter[str]:
    return Counter(c.kwargs["key"] for c in context["ti"].xcom_push.call_args_list)


def _create_op(**kwargs: Any) -> MetaStudioCreatePictureModelingJobOperator:
    kwargs.setdefault("poll_interval", 0.2)
    return MetaStudioCreatePictureModelingJobOperator(
        task_id="create", picture_url=PICTURE_URL, style_id=STYLE_ID, **kwargs
    )


# -- wait settings: refused when the task is built, or at the latest before any request ----------------

BAD_WAITS = [
    ({"poll_interval": 0}, "poll_interval"),
    ({"poll_interval": -3}, "poll_interval"),
    ({"poll_interval": "30"}, "poll_interval"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": float("nan")}, "timeout"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_WAITS)
@pytest.mark.parametrize("operator", ["create", "get"])
def test_operators_refuse_bad_wait_settings_when_built(operator, kwargs, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        if operator == "create":
            _create_op(**kwargs)
        else:
            MetaStudioGetPictureModelingJobOperator(task_id="get", job_id="j", **kwargs)
    assert exc.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"poke_interval": 0}, "poke_interval"), ({"timeout": 0}, "timeout")]
)
def test_sensor_refuses_zero_wait_settings_when_built(kwargs, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        MetaStudioPictureModelingJobSensor(task_id="wait", job_id="j", **kwargs)
    assert exc.value.field == field


@pytest.mark.parametrize("kwargs", [{"poke_interval": -1}, {"timeout": -1}, {"poke_interval": "x"}])
def test_sensor_leaves_negative_and_non_numbers_to_airflow(kwargs):
    # Airflow's BaseSensorOperator refuses them itself (AirflowException on 2.11/3.0, ValueError on 3.3).
    with pytest.raises(Exception) as exc:
        MetaStudioPictureModelingJobSensor(task_id="wait", job_id="j", **kwargs)
    assert not isinstance(exc.value, MetaStudioValidationError)


@pytest.mark.parametrize("who", ["create", "get", "sensor"])
def test_wait_settings_changed_after_build_fail_before_any_request(who, emu):
    if who == "create":
        task: Any = _create_op()
    elif who == "get":
        task = MetaStudioGetPictureModelingJobOperator(task_id="get", job_id="j", wait_for_completion=True)
    else:
        task = MetaStudioPictureModelingJobSensor(task_id="wait", job_id="j")
    task.timeout = -5  # e.g. set by a subclass or a mapped partial after __init__
    with pytest.raises(MetaStudioValidationError) as exc:
        task.execute(_context())
    assert exc.value.field == "timeout"
    assert emu.recorder.request_log() == []


# -- what the trigger is given ------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [600, None])
def test_create_operator_defers_with_the_whole_wait(timeout, emu):
    op = _create_op(deferrable=True, timeout=timeout)
    before = time.time()
    with pytest.raises(TaskDeferred) as exc:
        op.execute(_context())
    trigger = exc.value.trigger
    # By URL, deferrable: it defers before creating, and the whole wait starts now.
    assert isinstance(trigger, MetaStudioCreatePictureModelingJobTrigger)
    assert before <= trigger.wait_started <= time.time()
    assert trigger.timeout == timeout
    assert emu.recorder.count("create_by_url") == 0
    if timeout is None:
        assert trigger.end_time is None and exc.value.timeout is None
    else:
        assert trigger.end_time == trigger.wait_started + timeout
        assert exc.value.timeout == timedelta(seconds=timeout + DEFER_TIMEOUT_MARGIN)


def test_get_operator_defers_with_the_state_it_read(emu):
    job = emu.jobs.create(name="m", waiting_seconds=3600)
    op = MetaStudioGetPictureModelingJobOperator(
        task_id="get", job_id=job["job_id"], wait_for_completion=True, deferrable=True, timeout=300
    )
    before = time.time()
    with pytest.raises(TaskDeferred) as exc:
        op.execute(_context())
    trigger = exc.value.trigger
    assert trigger.last_state == "WAITING"
    assert before <= trigger.wait_started <= trigger.last_seen <= time.time()
    assert trigger.end_time == trigger.wait_started + 300 and trigger.timeout == 300
    assert exc.value.timeout == timedelta(seconds=300 + DEFER_TIMEOUT_MARGIN)


def test_sensor_defers_with_the_first_poke(emu):
    job = emu.jobs.create(name="m", waiting_seconds=0, processing_seconds=3600)
    sensor = MetaStudioPictureModelingJobSensor(
        task_id="wait", job_id=job["job_id"], deferrable=True, timeout=120, poke_interval=5
    )
    before = time.time()
    with pytest.raises(TaskDeferred) as exc:
        sensor.execute(_context())
    trigger = exc.value.trigger
    assert before <= trigger.wait_started <= trigger.last_seen <= time.time()
    assert trigger.last_state == "PROCESSING" and trigger.poll_interval == 5
    assert trigger.end_time == trigger.wait_started + 120 and trigger.timeout == 120
    assert exc.value.timeout == timedelta(seconds=120 + DEFER_TIMEOUT_MARGIN)


def test_blocking_operator_with_no_timeout_waits_forever(emu):
    op = _create_op(timeout=None)
    with mock.patch.object(type(op.hook), "wait_for_picture_modeling_job", autospec=True) as wait:
        wait.side_effect = MetaStudioError("stop here")
        with pytest.raises(MetaStudioError, match="stop here"):
            op.execute(_context())
    assert wait.call_args.kwargs == {"poll_interval": 0.2, "timeout": None}


# -- soft_fail skips on a timeout only ----------------------------------------------------------------


def _failed_event(job_id: str) -> dict[str, Any]:
    return {"status": "failed", "job_id": job_id, "state": "FAILED", "error_code": "MSS.1", "error_msg": "no"}


def _trigger_fail_kwargs(timeout: bool) -> dict[str, Any]:
    """What Airflow hands resume_execution when it failed the deferral itself."""
    try:
        from airflow.sdk.bases.operator import TriggerFailureReason
    except ImportError:  # Airflow 2.11: plain strings
        return {"error": "Trigger/execution timeout" if timeout else "Trigger failure"}
    return {
        "error": TriggerFailureReason.TRIGGER_TIMEOUT if timeout else TriggerFailureReason.TRIGGER_FAILURE
    }


@pytest.mark.parametrize("soft", [True, False], ids=["soft_fail", "hard"])
@pytest.mark.parametrize(
    ("case", "skipped_when_soft"),
    [
        ("failed", False),
        ("error", False),
        ("trigger-crash", False),
        ("timeout", True),
        ("defer-timeout", True),
    ],
)
def test_deferrable_sensor_resumes_with_soft_fail_skipping_timeouts_only(case, skipped_when_soft, soft, emu):
    sensor = MetaStudioPictureModelingJobSensor(task_id="wait", job_id="j-1", deferrable=True, soft_fail=soft)
    method, kwargs = "execute_complete", None
    if case == "failed":
        kwargs = {"event": _failed_event("j-1")}
    elif case == "error":
        kwargs = {
            "event": {"status": "error", "job_id": "j-1", "message": "MetaStudio list failed: HTTP 403"}
        }
    elif case == "timeout":
        kwargs = {
            "event": {"status": "timeout", "job_id": "j-1", "message": "Picture modeling job j-1 still ..."}
        }
    else:
        method, kwargs = "__fail__", _trigger_fail_kwargs(timeout=case == "defer-timeout")
    with pytest.raises(Exception) as exc:
        sensor.resume_execution(method, kwargs, _context())
    if soft and skipped_when_soft:
        assert isinstance(exc.value, AirflowSkipException)
        return
    assert not isinstance(exc.value, AirflowSkipException), exc.value
    if case == "failed":
        assert isinstance(exc.value, MetaStudioJobFailedError) and exc.value.state == "FAILED"
    elif case in ("timeout", "defer-timeout"):
        assert isinstance(exc.value, AirflowSensorTimeout)
        assert "j-1" in str(exc.value)


@pytest.mark.parametrize("outcome", ["FAILED", "CANCELED"])
@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable-first-poke"])
def test_sensor_with_soft_fail_fails_on_a_failed_job(outcome, deferrable, emu):
    job = emu.jobs.create(name="m", outcome=outcome, waiting_seconds=0, processing_seconds=0)
    sensor = MetaStudioPictureModelingJobSensor(
        task_id="wait", job_id=job["job_id"], soft_fail=True, deferrable=deferrable, poke_interval=0.1
    )
    with pytest.raises(MetaStudioJobFailedError, match=outcome):
        sensor.execute(_context())


@pytest.mark.parametrize("soft", [True, False], ids=["soft_fail", "hard"])
def test_poke_mode_timeout_states_durations_and_skips_only_with_soft_fail(soft, emu):
    job = emu.jobs.create(name="m", waiting_seconds=3600)
    sensor = MetaStudioPictureModelingJobSensor(
        task_id="wait", job_id=job["job_id"], timeout=1, poke_interval=0.3, soft_fail=soft
    )
    started = time.monotonic()
    with pytest.raises(AirflowSkipException if soft else AirflowSensorTimeout) as exc:
        sensor.execute(_context())
    assert time.monotonic() - started >= 1
    if not soft:
        # (the wait may overrun its 1 s by a poke on a loaded machine)
        assert re.match(
            rf"Picture modeling job {job['job_id']} still WAITING after \d+ s \(timeout 1 s;", str(exc.value)
        )
        assert "(timeout 1 s; last seen WAITING 0 s ago)" in str(exc.value)


# -- XComs pushed once ------------------------------------------------------------------------------


@pytest.mark.metastudio_emulator(processing_seconds=0.5)
def test_blocking_create_pushes_each_key_once(emu):
    context = _context()
    result = _create_op().execute(context)
    pushed = _pushed(context)
    assert result["state"] == "SUCCEED"
    assert set(pushed) >= {"job_id", "model_asset_id", "state", "model_cover_url", "metastudio_console_url"}
    assert all(n == 1 for n in pushed.values()), pushed


@pytest.mark.metastudio_emulator(processing_seconds=0.5)
def test_deferred_create_pushes_each_key_once_across_defer_and_resume(emu):
    context = _context()
    op = _create_op(deferrable=True)
    with pytest.raises(TaskDeferred) as first:
        op.execute(context)

    async def created() -> dict:
        return [e.payload async for e in first.value.trigger.run()][0]

    with pytest.raises(TaskDeferred):
        op.execute_created(context, asyncio.run(created()))
    job_id = context["ti"].xcom_push.call_args_list[0].kwargs["value"]
    time.sleep(0.6)
    op.execute_complete(context, {"status": "success", "job_id": job_id, "job": {"job_id": job_id}})
    pushed = _pushed(context)
    assert set(pushed) >= {"job_id", "model_asset_id", "state", "model_cover_url"}
    assert all(n == 1 for n in pushed.values()), pushed


# -- the default name and what counts as a retry ------------------------------------------------------


def test_default_name_is_unique_per_task_run_and_fits_the_service():
    ctx = _context()
    assert default_job_name(ctx) == f"dag.create.{RUN_ID}"
    ctx["ti"].map_index = 3
    assert default_job_name(ctx) == f"dag.create.{RUN_ID}.3"
    ctx["ti"].dag_id = "d" * 250
    long_name = default_job_name(ctx)
    ctx["ti"].map_index = 4
    other = default_job_name(ctx)
    assert len(long_name) == len(other) == MAX_NAME_LENGTH
    assert long_name != other and long_name.startswith("d" * 200)


@pytest.mark.parametrize(
    ("try_number", "max_tries", "retries", "expected"),
    [
        (1, 2, 2, False),  # first try
        (2, 2, 2, True),  # a retry
        (3, 2, 2, True),
        (3, 4, 2, False),  # the first try after a clear (max_tries raised to try_number + retries)
        (4, 4, 2, True),  # a retry after that clear
    ],
)
def test_is_retry(try_number, max_tries, retries, expected):
    ctx = _context(try_number=try_number, retries=retries)
    ctx["ti"].max_tries = max_tries
    assert is_retry(ctx) is expected


def test_is_retry_without_a_try_number_is_false():
    assert is_retry({"ti": mock.Mock(name="ti")}) is False


# -- the retry lookup -------------------------------------------------------------------------------


def _earlier(emu: MetaStudioEmulator, **kwargs: Any) -> dict[str, Any]:
    return emu.jobs.create(name=f"dag.create.{RUN_ID}", style_id=STYLE_ID, **kwargs)


@pytest.mark.parametrize("state", ["WAITING", "PROCESSING", "SUCCEED", "PARTIAL_SUCCEED"])
def test_retry_adopts_the_earlier_tries_job(state, emu):
    kwargs: dict[str, Any] = {"waiting_seconds": 3600} if state == "WAITING" else {}
    if state != "WAITING":
        kwargs = {"outcome": state, "processing_seconds": 3600 if state == "PROCESSING" else 0}
        if state == "PROCESSING":
            kwargs["outcome"] = "SUCCEED"
    job = _earlier(emu, **kwargs)
    context = _context(try_number=2)
    result = _create_op(wait_for_completion=False).execute(context)
    assert result == job["job_id"]
    assert emu.recorder.count(call="create_by_url") == 0
    assert emu.recorder.count(call="list") == 1
    assert _pushed(context) == Counter({"job_id": 1, "model_asset_id": 1, "metastudio_console_url": 1})


def test_retry_picks_the_newest_adoptable_job_and_ignores_other_names_and_styles(emu):
    _earlier(emu, outcome="SUCCEED", processing_seconds=0)
    newest = _earlier(emu, waiting_seconds=3600)
    emu.jobs.create(name=f"dag.create.{RUN_ID}", style_id="system_female_001", waiting_seconds=3600)
    emu.jobs.create(name="another-run", style_id=STYLE_ID, waiting_seconds=3600)
    context = _context(try_number=3)
    assert _create_op(wait_for_completion=False).execute(context) == newest["job_id"]


@pytest.mark.metastudio_emulator(processing_seconds=0.3)
def test_retry_adopting_a_succeeded_job_finishes_without_waiting(emu):
    job = _earlier(emu, outcome="SUCCEED", processing_seconds=0)
    context = _context(try_number=2)
    result = _create_op().execute(context)
    assert result["job_id"] == job["job_id"] and result["state"] == "SUCCEED"
    assert emu.recorder.count(call="show") == 0 and emu.recorder.count(call="create_by_url") == 0
    assert all(n == 1 for n in _pushed(context).values())


@pytest.mark.parametrize(
    ("outcome", "op_kwargs"),
    [("FAILED", {}), ("CANCELED", {}), ("PARTIAL_SUCCEED", {"accept_partial_success": False})],
)
def test_retry_creates_anew_when_the_earlier_job_did_not_succeed(outcome, op_kwargs, emu):
    old = _earlier(emu, outcome=outcome, processing_seconds=0)
    result = _create_op(wait_for_completion=False, **op_kwargs).execute(_context(try_number=2))
    assert result != old["job_id"]
    assert emu.recorder.count(call="create_by_url", status=200) == 1


def test_retry_ignores_jobs_from_before_the_run_started(emu):
    _earlier(emu, waiting_seconds=3600)
    later = datetime.now(timezone.utc) + CLOCK_SKEW_MARGIN + timedelta(minutes=1)
    _create_op(wait_for_completion=False).execute(_context(try_number=2, run_start=later))
    assert emu.recorder.count(call="create_by_url", status=200) == 1
    (listed,) = [e for e in emu.recorder.request_log() if e["call"] == "list"]
    expected = (later - CLOCK_SKEW_MARGIN).strftime("%Y-%m-%dT%H%%3A%M%%3A%SZ")
    assert f"create_since={expected}" in listed["path"]


@pytest.mark.parametrize(("try_number", "reuse"), [(1, True), (2, False)], ids=["first-try", "reuse-off"])
def test_no_lookup_on_a_first_try_or_when_reuse_is_off(try_number, reuse, emu):
    old = _earlier(emu, waiting_seconds=3600)
    op = _create_op(wait_for_completion=False, reuse_earlier_job=reuse)
    assert op.execute(_context(try_number=try_number)) != old["job_id"]
    assert emu.recorder.count(call="list") == 0 and emu.recorder.count(call="create_by_url", status=200) == 1


def test_a_given_name_is_used_for_create_and_lookup(emu):
    old = emu.jobs.create(name="my-model-run-7", style_id=STYLE_ID, waiting_seconds=3600)
    assert (
        _create_op(name="my-model-run-7", wait_for_completion=False).execute(_context(try_number=2))
        == (old["job_id"])
    )
