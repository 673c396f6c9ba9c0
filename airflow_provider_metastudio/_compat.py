"""Airflow 2.11 / 3.0 / 3.1+ differences that several modules need, resolved once.

Airflow 3 moved the authoring API into ``airflow.sdk`` and deprecates the old paths; 2.11 has only
the old ones. Here: the base classes, exceptions, ``conf`` and secret masking (each from the newest
path the running Airflow has, so no deprecation warning), ``AIRFLOW_V_3``, and helpers whose
implementation differs by version (:func:`amask_secret`, :func:`aget_connection`,
:func:`asset_classes`, :func:`object_storage_path`). A switch needed by one module only stays beside
its use: ``PokeReturnValue`` (sensors), ``XCom`` (links) and the optional OpenLineage classes
(``lineage``). ``BaseTrigger``/``TriggerEvent`` have one path in every
supported version and are imported directly.
"""

from __future__ import annotations

from typing import Any

from airflow import __version__ as AIRFLOW_VERSION

try:  # Airflow >= 3.1
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 2.11, 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

try:  # Airflow >= 3.0
    from airflow.sdk import BaseOperator, BaseOperatorLink, BaseSensorOperator
except ImportError:  # Airflow 2.11
    from airflow.models import BaseOperator  # type: ignore[no-redef,assignment]
    from airflow.models.baseoperatorlink import BaseOperatorLink  # type: ignore[no-redef,assignment]
    from airflow.sensors.base import BaseSensorOperator  # type: ignore[no-redef,assignment]

try:  # Airflow >= 3.1
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
except ImportError:  # Airflow 2.11, 3.0
    from airflow.exceptions import (  # type: ignore[no-redef,assignment]
        AirflowException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )

try:  # Airflow >= 3.0
    from airflow.sdk.log import mask_secret
except ImportError:  # Airflow 2.11
    from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef,attr-defined]


async def amask_secret(secret: str) -> None:
    """Register a secret from async code (triggers) without a blocking call to the supervisor.

    ``mask_secret`` tells the task supervisor over a synchronous channel, which must not be used
    from the triggerer's event loop; Airflow >= 3.1 has an async twin, older 3.x lines get the
    local masker only (trigger logs are redacted in the process that emits them).
    """
    try:
        from airflow.sdk.log import amask_secret as _amask
    except ImportError:
        if not AIRFLOW_V_3:  # Airflow 2 masks in-process only
            mask_secret(secret)
            return
        from airflow.sdk.execution_time.secrets_masker import _secrets_masker

        _secrets_masker().add_mask(secret)
        return
    await _amask(secret)


try:  # Airflow >= 3.1
    from airflow.sdk.configuration import conf
except ImportError:  # Airflow 2.11, 3.0
    from airflow.configuration import conf  # type: ignore[no-redef,attr-defined]

AIRFLOW_V_3 = int(AIRFLOW_VERSION.split(".")[0]) >= 3


async def aget_connection(conn_id: str) -> Any:
    """Look a connection up without blocking the triggerer's event loop.

    Airflow >= 3.1 reads it through the triggerer's supervisor (``aget_connection``); older versions
    run the sync lookup in a worker thread.
    """
    if hasattr(BaseHook, "aget_connection"):
        return await BaseHook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(BaseHook.get_connection)(conn_id)


def asset_classes() -> tuple[type, ...]:
    """The outlet class whose events the provider fills: ``Asset`` on Airflow 3, ``Dataset`` on 2.11.

    ``airflow.datasets.Dataset`` is only imported where ``Asset`` is missing: on Airflow 3.0 and 3.1
    it is a deprecated alias of ``Asset`` (the same class), and importing it warns.
    """
    try:
        from airflow.sdk import Asset
    except ImportError:  # Airflow 2.11
        from airflow.datasets import Dataset

        return (Dataset,)
    return (Asset,)


def object_storage_path(uri: Any) -> Any:
    """An ``ObjectStoragePath`` for a URI (``file://``, ``s3://``, ...), whichever Airflow has it."""
    try:
        from airflow.sdk import ObjectStoragePath
    except ImportError:  # Airflow 2.11
        from airflow.io.path import ObjectStoragePath  # type: ignore[no-redef]
    return uri if isinstance(uri, ObjectStoragePath) else ObjectStoragePath(uri)


__all__ = [
    "AIRFLOW_V_3",
    "AirflowException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "TaskDeferred",
    "aget_connection",
    "amask_secret",
    "asset_classes",
    "conf",
    "mask_secret",
    "object_storage_path",
]
