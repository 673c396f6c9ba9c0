"""Sensor that waits for a picture-modeling job to finish (poke, reschedule or deferrable)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow_provider_metastudio._compat import AIRFLOW_V_3, AirflowSensorTimeout, BaseSensorOperator, conf
from airflow_provider_metastudio.exceptions import MetaStudioJobFailedError
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.progress import JobProgress
from airflow_provider_metastudio.triggers.picture_modeling import (
    MetaStudioPictureModelingJobTrigger,
    resolve_event,
)
from airflow_provider_metastudio.validation import validate_job_id

try:
    from airflow.sdk import PokeReturnValue
except ImportError:  # Airflow 2.11
    from airflow.sensors.base import PokeReturnValue  # type: ignore[no-redef]


class MetaStudioPictureModelingJobSensor(BaseSensorOperator):
    """Wait until a MetaStudio picture-modeling job reaches a terminal state.

    Done at SUCCEED (and PARTIAL_SUCCEED when ``accept_partial_success``); FAILED and CANCELED fail
    the task with the service's error code and message. An unknown state keeps waiting. The job
    (``model_asset_id``, ``model_cover_url``, state, times) is the sensor's return value in XCom.

    :param job_id: the job to watch (templated).
    :param metastudio_conn_id: the ``metastudio`` connection.
    :param accept_partial_success: PARTIAL_SUCCEED means the model exists but the cover may be missing.
    :param deferrable: wait in the triggerer instead of a worker slot.
    """

    template_fields: Sequence[str] = ("job_id",)
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

    @cached_property
    def hook(self) -> MetaStudioHook:
        return MetaStudioHook(self.metastudio_conn_id)

    @cached_property
    def _progress(self) -> JobProgress:
        return JobProgress(self.job_id, self.log)

    def poke(self, context: Any) -> PokeReturnValue | bool:
        job, request_id = self.hook.get_picture_modeling_job_with_request_id(validate_job_id(self.job_id))
        # In reschedule mode every poke is a new task run that remembers nothing: only the first
        # one logs the job's state at INFO (Airflow 3 counts reschedules; Airflow 2 does not say, so
        # there its running states stay at DEBUG), else each poke would log a "first look".
        rescheduled = self.reschedule and context.get("task_reschedule_count", 0 if AIRFLOW_V_3 else 1) > 0
        if rescheduled and self._progress.last_state is None and not job.is_terminal:
            self._progress.last_state = job.state
        self._progress.observe(job, request_id)
        if job.is_success(self.accept_partial_success):
            return PokeReturnValue(is_done=True, xcom_value=job.to_dict())
        if job.is_terminal:
            raise MetaStudioJobFailedError(job.job_id, job.state, job.error_code, job.error_msg)
        return False

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # One poke first: a job that is already done costs no deferral.
        result = self.poke(context)
        if isinstance(result, PokeReturnValue) and result.is_done:
            return result.xcom_value
        self.defer(
            trigger=MetaStudioPictureModelingJobTrigger(
                job_id=self.job_id,
                end_time=time.time() + self.timeout,
                metastudio_conn_id=self.metastudio_conn_id,
                poll_interval=self.poke_interval,
                accept_partial_success=self.accept_partial_success,
                last_state=self._progress.last_state,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        # The event's cover URL is redacted: read the finished job once more for a usable one.
        job_id = resolve_event(event, AirflowSensorTimeout)["job_id"]
        job, request_id = self.hook.get_picture_modeling_job_with_request_id(job_id)
        self.log.info(
            "Picture modeling job %s ended %s: model_asset_id=%s (X-Request-Id: %s)",
            job.job_id,
            job.state,
            job.model_asset_id,
            request_id,
        )
        return job.to_dict()
