"""Trigger that waits in the triggerer until a model asset is usable (``ACTIVED``) or cannot become so.

One asset-details call per poll: unlike jobs, assets have no shared poller (the asset quota is not
stated, and a model asset is waited for once, right after its job).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_metastudio.exceptions import (
    MetaStudioConnectionError,
    MetaStudioError,
    MetaStudioInvalidResponseError,
    MetaStudioServerError,
    MetaStudioThrottledError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.validation import validate_asset_id

# Failures the hook's retries did not cure but that say nothing about the asset: keep waiting.
TRANSIENT_ERRORS = (
    MetaStudioServerError,
    MetaStudioConnectionError,
    MetaStudioThrottledError,
    MetaStudioInvalidResponseError,
)


class MetaStudioModelAssetTrigger(BaseTrigger):
    """Poll an asset until it is ``ACTIVED`` (``success``), ``FAILED``/``BLOCK``/``DELETED``
    (``failed``), past ``end_time`` (``timeout``, after one last read at the deadline) or an error
    that is not transient (``error``: 4xx, auth). Events never carry download URLs.

    :param asset_id: the asset (a job's ``model_asset_id``).
    :param metastudio_conn_id: the ``metastudio`` connection.
    :param poll_interval: seconds between reads.
    :param end_time: absolute deadline, ``time.time()`` seconds; None waits forever.
    """

    def __init__(
        self,
        asset_id: str,
        metastudio_conn_id: str = MetaStudioHook.default_conn_name,
        poll_interval: float = 30.0,
        end_time: float | None = None,
    ) -> None:
        super().__init__()
        self.asset_id = validate_asset_id(asset_id)
        self.metastudio_conn_id = metastudio_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "asset_id": self.asset_id,
                "metastudio_conn_id": self.metastudio_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = MetaStudioHook(self.metastudio_conn_id)
        last_state: str | None = None
        try:
            while True:
                try:
                    asset = await hook.aget_asset(self.asset_id)
                except TRANSIENT_ERRORS as e:
                    self.log.warning("Model asset %s: %s; still waiting", self.asset_id, e)
                except MetaStudioError as e:
                    # to_dict()'s "status" is the HTTP status: the event's own status comes last.
                    error = e.to_dict()
                    http_status = error.pop("status")
                    yield TriggerEvent(
                        {**error, "http_status": http_status, "status": "error", "asset_id": self.asset_id}
                    )
                    return
                else:
                    if asset.is_usable:
                        yield TriggerEvent(
                            {"status": "success", "asset_id": self.asset_id, "asset": asset.to_dict()}
                        )
                        return
                    if asset.is_failure:
                        yield TriggerEvent(
                            {
                                "status": "failed",
                                "asset_id": self.asset_id,
                                "state": asset.state,
                                "message": asset.describe(),
                            }
                        )
                        return
                    if asset.state != last_state:
                        self.log.info("Model asset %s is %s", self.asset_id, asset.state)
                        last_state = asset.state
                left = None if self.end_time is None else self.end_time - time.time()
                if left is not None and left <= 0:  # this was the read at (or after) the deadline
                    yield TriggerEvent(
                        {
                            "status": "timeout",
                            "asset_id": self.asset_id,
                            "state": last_state,
                            "message": f"Model asset {self.asset_id} still {last_state or 'unread'} "
                            "at the timeout",
                        }
                    )
                    return
                await asyncio.sleep(self.poll_interval if left is None else min(self.poll_interval, left))
        finally:
            await hook.aclose()
