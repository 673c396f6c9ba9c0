"""Extra link from a task to its picture-modeling job in the MetaStudio console."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow_provider_metastudio._compat import BaseOperatorLink

try:  # Airflow >= 3.0
    from airflow.sdk.execution_time.xcom import XCom
except ImportError:  # Airflow 2.11
    from airflow.models.xcom import XCom  # type: ignore[no-redef]

XCOM_CONSOLE_URL_KEY = "metastudio_console_url"
CONSOLE_URL = (
    "https://console.huaweicloud.com/metastudio/?region={region}#/aigc/digitalModel/detail?assetId={asset_id}"
)


def console_url(region: str, model_asset_id: str) -> str:
    """The MetaStudio console page of a model asset (a job's result lives there)."""
    return CONSOLE_URL.format(region=quote(region, safe=""), asset_id=quote(model_asset_id, safe=""))


def push_console_url(context: Any, region: str, model_asset_id: str | None) -> bool:
    """Push what :class:`MetaStudioPictureModelingJobLink` reads; False while the asset is unknown."""
    if not model_asset_id:
        return False
    context["ti"].xcom_push(key=XCOM_CONSOLE_URL_KEY, value=console_url(region, model_asset_id))
    return True


class MetaStudioPictureModelingJobLink(BaseOperatorLink):
    """Opens the job's model asset in the MetaStudio console; the URL is read from XCom."""

    name = "MetaStudio Model"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return XCom.get_value(key=XCOM_CONSOLE_URL_KEY, ti_key=ti_key) or ""
