"""The console extra link: the URL it builds, what tasks push for it, and how it reads XCom back."""

from __future__ import annotations

from unittest import mock

import pytest
from testsupport.tasks import ASSET_ID, context, pushed

from airflow_provider_metastudio.links import picture_modeling as links
from airflow_provider_metastudio.links.picture_modeling import (
    XCOM_CONSOLE_URL_KEY,
    MetaStudioPictureModelingJobLink,
    console_url,
    push_console_url,
)
from airflow_provider_metastudio.operators.picture_modeling import (
    MetaStudioCreatePictureModelingJobOperator,
    MetaStudioGetPictureModelingJobOperator,
)
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor


def test_console_url_opens_the_model_asset_in_its_region():
    assert console_url("cn-east-3", ASSET_ID) == (
        "https://console.huaweicloud.com/metastudio/?region=cn-east-3"
        f"#/aigc/digitalModel/detail?assetId={ASSET_ID}"
    )


def test_console_url_quotes_what_it_embeds():
    # The asset id comes from the service: it must not add a parameter or a fragment of its own.
    url = console_url("cn-north-4", "a&b#c/d")
    assert url.endswith("assetId=a%26b%23c%2Fd")
    assert url.count("#") == 1


def test_push_console_url_pushes_under_the_links_key():
    ctx = context()
    assert push_console_url(ctx, "cn-north-4", ASSET_ID) is True
    assert pushed(ctx) == {XCOM_CONSOLE_URL_KEY: console_url("cn-north-4", ASSET_ID)}


@pytest.mark.parametrize("asset_id", [None, ""], ids=["none", "empty"])
def test_nothing_is_pushed_while_the_model_asset_is_unknown(asset_id):
    ctx = context()
    assert push_console_url(ctx, "cn-north-4", asset_id) is False
    assert pushed(ctx) == {}


def test_link_reads_the_pushed_url_through_the_ti_key():
    ti_key = mock.Mock(name="ti_key")
    url = console_url("cn-north-4", ASSET_ID)
    with mock.patch.object(links.XCom, "get_value", return_value=url) as get_value:
        assert MetaStudioPictureModelingJobLink().get_link(mock.Mock(), ti_key=ti_key) == url
    get_value.assert_called_once_with(key=XCOM_CONSOLE_URL_KEY, ti_key=ti_key)


def test_link_is_empty_before_anything_was_pushed():
    with mock.patch.object(links.XCom, "get_value", return_value=None):
        assert MetaStudioPictureModelingJobLink().get_link(mock.Mock(), ti_key=mock.Mock()) == ""


@pytest.mark.parametrize(
    "task",
    [
        MetaStudioPictureModelingJobSensor,
        MetaStudioGetPictureModelingJobOperator,
        MetaStudioCreatePictureModelingJobOperator,
    ],
)
def test_job_tasks_offer_the_console_link(task):
    assert [type(link) for link in task.operator_extra_links] == [MetaStudioPictureModelingJobLink]
    assert MetaStudioPictureModelingJobLink.name == "MetaStudio Model"
