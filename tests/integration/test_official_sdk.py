"""The official Python SDK (``huaweicloudsdkmetastudio``) against the emulator: its signatures are
accepted and it parses every answer the provider relies on.

The emulator is a witness that can be wrong: the provider and the emulator were written from the
same reading of the contract, so this checks the emulator's wire format with the SDK Huawei ships.
The SDK is never a dependency of the provider (it drags in pymongo and costs 0.3-0.6 s to import);
one line of the test matrix installs it (``scripts/run-tests.sh``, ``SDK_VERSIONS``) and sets
``METASTUDIO_EXPECT_SDK=1``, where a missing SDK fails these tests instead of skipping them.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_metastudio.testing import MetaStudioEmulator

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("huaweicloudsdkmetastudio") is None
        and not os.environ.get("METASTUDIO_EXPECT_SDK"),
        reason="huaweicloudsdkmetastudio is not installed (never a dependency): '.[sdk-conformance]'",
    ),
    pytest.mark.metastudio_emulator(quotas_enabled=False),
]


def client(emu: MetaStudioEmulator) -> Any:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkmetastudio.v1 import MetaStudioClient

    config = HttpConfig.get_default_config()
    config.ignore_ssl_verification = True
    config.retry_times = 0
    return (
        MetaStudioClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(emu.ak, emu.sk, emu.project_id))
        .with_endpoints([emu.base_url])
        .build()
    )


def test_create_by_url_show_and_list_jobs(metastudio_emulator: MetaStudioEmulator) -> None:
    from huaweicloudsdkmetastudio.v1 import (
        CreatePictureModelingByUrlJobRequest,
        ListPictureModelingJobsRequest,
        PictureModelingByUrlReq,
        ShowPictureModelingJobRequest,
    )

    emu, sdk = metastudio_emulator, client(metastudio_emulator)
    body = PictureModelingByUrlReq(
        picture_url="https://photos.example.com/face.png", style_id="system_female_001", name="sdk_job"
    )
    created = sdk.create_picture_modeling_by_url_job(CreatePictureModelingByUrlJobRequest(body=body))
    assert created.job_id and created.model_asset_id and created.x_request_id
    assert emu.recorder.count(call="create_by_url", status=200) == 1  # the SDK's signature was accepted

    shown = sdk.show_picture_modeling_job(ShowPictureModelingJobRequest(job_id=created.job_id))
    assert (shown.job_id, shown.name, shown.style_id) == (created.job_id, "sdk_job", "system_female_001")
    assert shown.state in ("WAITING", "PROCESSING") and shown.model_asset_id == created.model_asset_id

    emu.clock.advance(3600)
    shown = sdk.show_picture_modeling_job(ShowPictureModelingJobRequest(job_id=created.job_id))
    assert shown.state == "SUCCEED" and shown.end_time and shown.model_cover_url
    assert parse_qs(urlsplit(shown.model_cover_url).query)["Signature"]

    listed = sdk.list_picture_modeling_jobs(
        ListPictureModelingJobsRequest(state="SUCCEED", sort_key="update_time", sort_dir="desc", limit=10)
    )
    assert listed.count == 1
    (item,) = listed.picture_modeling_jobs
    assert (item.job_id, item.state, item.model_asset_id) == (
        created.job_id,
        "SUCCEED",
        created.model_asset_id,
    )


def test_failed_and_unknown_jobs_read_as_the_sdk_expects(
    metastudio_emulator: MetaStudioEmulator,
) -> None:
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkmetastudio.v1 import ShowPictureModelingJobRequest

    emu, sdk = metastudio_emulator, client(metastudio_emulator)
    job = emu.jobs.create(
        "sdk_failing", outcome="FAILED", error_code="MSS.00000001", error_msg="no face found"
    )
    emu.clock.advance(3600)
    shown = sdk.show_picture_modeling_job(ShowPictureModelingJobRequest(job_id=job["job_id"]))
    assert shown.state == "FAILED"
    assert (shown.error_info.error_code, shown.error_info.error_msg) == ("MSS.00000001", "no face found")

    with pytest.raises(ClientRequestException) as refused:
        sdk.show_picture_modeling_job(ShowPictureModelingJobRequest(job_id="0" * 32))
    assert refused.value.status_code == 404
    assert refused.value.error_code and refused.value.request_id


def test_show_and_list_assets(metastudio_emulator: MetaStudioEmulator) -> None:
    from huaweicloudsdkmetastudio.v1 import ListAssetsRequest, ShowAssetRequest

    emu, sdk = metastudio_emulator, client(metastudio_emulator)
    asset_id = emu.jobs.create("sdk_model", "system_female_001")["model_asset_id"]
    emu.clock.advance(3600)  # the job succeeded and its asset is ACTIVED
    shown = sdk.show_asset(ShowAssetRequest(asset_id=asset_id))
    assert (shown.asset_id, shown.asset_state, shown.asset_type) == (asset_id, "ACTIVED", "HUMAN_MODEL")
    main = next(f for f in shown.files if f.asset_file_category == "MAIN")
    assert len(main.file_md5) == 24 and main.file_size == len(emu.assets.file_bytes(asset_id))
    assert parse_qs(urlsplit(main.download_url).query)["Expires"]
    listed = sdk.list_assets(ListAssetsRequest(asset_state="ACTIVED", limit=10, offset=0))
    assert listed.count == 1 and listed.assets[0].asset_id == asset_id
    assert json.loads(json.dumps(listed.to_dict(), default=str))["assets"][0]["files"]
