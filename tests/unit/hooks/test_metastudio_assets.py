"""MetaStudioHook's asset-library calls (issue #14) over the sync transport, with requests-mock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_metastudio import ratelimit
from airflow_provider_metastudio.api import ApiResponse
from airflow_provider_metastudio.assets import AssetFile, AssetState, DigitalAsset, signed_url_expiry
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioChecksumError,
    MetaStudioInvalidResponseError,
    MetaStudioNotFoundError,
    MetaStudioValidationError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook

PROJECT_ID = "0d697589d98091f12f92c0073501cd79"
ENDPOINT = "https://metastudio.example.test"
ASSET_ID = "4b1d0f5e7a9c4c2e8f3a6b5d7c9e1f20"
SHOW_URL = f"{ENDPOINT}/v1/{PROJECT_ID}/digital-assets/{ASSET_ID}"
LIST_URL = f"{ENDPOINT}/v1/{PROJECT_ID}/digital-assets"
SIGNATURE = "s3cr3tSIGNATUREvalue%2Bxyz%3D"
GLB = b"glTF" + b"\x02\x00\x00\x00" + b"\x00" * 40
EXPIRES = 1795000000
MAIN_URL = (
    f"https://obs.example.test/assets/{ASSET_ID}/model.glb?AccessKeyId=AK&Expires={EXPIRES}"
    f"&Signature={SIGNATURE}"
)
HOOK_LOGGER = "airflow_provider_metastudio.hooks.metastudio"
PROVIDER = "airflow_provider_metastudio"


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def file_json(category="MAIN", data=GLB, url=MAIN_URL, name="model.glb", **fields):
    return {
        "file_id": f"file-{category.lower()}",
        "file_name": name,
        "file_md5": b64md5(data),
        "file_size": len(data),
        "file_type": name.rsplit(".", 1)[-1],
        "asset_file_category": category,
        "download_url": url,
        "state": "CREATED",
        **fields,
    }


def asset_json(state="ACTIVED", asset_id=ASSET_ID, files=None, **fields):
    return {
        "project_id": PROJECT_ID,
        "asset_id": asset_id,
        "asset_name": "model_1",
        "asset_type": "HUMAN_MODEL",
        "asset_state": state,
        "create_time": "2026-11-24T09:30:15Z",
        "update_time": "2026-11-24T09:31:15Z",
        "tags": ["picture-modeling"],
        "files": [file_json()] if files is None else files,
        **fields,
    }


def make_hook(rate_limits=False):
    config = MetaStudioConnectionConfig.from_parts(
        login="HPUAEXAMPLEAK0000001",
        password="SKsecret-asset-tests",
        extra={"project_id": PROJECT_ID, "rate_limits": rate_limits},
        host=urlsplit(ENDPOINT).hostname,
        schema=urlsplit(ENDPOINT).scheme,
    )
    return MetaStudioHook(config=config, retry_limit=2, retry_delay=0)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    monkeypatch.setattr(ratelimit, "_LIMITERS", {})


def provider_log(caplog) -> str:
    # urllib3/requests-mock log whole URLs at DEBUG (the transport's redaction is another change);
    # this provider's own lines must never carry a signature.
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("airflow_provider"))


def ok(body, request_id="req-1"):
    return {"json": body, "headers": {"X-Request-Id": request_id}}


# -- model ---------------------------------------------------------------------------------------


def test_asset_model_parses_states_files_and_expiry():
    asset = DigitalAsset.from_api(asset_json())
    assert asset.is_usable and asset.known_state is AssetState.ACTIVED and not asset.is_failure
    (main,) = asset.files
    assert (main.category, main.size, main.md5) == ("MAIN", len(GLB), b64md5(GLB))
    assert main.md5_hex == hashlib.md5(GLB).hexdigest()
    assert main.download_url_expires_at == datetime.fromtimestamp(EXPIRES, tz=timezone.utc)
    assert asset.create_time == datetime(2026, 11, 24, 9, 30, 15, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("state", "usable", "failure"),
    [
        ("CREATING", False, False),
        ("UNACTIVED", False, False),
        ("FAILED", False, True),
        ("BLOCK", False, True),
        ("DELETED", False, True),
        ("ARCHIVED_SOMEHOW", False, False),  # unknown: kept visible, never usable
    ],
)
def test_asset_states(state, usable, failure):
    asset = DigitalAsset.from_api(asset_json(state))
    assert (asset.state, asset.is_usable, asset.is_failure) == (state, usable, failure)


def test_signed_url_never_in_repr_or_dict():
    asset = DigitalAsset.from_api(asset_json())
    assert SIGNATURE not in repr(asset)
    assert SIGNATURE not in str(asset.to_dict())
    assert "download_url" not in asset.to_dict()["files"][0]
    assert "Signature=***" in repr(asset.files[0])


def test_url_expiry_v4_style_and_unknown():
    v4 = "https://b.example.test/o?X-Amz-Date=20261124T093015Z&X-Amz-Expires=86400&X-Amz-Signature=x"
    assert signed_url_expiry(v4) == datetime(2026, 11, 25, 9, 30, 15, tzinfo=timezone.utc)
    assert signed_url_expiry("https://b.example.test/o?token=abc") is None


def test_tolerant_parsing_of_absent_fields():
    asset = DigitalAsset.from_api({"asset_id": ASSET_ID, "asset_state": "CREATING", "files": None})
    assert asset.files == () and asset.asset_type is None
    partial = AssetFile.from_api({"asset_file_category": "MAIN", "file_size": "12"})
    assert (partial.size, partial.md5, partial.download_url_expires_at) == (12, None, None)


@pytest.mark.parametrize("body", [{"asset_state": "ACTIVED"}, {"asset_id": ASSET_ID}, [], {"asset_id": 3}])
def test_asset_without_required_fields_is_invalid(body):
    with pytest.raises(MetaStudioInvalidResponseError):
        DigitalAsset.from_api(body)


# -- get -----------------------------------------------------------------------------------------


def test_get_asset_signed_get(requests_mock):
    requests_mock.get(SHOW_URL, **ok(asset_json()))
    asset = make_hook().get_asset(ASSET_ID)
    assert asset.asset_id == ASSET_ID and asset.is_usable
    sent = requests_mock.last_request
    assert sent.method == "GET" and sent.headers["Authorization"].startswith("SDK-HMAC-SHA256 ")


def test_get_asset_validates_the_id_before_any_request(requests_mock):
    for bad in ("../x", "a/b", "a?b", "", "%2F"):
        with pytest.raises(MetaStudioValidationError, match="asset_id"):
            make_hook().get_asset(bad)
    assert requests_mock.call_count == 0


def test_get_asset_404_is_typed(requests_mock):
    requests_mock.get(
        SHOW_URL,
        status_code=404,
        json={"error_code": "MSS.00000003", "error_msg": "Asset not found"},
        headers={"X-Request-Id": "req-404"},
    )
    with pytest.raises(MetaStudioNotFoundError) as e:
        make_hook().get_asset(ASSET_ID)
    assert e.value.request_id == "req-404" and e.value.call == "asset_show"


def test_get_asset_retries_5xx(requests_mock):
    requests_mock.get(
        SHOW_URL,
        [{"status_code": 503, "json": {"error_code": "X", "error_msg": "busy"}}, ok(asset_json())],
    )
    assert make_hook().get_asset(ASSET_ID).is_usable
    assert requests_mock.call_count == 2


def test_get_asset_refuses_another_assets_answer(requests_mock):
    requests_mock.get(SHOW_URL, **ok(asset_json(asset_id="ffffffffffffffffffffffffffffffff")))
    with pytest.raises(MetaStudioInvalidResponseError, match="for asset"):
        make_hook().get_asset(ASSET_ID)


def test_asset_calls_have_their_own_rate_limiter(requests_mock):
    requests_mock.get(SHOW_URL, **ok(asset_json()))
    hook = make_hook(rate_limits=None)  # the defaults
    assert hook.config.rate_limits["asset_show"] == 1.0
    hook.get_asset(ASSET_ID)
    keys = {key[2] for key in ratelimit._LIMITERS}
    assert keys == {"asset_show"}


def test_aget_asset_uses_the_async_transport(monkeypatch):
    import asyncio

    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1/{PROJECT_ID}/digital-assets/{ASSET_ID}"
        assert request.headers["Authorization"].startswith("SDK-HMAC-SHA256 ")
        return httpx.Response(200, json=asset_json("CREATING"), headers={"X-Request-Id": "r"})

    hook = make_hook()
    real = httpx.AsyncClient
    monkeypatch.setattr(httpx, "AsyncClient", lambda **kw: real(transport=httpx.MockTransport(handler)))

    async def run():
        try:
            return await hook.aget_asset(ASSET_ID)
        finally:
            await hook.aclose()

    asset = asyncio.run(run())
    assert asset.state == "CREATING" and not asset.is_usable


# -- list ----------------------------------------------------------------------------------------


def test_list_assets_pages_and_filters(requests_mock):
    ids = [f"{i:032x}" for i in range(5)]
    pages = [
        ok({"count": 5, "assets": [asset_json(asset_id=i) for i in ids[:2]]}),
        ok({"count": 5, "assets": [asset_json(asset_id=i) for i in ids[2:4]]}),
        ok({"count": 5, "assets": [asset_json(asset_id=i) for i in ids[4:]]}),
    ]
    requests_mock.get(LIST_URL, pages)
    got = list(
        make_hook().list_assets(
            states=[AssetState.ACTIVED, "CREATING"],
            asset_types="HUMAN_MODEL",
            style_id="system_female_001",
            name="model_",
            created_since=datetime(2026, 11, 1, tzinfo=timezone.utc),
            created_until="2026-11-30T00:00:00+08:00",
            sort_key="create_time",
            sort_dir="desc",
            page_size=2,
        )
    )
    assert [a.asset_id for a in got] == ids
    queries = [parse_qs(urlsplit(r.url).query) for r in requests_mock.request_history]
    assert [q["offset"] for q in queries] == [["0"], ["2"], ["4"]]
    first = queries[0]
    assert first["asset_state"] == ["ACTIVED,CREATING"]
    assert first["asset_type"] == ["HUMAN_MODEL"]
    assert first["style_id"] == ["system_female_001"]
    assert first["name"] == ["model_"]
    assert first["start_time"] == ["2026-11-01T00:00:00Z"]
    assert first["end_time"] == ["2026-11-29T16:00:00Z"]
    assert (first["sort_key"], first["sort_dir"], first["limit"]) == (["create_time"], ["desc"], ["2"])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"states": "READY"}, "states"),
        ({"asset_types": "CAR_MODEL"}, "asset_types"),
        ({"sort_key": "name"}, "sort_key"),
        ({"sort_dir": "up"}, "sort_dir"),
        ({"page_size": 101}, "page_size"),
        ({"style_id": "../x"}, "style_id"),
        ({"created_since": "yesterday"}, "created_since"),
        ({"created_since": datetime(2026, 1, 1)}, "created_since"),  # naive
        ({"asset_source": "MINE"}, "asset_source"),
    ],
)
def test_list_assets_validates_filters_before_any_request(requests_mock, kwargs, field):
    with pytest.raises(MetaStudioValidationError, match=field):
        next(make_hook().list_assets(**kwargs))
    assert requests_mock.call_count == 0


def test_list_page_without_assets_list_is_invalid_unless_empty(requests_mock):
    requests_mock.get(LIST_URL, [ok({"count": 0}), ok({"count": 3})])
    assert make_hook().list_assets_page().assets == []
    with pytest.raises(MetaStudioInvalidResponseError, match="no assets list"):
        make_hook().list_assets_page()


# -- download ------------------------------------------------------------------------------------


def _file(data=GLB, **fields):
    return AssetFile.from_api(file_json(data=data, **fields))


def test_download_asset_file_streams_and_verifies(requests_mock):
    requests_mock.get(MAIN_URL, content=GLB)
    out = io.BytesIO()
    got = make_hook().download_asset_file(_file(), out)
    assert out.getvalue() == GLB
    assert (got.size, got.md5) == (len(GLB), b64md5(GLB))
    assert "Authorization" not in requests_mock.last_request.headers  # the URL is its own credential


def test_download_md5_mismatch_names_the_file_not_the_url(requests_mock, caplog):
    corrupted = GLB[:-1] + b"\x01"
    requests_mock.get(MAIN_URL, content=corrupted)
    with caplog.at_level(logging.DEBUG, logger=PROVIDER), pytest.raises(MetaStudioChecksumError) as e:
        make_hook().download_asset_file(_file(), io.BytesIO())
    assert "model.glb" in str(e.value) and "MAIN" in str(e.value) and "MD5" in str(e.value)
    assert SIGNATURE not in str(e.value) and SIGNATURE not in provider_log(caplog)
    assert requests_mock.call_count == 1  # not retried inside the hook: the operator decides


def test_download_size_mismatch(requests_mock):
    requests_mock.get(MAIN_URL, content=GLB + b"x")
    with pytest.raises(MetaStudioChecksumError, match="bytes received"):
        make_hook().download_asset_file(_file(), io.BytesIO())


def test_download_without_md5_checks_size_and_warns(requests_mock, caplog):
    requests_mock.get(MAIN_URL, content=GLB)
    with caplog.at_level(logging.WARNING, logger=HOOK_LOGGER):
        make_hook().download_asset_file(_file(file_md5="d41d8cd98f00b204e9800998ecf8427e"), io.BytesIO())
    assert "no usable MD5" in caplog.text


def test_download_expired_url_explains_and_hides_signature(requests_mock, caplog):
    requests_mock.get(
        MAIN_URL,
        status_code=403,
        text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
        headers={"Content-Type": "application/xml", "X-Request-Id": "obs-1"},
    )
    with caplog.at_level(logging.DEBUG, logger=PROVIDER), pytest.raises(MetaStudioAuthError) as e:
        make_hook().download_asset_file(_file(), io.BytesIO())
    assert "model.glb" in str(e.value) and "expires at" in str(e.value)
    assert e.value.call == "asset_file"
    assert SIGNATURE not in str(e.value) and SIGNATURE not in provider_log(caplog)


def test_download_retries_a_5xx_and_starts_the_file_over(requests_mock):
    requests_mock.get(MAIN_URL, [{"status_code": 503, "text": "busy"}, {"content": GLB}])
    out = io.BytesIO()
    make_hook().download_asset_file(_file(), out)
    assert out.getvalue() == GLB


def test_download_file_without_url_is_refused(requests_mock):
    with pytest.raises(MetaStudioInvalidResponseError, match="no download_url"):
        make_hook().download_asset_file(_file(download_url=None), io.BytesIO())
    with pytest.raises(MetaStudioInvalidResponseError, match="not an http") as e:
        make_hook().download_asset_file(_file(download_url=f"ftp://x/?Signature={SIGNATURE}"), io.BytesIO())
    assert SIGNATURE not in str(e.value)
    assert requests_mock.call_count == 0


# -- the async asset list (issue #14) -------------------------------------------------------------------


def test_alist_assets_pages_through_the_async_transport_with_the_list_filters(monkeypatch):
    hook = make_hook()
    pages = {
        0: {"count": 3, "assets": [asset_json(asset_id="a1"), asset_json(asset_id="a2")]},
        2: {"count": 3, "assets": [asset_json(asset_id="a3")]},
    }
    sent = []

    async def arequest(call):
        sent.append(call)
        query = parse_qs(urlsplit(call.url).query)
        offset = int(query["offset"][0])
        return ApiResponse(200, pages[offset], f"req-{offset}", {})

    monkeypatch.setattr(hook.transport, "arequest", arequest)

    async def collect():
        return [a async for a in hook.alist_assets(states="ACTIVED", page_size=2)]

    assets = asyncio.run(collect())
    assert [a.asset_id for a in assets] == ["a1", "a2", "a3"]
    assert [a.request_id for a in assets] == ["req-0", "req-0", "req-2"]
    assert all(parse_qs(urlsplit(c.url).query)["asset_state"] == ["ACTIVED"] for c in sent)


def test_alist_assets_validates_filters_before_any_request(monkeypatch):
    hook = make_hook()

    async def arequest(call):
        raise AssertionError("no request may be sent")

    monkeypatch.setattr(hook.transport, "arequest", arequest)

    async def first():
        return [a async for a in hook.alist_assets(sort_dir="sideways")]

    with pytest.raises(MetaStudioValidationError) as exc:
        asyncio.run(first())
    assert exc.value.field == "sort_dir"
