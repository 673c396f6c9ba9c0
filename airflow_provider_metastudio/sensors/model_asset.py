"""Sensor that waits until a picture-modeling job's model asset is usable (``ACTIVED``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow_provider_metastudio._compat import AirflowSensorTimeout, BaseSensorOperator, conf
from airflow_provider_metastudio.asset_events import emit_outlet_events
from airflow_provider_metastudio.assets import DigitalAsset
from airflow_provider_metastudio.exceptions import MetaStudioAssetFailedError, MetaStudioError
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.sensors.picture_modeling import resume_soft_fail_on_timeout_only
from airflow_provider_metastudio.triggers.model_asset import MetaStudioModelAssetTrigger
from airflow_provider_metastudio.triggers.picture_modeling import defer_timeout
from airflow_provider_metastudio.validation import validate_wait_settings

try:
    from airflow.sdk import PokeReturnValue
except ImportError:  # Airflow 2.11
    from airflow.sensors.base import PokeReturnValue  # type: ignore[no-redef]


class MetaStudioModelAssetSensor(BaseSensorOperator):
    """Wait until a model asset (a job's ``model_asset_id``) is ``ACTIVED``, its files usable.

    ``FAILED``, ``BLOCK`` and ``DELETED`` fail the task at once (naming the state and the service's
    reason); any other state, also one the contract does not list, keeps waiting. How long after
    the job's SUCCEED an asset becomes ACTIVED is not stated by the service. With ``soft_fail``
    only a timeout skips the task, in every mode, as for the job sensor.

    The return value (XCom) is the asset without its download URLs (24-hour bearer credentials):
    download with ``MetaStudioDownloadModelAssetOperator`` (``operators.model_asset``).
    Outlet assets (Airflow 3) / datasets (2.11) get an event whose ``extra`` has ``model_asset_id``.

    :param asset_id: the asset (templated), e.g. ``"{{ ti.xcom_pull('create', key='model_asset_id') }}"``.
    :param job_id: optional job id, only carried into the outlet event's ``extra`` (templated).
    :param metastudio_conn_id: the ``metastudio`` connection.
    :param deferrable: wait in the triggerer (one read per ``poke_interval``) instead of a worker slot.
    """

    template_fields: Sequence[str] = ("asset_id", "job_id")
    ui_color = "#c7000b"

    def __init__(
        self,
        *,
        asset_id: str,
        job_id: str | None = None,
        metastudio_conn_id: str = MetaStudioHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.asset_id = asset_id
        self.job_id = job_id
        self.metastudio_conn_id = metastudio_conn_id
        self.deferrable = deferrable
        validate_wait_settings(
            self.poke_interval, self.timeout, poll_field="poke_interval", allow_no_timeout=False
        )
        self._last_state: str | None = None

    @cached_property
    def hook(self) -> MetaStudioHook:
        return MetaStudioHook(self.metastudio_conn_id)

    def poke(self, context: Any) -> PokeReturnValue | bool:
        asset = self.hook.get_asset(self.asset_id)  # the hook validates the id first
        if asset.is_usable:
            return PokeReturnValue(is_done=True, xcom_value=self._done(context, asset.to_dict()))
        if asset.is_failure:
            raise MetaStudioAssetFailedError(asset.asset_id, asset.state, _detail(asset))
        if asset.state != self._last_state:
            self.log.info("Model asset %s is %s; waiting for ACTIVED", asset.asset_id, asset.state)
            self._last_state = asset.state
        return False

    def _done(self, context: Any, asset: dict[str, Any]) -> dict[str, Any]:
        self.log.info("Model asset %s is ACTIVED with %d files", asset["asset_id"], len(asset["files"]))
        emit_outlet_events(self, context, model_asset_id=asset["asset_id"], job_id=self.job_id)
        return asset

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        started = time.time()
        result = self.poke(context)  # an asset already usable costs no deferral
        if isinstance(result, PokeReturnValue) and result.is_done:
            return result.xcom_value
        self.defer(
            trigger=MetaStudioModelAssetTrigger(
                asset_id=self.asset_id,  # the trigger validates it, before deferring
                metastudio_conn_id=self.metastudio_conn_id,
                poll_interval=self.poke_interval,
                end_time=started + self.timeout,
            ),
            method_name="execute_complete",
            timeout=defer_timeout(self.timeout) or timedelta(seconds=self.timeout),
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        """As the job sensor: with ``soft_fail`` only a timeout skips (Airflow would skip any error)."""
        return resume_soft_fail_on_timeout_only(
            self, next_method, next_kwargs, context, f"Model asset {self.asset_id} still not ACTIVED"
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        event = event or {}
        status = event.get("status")
        if status == "success":
            return self._done(context, event["asset"])
        if status == "failed":
            raise MetaStudioAssetFailedError(event["asset_id"], event["state"], event.get("message"))
        if status == "timeout":
            raise AirflowSensorTimeout(event.get("message") or f"Model asset {self.asset_id} timed out")
        raise MetaStudioError(
            event.get("message") or f"Waiting for model asset {self.asset_id} failed: {event}"
        )


def _detail(asset: DigitalAsset) -> str | None:
    parts = [v for v in (asset.fail_type, asset.block_reason_code, asset.reason) if v]
    return " ".join(parts) or None
