"""Sensor that waits for a picture-modeling job to finish (poke, reschedule or deferrable)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow_provider_metastudio._compat import (
    AIRFLOW_V_3,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    conf,
)
from airflow_provider_metastudio.exceptions import MetaStudioJobFailedError
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.links.picture_modeling import (
    MetaStudioPictureModelingJobLink,
    push_console_url,
)
from airflow_provider_metastudio.progress import JobProgress, wait_timeout_message
from airflow_provider_metastudio.triggers.picture_modeling import (
    MetaStudioPictureModelingJobTrigger,
    defer_timeout,
    is_stale_event,
    resolve_event,
    try_number_of,
)
from airflow_provider_metastudio.validation import validate_wait_settings

try:
    from airflow.sdk import PokeReturnValue
except ImportError:  # Airflow 2.11
    from airflow.sensors.base import PokeReturnValue  # type: ignore[no-redef]


class MetaStudioPictureModelingJobSensor(BaseSensorOperator):
    """Wait until a MetaStudio picture-modeling job reaches a terminal state.

    Done at SUCCEED (and PARTIAL_SUCCEED when ``accept_partial_success``); FAILED and CANCELED fail
    the task with the service's error code and message. An unknown state keeps waiting. The job
    (``model_asset_id``, ``model_cover_url``, state, times) is the sensor's return value in XCom.
    The job's console page is pushed as ``metastudio_console_url`` (the extra link) once a poke knows
    its ``model_asset_id``.

    ``poke_interval`` and ``timeout`` must be > 0. With ``soft_fail=True`` only a timeout skips the
    task; a FAILED or CANCELED job and any error fail it, in poke, reschedule and deferrable mode.

    :param job_id: the job to watch (templated).
    :param metastudio_conn_id: the ``metastudio`` connection (templated).
    :param accept_partial_success: PARTIAL_SUCCEED means the model exists but the cover may be missing.
    :param deferrable: wait in the triggerer instead of a worker slot.
    """

    template_fields: Sequence[str] = ("job_id", "metastudio_conn_id")
    operator_extra_links = (MetaStudioPictureModelingJobLink(),)
    ui_color = "#c7000b"

    def __init__(
        self,
        *,
        job_id: str,
        metastudio_conn_id: str = MetaStudioHook.default_conn_name,
        accept_partial_success: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.metastudio_conn_id = metastudio_conn_id
        self.accept_partial_success = accept_partial_success
        self.deferrable = deferrable
        # Airflow refuses negative and non-numeric values; 0 would poll a metered API in a loop.
        validate_wait_settings(
            self.poke_interval, self.timeout, poll_field="poke_interval", allow_no_timeout=False
        )
        self._wait_started: float | None = None  # time.time() of the first poke of this try
        self._last_seen: float | None = None  # time.time() of the last poke's answer
        self._link_pushed = False  # this task run pushed the console URL (once per poke-mode try)

    @cached_property
    def hook(self) -> MetaStudioHook:
        return MetaStudioHook(self.metastudio_conn_id)

    @cached_property
    def _progress(self) -> JobProgress:
        return JobProgress(self.job_id, self.log)

    def poke(self, context: Any) -> PokeReturnValue | bool:
        job = self.hook.get_picture_modeling_job(self.job_id)  # the hook validates the id first
        self._last_seen = time.time()
        # In reschedule mode every poke is a new task run that remembers nothing: only the first
        # one logs the job's state at INFO (Airflow 3 counts reschedules; Airflow 2 does not say, so
        # there its running states stay at DEBUG), else each poke would log a "first look".
        rescheduled = self.reschedule and context.get("task_reschedule_count", 0 if AIRFLOW_V_3 else 1) > 0
        if rescheduled and self._progress.last_state is None and not job.is_terminal:
            self._progress.last_state = job.state
        self._progress.observe(job)
        # Each reschedule-mode poke and each resume is a fresh instance, so each pushes it again
        # (Airflow may clear a task's XComs when a rescheduled try starts).
        if not self._link_pushed:
            self._link_pushed = push_console_url(context, self.hook.config.region, job.model_asset_id)
        if job.is_success(self.accept_partial_success):
            return PokeReturnValue(is_done=True, xcom_value=job.to_dict())
        if job.is_terminal:
            raise MetaStudioJobFailedError(job.job_id, job.state, job.error_code, job.error_msg)
        if not self.reschedule and self._wait_started is not None:
            # Poke mode: time out here, right after a real read, with the durations in the message
            # (Airflow's own check would say only "Sensor has timed out"). Airflow still applies
            # soft_fail to it. Reschedule mode measures from the first try in Airflow's database.
            elapsed = self._last_seen - self._wait_started
            if elapsed >= self.timeout:
                raise AirflowSensorTimeout(
                    wait_timeout_message(
                        self.job_id, job.state, elapsed, self.timeout, time.time() - self._last_seen
                    )
                )
        return False

    def execute(self, context: Any) -> Any:
        validate_wait_settings(
            self.poke_interval, self.timeout, poll_field="poke_interval", allow_no_timeout=False
        )
        self._wait_started = time.time()
        if not self.deferrable:
            return super().execute(context)
        # One poke first: a job that is already done costs no deferral.
        result = self.poke(context)
        if isinstance(result, PokeReturnValue) and result.is_done:
            return result.xcom_value
        self.defer(
            trigger=MetaStudioPictureModelingJobTrigger(
                job_id=self.job_id,
                end_time=self._wait_started + self.timeout,
                metastudio_conn_id=self.metastudio_conn_id,
                poll_interval=self.poke_interval,
                accept_partial_success=self.accept_partial_success,
                last_state=self._progress.last_state,
                wait_started=self._wait_started,
                timeout=self.timeout,
                last_seen=self._last_seen,
                try_number=try_number_of(context),
            ),
            method_name="execute_complete",
            # The resumed task is a fresh instance: tell it whether this try pushed the console URL.
            kwargs={"console_url_pushed": self._link_pushed},
            timeout=defer_timeout(self.timeout),
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        """Resume after the trigger; with ``soft_fail`` only a timeout skips.

        Every Airflow line's ``BaseSensorOperator.resume_execution`` turns *any* AirflowException into
        a skip under ``soft_fail`` (a FAILED job, an API error, a crashed trigger), so this bypasses it
        and applies ``soft_fail`` (and ``never_fail``) itself.
        """
        return resume_soft_fail_on_timeout_only(
            self, next_method, next_kwargs, context, f"Picture modeling job {self.job_id} still not finished"
        )

    def execute_complete(
        self, context: Any, event: dict[str, Any] | None = None, console_url_pushed: bool = False
    ) -> Any:
        if is_stale_event(event, context):
            self.log.warning("Airflow resumed this try with an earlier try's event; starting the try over")
            return self.execute(context)
        # The event carries no cover URL (a signed credential): read the finished job for a fresh one.
        job_id = resolve_event(event, AirflowSensorTimeout)
        job = self.hook.get_picture_modeling_job(job_id)
        if not console_url_pushed:  # each XCom key once per try
            push_console_url(context, self.hook.config.region, job.model_asset_id)
        self.log.info(
            "Picture modeling job %s ended %s: model_asset_id=%s (X-Request-Id: %s)",
            job.job_id,
            job.state,
            job.model_asset_id,
            job.request_id,
        )
        return job.to_dict()


def resume_soft_fail_on_timeout_only(
    sensor: BaseSensorOperator,
    next_method: str,
    next_kwargs: dict[str, Any] | None,
    context: Any,
    still_waiting: str,
) -> Any:
    """Resume a deferred sensor applying ``soft_fail`` to a timeout only (and ``never_fail``).

    :param still_waiting: how a deferral timeout describes the wait, e.g. "Model asset X still not ready".
    """
    try:
        return super(BaseSensorOperator, sensor).resume_execution(next_method, next_kwargs, context)
    except AirflowSkipException:
        raise
    except Exception as e:
        timed_out = _is_timeout(e)
        if timed_out and sensor.soft_fail:
            raise AirflowSkipException(f"Skipping due to soft_fail: {e}") from e
        if getattr(sensor, "never_fail", False):
            raise AirflowSkipException(f"Skipping due to never_fail: {e}") from e
        if timed_out and not isinstance(e, AirflowSensorTimeout):
            # Airflow's deferral timeout (DEFER_TIMEOUT_MARGIN after the trigger's own deadline):
            # the trigger never reported, so this says what is known.
            raise AirflowSensorTimeout(
                f"{still_waiting} after the timeout of {sensor.timeout:.0f} s; the trigger did not "
                f"report ({e})"
            ) from e
        raise


def _is_timeout(exc: BaseException) -> bool:
    """A timeout of the wait, as each Airflow line reports it on resume."""
    if isinstance(exc, AirflowSensorTimeout):  # the trigger's timeout event (resolve_event)
        return True
    # Airflow 3: TaskDeferralTimeout; Airflow 2.11 has no such class and fails the deferred task with
    # next_method="__fail__" and next_kwargs={"error": "Trigger/execution timeout"} instead.
    if type(exc).__name__ == "TaskDeferralTimeout":
        return True
    return type(exc).__name__ == "TaskDeferralError" and "timeout" in str(exc).lower()
