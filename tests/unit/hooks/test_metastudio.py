"""MetaStudioHook over the sync transport, with requests-mock on the wire (no network)."""

from __future__ import annotations

import asyncio
import functools
import http.client
import importlib
import io
import json
import logging
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest
import requests
import urllib3.exceptions
from testsupport import DATA
from urllib3.connection import HTTPConnection

import airflow_provider_metastudio.hooks.metastudio as hook_module
import airflow_provider_metastudio.transport as transport_module
from airflow_provider_metastudio import __version__, auth, ratelimit
from airflow_provider_metastudio.auth import canonical_request, payload_hash, sign, string_to_sign
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioBadRequestError,
    MetaStudioConnectionError,
    MetaStudioError,
    MetaStudioGatewayError,
    MetaStudioInvalidResponseError,
    MetaStudioNotFoundError,
    MetaStudioServerError,
    MetaStudioThrottledError,
    MetaStudioValidationError,
    MetaStudioWaitTimeout,
)
from airflow_provider_metastudio.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR, get_provider_info
from airflow_provider_metastudio.hooks.metastudio import (
    MAX_RESPONSE_BYTES,
    CreatedJob,
    JobPage,
    MetaStudioHook,
)
from airflow_provider_metastudio.models import JobState, PictureModelingJob
from airflow_provider_metastudio.ratelimit import RateLimiter

JOB_SUCCEED = json.loads((DATA / "job_succeed.json").read_text())

PROJECT_ID = "0d697589d98091f12f92c0073501cd79"
ENDPOINT = "https://metastudio.example.test:8443"
HOST = "metastudio.example.test:8443"
BASE = f"{ENDPOINT}/v1/{PROJECT_ID}/digital-human/stylized"
JOB_ID = JOB_SUCCEED["job_id"]
SHOW_URL = f"{BASE}/picture-modelings/{JOB_ID}"
LIST_URL = f"{BASE}/picture-modelings"
CREATE_URL = f"{BASE}/picture-modelings"
CREATE_BY_URL_URL = f"{BASE}/picture-modelings-by-url"
IAM_ENDPOINT = "https://iam.cn-north-4.myhuaweicloud.com"
IAM_URL = f"{IAM_ENDPOINT}/v3/auth/tokens"

# Distinctive values: any of them showing up in a message, a log line or a repr is a leak.
AK = "HPUAEXAMPLEAK0000001"
SK = "SKsecret-7b1f0c9e2d4a+/="
SECURITY_TOKEN = "STSsecret-token-51c0ffee"
STATIC_TOKEN = "MIIstatic-TOKENsecret-8a7b"
IAM_USER = "ops-user"
IAM_PASSWORD = "PWsecret-iam-password-3e4f"
IAM_DOMAIN = "acme"
TOKEN_1 = "MIIiam-TOKENsecret-one-0001"
TOKEN_2 = "MIIiam-TOKENsecret-two-0002"
SECRETS = (SK, SECURITY_TOKEN, STATIC_TOKEN, IAM_PASSWORD, TOKEN_1, TOKEN_2)

NOW = datetime(2026, 11, 24, 9, 30, 15, tzinfo=timezone.utc)
SDK_DATE = "20261124T093015Z"
TOKEN_EXPIRES = NOW + timedelta(hours=24)
COVER_SIGNATURE = "DXJ9rIuf0Sf4aDlR95icBU%2Bu9Y8%3D"
STYLE_ID = "system_male_001"
CREATED = {"job_id": "new-job-0001_SMS", "model_asset_id": "4b1d0f5e7a9c4c2e8f3a6b5d7c9e1f20"}
AUTH_RE = re.compile(
    r"SDK-HMAC-SHA256 Access=(?P<ak>[^,]+), SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})"
)
HOOK_LOGGER = "airflow_provider_metastudio.hooks.metastudio"
TRANSPORT_LOGGER = "airflow_provider_metastudio.transport"  # retries are logged there


# -- helpers -------------------------------------------------------------------------------------


def fixed_clock() -> datetime:
    return NOW


class MovableClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_config(extra=None, *, login=AK, password=SK, rate_limits=False):
    base = {"project_id": PROJECT_ID}
    if rate_limits is not None:
        base["rate_limits"] = rate_limits
    return MetaStudioConnectionConfig.from_parts(
        login=login, password=password, extra={**base, **(extra or {})}, host=ENDPOINT
    )


def make_hook(
    extra=None,
    *,
    login=AK,
    password=SK,
    retry_limit=2,
    throttle_retry_limit=None,
    clock=fixed_clock,
    rate_limits=False,
):
    return MetaStudioHook(
        config=make_config(extra, login=login, password=password, rate_limits=rate_limits),
        retry_limit=retry_limit,
        # The same as retry_limit unless a test is about 429s' own limit.
        throttle_retry_limit=retry_limit if throttle_retry_limit is None else throttle_retry_limit,
        retry_delay=0,  # backoffs are 0; Retry-After waits are real values (and capped at 60 s)
        clock=clock,
    )


def token_hook(**kwargs):
    return make_hook({"auth_type": "token"}, login=None, password=STATIC_TOKEN, **kwargs)


def password_hook(*, user=IAM_USER, **kwargs):
    return make_hook(
        {"auth_type": "password", "domain": IAM_DOMAIN, "iam_endpoint": IAM_ENDPOINT},
        login=user,
        password=IAM_PASSWORD,
        **kwargs,
    )


def job_json(state="SUCCEED", job_id=JOB_ID, **fields):
    return {**JOB_SUCCEED, "job_id": job_id, "state": state, **fields}


def ok(body=None, request_id="req-ok", status=200):
    return {
        "status_code": status,
        "json": JOB_SUCCEED if body is None else body,
        "headers": {"X-Request-Id": request_id},
    }


def error(status, code, msg, request_id="req-err", headers=None):
    return {
        "status_code": status,
        "json": {"error_code": code, "error_msg": msg},
        "headers": {"X-Request-Id": request_id, **(headers or {})},
    }


def iam_ok(token, expires=TOKEN_EXPIRES):
    return {
        "status_code": 201,
        "json": {
            "token": {"expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.000000Z"), "methods": ["password"]}
        },
        "headers": {"X-Subject-Token": token, "X-Request-Id": "iam-req"},
    }


def html_502(request_id="req-gw"):
    return {
        "status_code": 502,
        "content": b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        "headers": {"Content-Type": "text/html", "X-Request-Id": request_id},
    }


def refused():
    """What requests raises when nothing listens: ConnectionError(MaxRetryError(NewConnectionError))."""
    conn = HTTPConnection("metastudio.example.test", 8443)
    reason = urllib3.exceptions.NewConnectionError(
        conn, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/v1/x", reason=reason))


def dns_failure():
    conn = HTTPConnection("metastudio.example.test", 8443)
    reason = urllib3.exceptions.NameResolutionError(
        "metastudio.example.test", conn, OSError("Name or service not known")
    )
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/v1/x", reason=reason))


def dropped():
    """The server hung up after the request went out: requests' ConnectionError(ProtocolError)."""
    reason = http.client.RemoteDisconnected("Remote end closed connection without response")
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", reason)
    )


def read_timeout():
    return requests.exceptions.ReadTimeout(
        urllib3.exceptions.ReadTimeoutError(None, "/v1/x", "Read timed out. (read timeout=60)")
    )


def connect_timeout():
    return requests.exceptions.ConnectTimeout(
        urllib3.exceptions.ConnectTimeoutError(None, "Connection to metastudio.example.test timed out")
    )


def png_bytes(width=640, height=480):
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * (1 + 3 * width)))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(width=640, height=480):
    import struct

    components = b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return (
        b"\xff\xd8"
        + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        + b"\xff\xc0"
        + struct.pack(">HBHHB", 8 + len(components), 8, height, width, 3)
        + components
        + b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
        + b"\x12\x34\x56\x78"
        + b"\xff\xd9"
    )


def multipart_parts(request):
    """Split a recorded multipart body into {name: (filename, content type, bytes)}, byte-exact."""
    content_type = request.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=", 1)[1].encode()
    body = request.body
    assert body.endswith(b"--" + boundary + b"--\r\n")
    parts = {}
    for chunk in body.split(b"--" + boundary)[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, content = chunk[2:-2].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        disposition = headers["Content-Disposition"]
        name = re.search(r'; name="([^"]*)"', disposition).group(1)
        filename = re.search(r'; filename="([^"]*)"', disposition)
        parts[name] = (filename.group(1) if filename else None, headers.get("Content-Type"), content)
    return parts


def assert_signed(request, *, ak=AK, sk=SK, sdk_date=SDK_DATE):
    """Recompute the signature of a recorded request from its own bytes and compare."""
    match = AUTH_RE.fullmatch(request.headers["Authorization"])
    assert match, request.headers["Authorization"]
    assert match["ak"] == ak
    names = match["signed"].split(";")
    assert names == sorted(names)
    assert {"host", "x-project-id", "x-sdk-date"} <= set(names)
    assert request.headers["X-Sdk-Date"] == sdk_date
    assert request.headers["X-Project-Id"] == PROJECT_ID
    assert request.headers["Host"] == HOST
    parts = urlsplit(request.url)
    signed_headers = {name: request.headers[name] for name in names}
    canonical, signed = canonical_request(
        request.method,
        parts.path,
        parts.query,
        signed_headers,
        payload_hash(request.body, request.headers.get("Content-Type")),
    )
    assert signed == match["signed"]
    assert match["sig"] == sign(string_to_sign(canonical, request.headers["X-Sdk-Date"]), sk)
    return names


def requests_to(requests_mock, url, method=None):
    return [
        r
        for r in requests_mock.request_history
        if r.url.split("?")[0] == url and (method is None or r.method == method)
    ]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_process_state(monkeypatch):
    auth._TOKEN_CACHE.clear()
    monkeypatch.setattr(ratelimit, "_LIMITERS", {})
    for name in ("AIRFLOW_CONN_METASTUDIO_DEFAULT", "CLOUD_SDK_AK", "CLOUD_SDK_SK"):
        monkeypatch.delenv(name, raising=False)
    yield
    auth._TOKEN_CACHE.clear()


@pytest.fixture(autouse=True)
def sleeps(monkeypatch):
    """Every time.sleep (tenacity's waits, the rate limiter) is recorded, never slept."""
    recorded: list[float] = []
    monkeypatch.setattr(time, "sleep", recorded.append)
    return recorded


@pytest.fixture
def masked(monkeypatch):
    spy = mock.Mock()
    monkeypatch.setattr(hook_module, "mask_secret", spy)  # the connection's secrets
    monkeypatch.setattr(transport_module, "mask_secret", spy)  # IAM tokens, signed URLs
    return spy


# -- get -----------------------------------------------------------------------------------------


def test_get_job_parses_the_documented_example(requests_mock):
    requests_mock.get(SHOW_URL, **ok(request_id="req-show-1"))
    job = make_hook().get_picture_modeling_job(JOB_ID)
    assert isinstance(job, PictureModelingJob)
    assert job.job_id == JOB_ID
    assert job.known_state is JobState.SUCCEED
    assert job.start_time == datetime(2022, 11, 7, 11, 43, 8, tzinfo=timezone.utc)
    assert job.end_time == datetime(2022, 11, 7, 11, 43, 32, tzinfo=timezone.utc)
    assert job.error_info is None
    assert job.model_asset_id == "3fcb602bdbe4982ff59832b172949a21"
    assert job.model_cover_url == JOB_SUCCEED["model_cover_url"]
    assert job.model_cover_url_expires_at == datetime(2022, 11, 18, 6, 14, 24, tzinfo=timezone.utc)
    assert requests_mock.call_count == 1
    sent = requests_mock.request_history[0]
    assert sent.method == "GET"
    assert sent.url == SHOW_URL
    assert sent.body is None
    assert sent.headers["User-Agent"] == f"airflow-provider-metastudio/{__version__}"


def test_get_job_carries_the_request_id_outside_its_identity(requests_mock):
    requests_mock.get(SHOW_URL, [ok(request_id="req-show-2"), ok(request_id="req-show-3")])
    hook = make_hook()
    job = hook.get_picture_modeling_job(JOB_ID)
    assert job.job_id == JOB_ID and job.request_id == "req-show-2"
    again = hook.get_picture_modeling_job(JOB_ID)
    assert again.request_id == "req-show-3" and again == job and hash(again) == hash(job)


def test_get_failed_job_has_error_info(requests_mock):
    body = job_json(
        "FAILED", error_info={"error_code": "MSS.00000050", "error_msg": "no face"}, model_cover_url=None
    )
    requests_mock.get(SHOW_URL, **ok(body))
    job = make_hook().get_picture_modeling_job(JOB_ID)
    assert job.is_failure and job.error_code == "MSS.00000050" and job.error_msg == "no face"


def test_get_job_without_state_is_an_invalid_response(requests_mock):
    requests_mock.get(SHOW_URL, **ok({"job_id": JOB_ID}))
    with pytest.raises(MetaStudioInvalidResponseError, match="state"):
        make_hook().get_picture_modeling_job(JOB_ID)


BAD_JOB_IDS = {
    "dot-dot": "../x",
    "slash": "a/b",
    "query": "a?b",
    "fragment": "a#b",
    "encoded slash": "%2F",
    "empty": "",
    "whitespace": "  ",
    "leading space": " x",
    "10000 chars": "x" * 10_000,
    "int": 42,
    "none": None,
}


@pytest.mark.parametrize("job_id", BAD_JOB_IDS.values(), ids=list(BAD_JOB_IDS))
def test_bad_job_id_raises_before_any_request(requests_mock, job_id):
    hook = make_hook()
    for call in (hook.get_picture_modeling_job, lambda j: hook.wait_for_picture_modeling_job(j, timeout=1)):
        with pytest.raises(MetaStudioValidationError) as exc:
            call(job_id)
        assert exc.value.field == "job_id"
        assert len(str(exc.value)) < 200
    assert requests_mock.call_count == 0


# -- list ----------------------------------------------------------------------------------------


def _paged_list(all_jobs, count=None):
    def respond(request, context):
        query = dict(p.split("=", 1) for p in urlsplit(request.url).query.split("&"))
        offset, limit = int(query["offset"]), int(query["limit"])
        context.headers["X-Request-Id"] = f"req-list-{offset}"
        return {
            "count": len(all_jobs) if count is None else count,
            "picture_modeling_jobs": all_jobs[offset : offset + limit],
        }

    return respond


def test_list_follows_offset_paging_to_the_end(requests_mock):
    jobs = [job_json("SUCCEED", job_id=f"job-{i}") for i in range(5)]
    requests_mock.get(LIST_URL, json=_paged_list(jobs))
    found = list(make_hook().list_picture_modeling_jobs(page_size=2))
    assert [j.job_id for j in found] == [f"job-{i}" for i in range(5)]
    queries = [urlsplit(r.url).query for r in requests_mock.request_history]
    assert queries == ["limit=2&offset=0", "limit=2&offset=2", "limit=2&offset=4"]


def test_list_stops_on_an_empty_page_even_if_count_says_more(requests_mock):
    jobs = [job_json(job_id=f"job-{i}") for i in range(3)]
    requests_mock.get(LIST_URL, json=_paged_list(jobs, count=50))
    assert len(list(make_hook().list_picture_modeling_jobs(page_size=2))) == 3
    assert requests_mock.call_count == 3  # 2 + 1 + an empty page


def test_list_sends_the_canonical_query_with_every_filter(requests_mock):
    requests_mock.get(LIST_URL, json={"count": 0, "picture_modeling_jobs": []})
    hook = make_hook()
    result = list(
        hook.list_picture_modeling_jobs(
            states=[JobState.WAITING, "PROCESSING"],
            sort_key="update_time",
            sort_dir="desc",
            create_since=datetime(2026, 11, 24, 8, 0, tzinfo=timezone(timedelta(hours=8))),
            create_until="2026-11-25T00:00:00Z",
            page_size=100,
        )
    )
    assert result == []
    (sent,) = requests_mock.request_history
    assert urlsplit(sent.url).query == (
        "create_since=2026-11-24T00%3A00%3A00Z&create_until=2026-11-25T00%3A00%3A00Z&limit=100&offset=0"
        "&sort_dir=desc&sort_key=update_time&state=WAITING%2CPROCESSING"
    )
    assert_signed(sent)  # the query the server sees is the one that was signed


def test_list_page_returns_count_jobs_and_request_id(requests_mock):
    requests_mock.get(LIST_URL, json=_paged_list([job_json(job_id="a"), job_json(job_id="b")]))
    page = make_hook().list_picture_modeling_jobs_page(offset=1, limit=10, states="SUCCEED")
    assert isinstance(page, JobPage)
    assert page.total == 2 and [j.job_id for j in page.jobs] == ["b"] and page.request_id == "req-list-1"
    assert "state=SUCCEED" in requests_mock.last_request.url


def test_find_matches_name_and_style_newest_first_across_pages(requests_mock):
    jobs = [
        job_json("PROCESSING", job_id="newest", name="run-1"),
        job_json("SUCCEED", job_id="other-name", name="run-2"),
        job_json("FAILED", job_id="other-style", name="run-1", style_id="system_female_001"),
        job_json("FAILED", job_id="oldest", name="run-1"),
    ]
    requests_mock.get(LIST_URL, json=_paged_list(jobs))
    hook = make_hook()
    hook.list_picture_modeling_jobs = functools.partial(hook.list_picture_modeling_jobs, page_size=2)
    found = hook.find_picture_modeling_jobs(
        name="run-1",
        style_id=JOB_SUCCEED["style_id"],
        created_since=datetime(2026, 11, 24, 8, 59, 59, 900000, tzinfo=timezone.utc),
        states=["PROCESSING", "FAILED"],
    )
    assert [j.job_id for j in found] == ["newest", "oldest"]
    queries = [urlsplit(r.url).query for r in requests_mock.request_history]
    assert queries[0] == (
        "create_since=2026-11-24T08%3A59%3A59Z&limit=2&offset=0&sort_dir=desc&sort_key=create_time"
        "&state=PROCESSING%2CFAILED"
    )
    assert len(queries) == 2


def test_find_stops_paging_once_the_caller_has_its_job(requests_mock):
    jobs = [job_json(job_id=f"job-{i}", name="n") for i in range(250)]
    requests_mock.get(LIST_URL, json=_paged_list(jobs))
    first = next(make_hook().find_picture_modeling_jobs(name="n", created_since=None))
    assert first.job_id == "job-0" and requests_mock.call_count == 1


def test_find_refuses_a_bad_name_before_any_request(requests_mock):
    with pytest.raises(MetaStudioValidationError) as exc:
        list(make_hook().find_picture_modeling_jobs(name="", created_since=None))
    assert exc.value.field == "name" and requests_mock.call_count == 0


def test_list_answer_without_a_job_list_is_invalid(requests_mock):
    requests_mock.get(LIST_URL, json={"count": 1, "picture_modeling_jobs": "oops"})
    with pytest.raises(MetaStudioInvalidResponseError):
        list(make_hook(retry_limit=0).list_picture_modeling_jobs())


LIST_PAGES = {  # answer -> (total, job ids); the page asked for is offset 0, limit 2
    "count 0, no list": ({"count": 0}, 0, []),
    "count 0, null list": ({"count": 0, "picture_modeling_jobs": None}, 0, []),
    "count as digits": ({"count": "1", "picture_modeling_jobs": [job_json(job_id="a")]}, 1, ["a"]),
    "integral float count": ({"count": 1.0, "picture_modeling_jobs": [job_json(job_id="a")]}, 1, ["a"]),
    "no count, short page": ({"picture_modeling_jobs": [job_json(job_id="a")]}, 1, ["a"]),
    "no count, empty page": ({"picture_modeling_jobs": []}, 0, []),
    "no count, full page": (  # at least one more: the pager must ask for the next page
        {"count": None, "picture_modeling_jobs": [job_json(job_id="a"), job_json(job_id="b")]},
        3,
        ["a", "b"],
    ),
}


@pytest.mark.parametrize(("body", "total", "ids"), LIST_PAGES.values(), ids=list(LIST_PAGES))
def test_list_page_shapes_the_sdk_accepts(requests_mock, body, total, ids):
    requests_mock.get(LIST_URL, json=body, headers={"X-Request-Id": "rid-list"})
    page = make_hook(retry_limit=0).list_picture_modeling_jobs_page(limit=2)
    assert (page.total, [j.job_id for j in page.jobs], page.request_id) == (total, ids, "rid-list")


INVALID_LIST_PAGES = {
    "counted jobs, no list": {"count": 3},
    "counted jobs, null list": {"count": 3, "picture_modeling_jobs": None},
    "neither": {},
    "list not a list": {"count": 1, "picture_modeling_jobs": {"job_id": "a"}},
    "negative count": {"count": -1, "picture_modeling_jobs": []},
    "boolean count": {"count": True, "picture_modeling_jobs": []},
    "text count": {"count": "many", "picture_modeling_jobs": []},
    "not an object": [job_json()],
}


@pytest.mark.parametrize("body", INVALID_LIST_PAGES.values(), ids=list(INVALID_LIST_PAGES))
def test_list_pages_that_would_hide_jobs_are_invalid(requests_mock, body):
    requests_mock.get(LIST_URL, json=body, headers={"X-Request-Id": "rid-bad"})
    with pytest.raises(MetaStudioInvalidResponseError) as exc:
        make_hook(retry_limit=0).list_picture_modeling_jobs_page()
    assert exc.value.request_id == "rid-bad" and exc.value.status == 200


def test_list_without_count_pages_to_the_end(requests_mock):
    jobs = [job_json(job_id=f"job-{i}") for i in range(5)]
    pager = _paged_list(jobs)

    def respond(request, context):
        body = pager(request, context)
        del body["count"]
        return body

    requests_mock.get(LIST_URL, json=respond)
    found = list(make_hook().list_picture_modeling_jobs(page_size=2))
    assert [j.job_id for j in found] == [f"job-{i}" for i in range(5)]
    assert requests_mock.call_count == 3  # 2 + 2 + 1: the short page is the last


def test_list_time_filters_are_sent_in_the_strict_form(requests_mock):
    requests_mock.get(LIST_URL, json={"count": 0, "picture_modeling_jobs": []})
    make_hook().list_picture_modeling_jobs_page(
        create_since="2026-11-24 08:00:00.5+0800", create_until="2026-11-25t00:00:00z"
    )
    query = urlsplit(requests_mock.last_request.url).query
    assert "create_since=2026-11-24T00%3A00%3A00Z&create_until=2026-11-25T00%3A00%3A00Z" in query


LIST_VALIDATION = {
    "page_size 0": ({"page_size": 0}, "page_size"),
    "page_size 101": ({"page_size": 101}, "page_size"),
    "page_size str": ({"page_size": "10"}, "page_size"),
    "sort_key": ({"sort_key": "name"}, "sort_key"),
    "sort_dir": ({"sort_dir": "up"}, "sort_dir"),
    "state unknown": ({"states": ["WAITING", "DONE"]}, "states"),
    "states as one comma string": ({"states": "WAITING,PROCESSING"}, "states"),
    "naive since": ({"create_since": datetime(2026, 1, 1)}, "create_since"),
    "garbage until": ({"create_until": "yesterday"}, "create_until"),
    "numeric since": ({"create_since": 1700000000}, "create_since"),
}


@pytest.mark.parametrize(("kwargs", "field"), LIST_VALIDATION.values(), ids=list(LIST_VALIDATION))
def test_list_validates_before_any_request(requests_mock, kwargs, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        list(make_hook().list_picture_modeling_jobs(**kwargs))
    assert exc.value.field == field
    assert requests_mock.call_count == 0


def test_list_page_validates_offset(requests_mock):
    with pytest.raises(MetaStudioValidationError) as exc:
        make_hook().list_picture_modeling_jobs_page(offset=-1)
    assert exc.value.field == "offset"
    assert requests_mock.call_count == 0


# -- create from a photo ---------------------------------------------------------------------------


def _photo_path(tmp_path, name="face.png", data=None):
    path = tmp_path / name
    path.write_bytes(png_bytes() if data is None else data)
    return path


PHOTO_INPUTS = {
    "path": (lambda tmp: _photo_path(tmp), "face.png", "image/png", png_bytes()),
    "str path": (
        lambda tmp: str(_photo_path(tmp, "face.jpg", jpeg_bytes())),
        "face.jpg",
        "image/jpeg",
        jpeg_bytes(),
    ),
    "unsafe file name": (
        lambda tmp: _photo_path(tmp, 'my "face".png'),
        "photo.png",
        "image/png",
        png_bytes(),
    ),
    "bytes png": (lambda tmp: png_bytes(), "photo.png", "image/png", png_bytes()),
    "bytes jpeg": (lambda tmp: jpeg_bytes(), "photo.jpg", "image/jpeg", jpeg_bytes()),
    "bytearray": (lambda tmp: bytearray(png_bytes()), "photo.png", "image/png", png_bytes()),
    "file object": (lambda tmp: open(_photo_path(tmp, "me.png"), "rb"), "me.png", "image/png", png_bytes()),
    "BytesIO": (lambda tmp: io.BytesIO(jpeg_bytes()), "photo.jpg", "image/jpeg", jpeg_bytes()),
}


@pytest.mark.parametrize(
    ("make_photo", "filename", "mime", "data"), PHOTO_INPUTS.values(), ids=list(PHOTO_INPUTS)
)
def test_create_from_photo_sends_multipart(requests_mock, tmp_path, make_photo, filename, mime, data):
    requests_mock.post(CREATE_URL, **ok(CREATED, request_id="req-create"))
    photo = make_photo(tmp_path)
    try:
        created = make_hook().create_picture_modeling_job(
            photo=photo, style_id=STYLE_ID, name="我的模型 v1", notify_url="https://hooks.example.com/ms?x=1"
        )
    finally:
        if hasattr(photo, "close"):
            photo.close()
    assert created == CreatedJob(CREATED["job_id"], CREATED["model_asset_id"])
    (sent,) = requests_mock.request_history
    assert sent.method == "POST" and sent.url == CREATE_URL
    assert sent.headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    parts = multipart_parts(sent)
    assert set(parts) == {"style_id", "name", "notify_url", "file"}
    assert parts["style_id"] == (None, None, STYLE_ID.encode())
    assert parts["name"] == (None, None, "我的模型 v1".encode())
    assert parts["notify_url"] == (None, None, b"https://hooks.example.com/ms?x=1")
    assert parts["file"] == (filename, mime, data)
    names = assert_signed(sent)
    assert "x-sdk-content-sha256" in names and "content-type" in names


def test_create_without_notify_url_sends_no_such_part(requests_mock):
    requests_mock.post(CREATE_URL, **ok(CREATED))
    make_hook().create_picture_modeling_job(photo=png_bytes(), style_id=STYLE_ID, name="m")
    assert set(multipart_parts(requests_mock.last_request)) == {"style_id", "name", "file"}


def _big_sparse_file(tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.truncate(10 * 1024 * 1024 + 1)
    return path


CREATE_REFUSED = {
    "gif": ({"photo": b"GIF89a" + b"\x00" * 64}, "photo"),
    "text file object": ({"photo": io.StringIO("not bytes")}, "photo"),
    "oversized png": ({"photo": png_bytes(4000, 3000)}, "photo"),
    "empty": ({"photo": b""}, "photo"),
    "missing path": ({"photo": "/nonexistent/face.png"}, "photo"),
    "wrong type": ({"photo": 12345}, "photo"),
    "empty name": ({"photo": png_bytes(), "name": ""}, "name"),
    "long style": ({"photo": png_bytes(), "style_id": "s" * 65}, "style_id"),
    "notify ftp": ({"photo": png_bytes(), "notify_url": "ftp://x/y"}, "notify_url"),
}


@pytest.mark.parametrize(("kwargs", "field"), CREATE_REFUSED.values(), ids=list(CREATE_REFUSED))
def test_create_refuses_bad_input_before_any_request(requests_mock, kwargs, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        make_hook().create_picture_modeling_job(**{"style_id": STYLE_ID, "name": "m", **kwargs})
    assert exc.value.field == field
    assert requests_mock.call_count == 0


def test_create_refuses_an_oversized_file_without_reading_it(requests_mock, tmp_path):
    with pytest.raises(MetaStudioValidationError) as exc:
        make_hook().create_picture_modeling_job(photo=_big_sparse_file(tmp_path), style_id=STYLE_ID, name="m")
    assert exc.value.field == "photo" and "bytes" in str(exc.value)
    assert requests_mock.call_count == 0


def test_create_answer_without_job_id_is_invalid(requests_mock):
    requests_mock.post(CREATE_URL, **ok({"model_asset_id": "x"}, request_id="req-c"))
    with pytest.raises(MetaStudioInvalidResponseError) as exc:
        make_hook().create_picture_modeling_job(photo=png_bytes(), style_id=STYLE_ID, name="m")
    assert exc.value.request_id == "req-c"
    assert requests_mock.call_count == 1


# -- create by URL -------------------------------------------------------------------------------


def test_create_by_url_sends_json(requests_mock):
    requests_mock.post(CREATE_BY_URL_URL, **ok(CREATED))
    created = make_hook().create_picture_modeling_job_by_url(
        picture_url="https://cdn.example.com/face.jpg",
        style_id=STYLE_ID,
        name="我的模型",
        notify_url="http://cb.example.com/x",
    )
    assert created.job_id == CREATED["job_id"] and created.model_asset_id == CREATED["model_asset_id"]
    (sent,) = requests_mock.request_history
    assert sent.headers["Content-Type"].startswith("application/json")
    assert json.loads(sent.body.decode("utf-8")) == {
        "picture_url": "https://cdn.example.com/face.jpg",
        "style_id": STYLE_ID,
        "name": "我的模型",
        "notify_url": "http://cb.example.com/x",
    }
    assert "X-Sdk-Content-Sha256" not in sent.headers  # a JSON body is hashed into the signature
    assert_signed(sent)


def test_create_by_url_omits_notify_url_when_not_given(requests_mock):
    requests_mock.post(CREATE_BY_URL_URL, **ok(CREATED))
    make_hook().create_picture_modeling_job_by_url(
        picture_url="https://cdn.example.com/a.png", style_id=STYLE_ID, name="m"
    )
    assert "notify_url" not in requests_mock.last_request.json()


@pytest.mark.parametrize(
    "picture_url",
    [
        "file:///etc/passwd",
        "ftp://cdn.example.com/a.png",
        "s3://bucket/a.png",
        "/local/a.png",
        "https:///a.png",
        "",
    ],
    ids=["file", "ftp", "s3", "relative", "no-host", "empty"],
)
def test_create_by_url_refuses_non_http_urls(requests_mock, picture_url):
    with pytest.raises(MetaStudioValidationError) as exc:
        make_hook().create_picture_modeling_job_by_url(picture_url=picture_url, style_id=STYLE_ID, name="m")
    assert exc.value.field == "picture_url"
    assert requests_mock.call_count == 0


# -- wait ----------------------------------------------------------------------------------------


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _hook_records(caplog, level, logger=HOOK_LOGGER):
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


def test_wait_returns_the_job_once_terminal_and_logs_each_change_once(requests_mock, caplog):
    caplog.set_level(logging.DEBUG, logger=HOOK_LOGGER)
    states = ["WAITING", "WAITING", "PROCESSING", "PROCESSING", "PROCESSING", "SUCCEED"]
    requests_mock.get(SHOW_URL, [ok(job_json(s), request_id=f"req-{i}") for i, s in enumerate(states)])
    fake = FakeTime()
    job = make_hook().wait_for_picture_modeling_job(
        JOB_ID, poll_interval=30, timeout=3600, monotonic=fake.monotonic, sleep=fake.sleep
    )
    assert job.state == "SUCCEED" and job.model_asset_id == JOB_SUCCEED["model_asset_id"]
    assert requests_mock.call_count == 6
    assert fake.slept == [30] * 5
    info = [m for m in _hook_records(caplog, logging.INFO) if m.startswith("Picture modeling job")]
    assert len(info) == 3
    assert (
        "-> WAITING" in info[0] and "WAITING -> PROCESSING" in info[1] and "PROCESSING -> SUCCEED" in info[2]
    )
    assert "req-5" in info[2] and COVER_SIGNATURE not in info[2]
    debug = [m for m in _hook_records(caplog, logging.DEBUG) if "still" in m]
    assert len(debug) == 3


def test_wait_returns_a_failed_job_without_raising(requests_mock):
    failed = job_json("FAILED", error_info={"error_code": "MSS.00000050", "error_msg": "no face"})
    requests_mock.get(SHOW_URL, [ok(job_json("PROCESSING")), ok(failed)])
    fake = FakeTime()
    job = make_hook().wait_for_picture_modeling_job(
        JOB_ID, poll_interval=5, monotonic=fake.monotonic, sleep=fake.sleep
    )
    assert job.state == "FAILED" and job.error_code == "MSS.00000050"


def test_wait_keeps_polling_through_an_unknown_state(requests_mock, caplog):
    caplog.set_level(logging.DEBUG, logger=HOOK_LOGGER)
    requests_mock.get(SHOW_URL, [ok(job_json("ARCHIVED")), ok(job_json("ARCHIVED")), ok(job_json("SUCCEED"))])
    fake = FakeTime()
    job = make_hook().wait_for_picture_modeling_job(
        JOB_ID, poll_interval=1, monotonic=fake.monotonic, sleep=fake.sleep
    )
    assert job.state == "SUCCEED" and requests_mock.call_count == 3
    assert len([m for m in _hook_records(caplog, logging.WARNING) if "ARCHIVED" in m]) == 1


def test_wait_times_out_only_after_a_final_read_at_the_deadline(requests_mock):
    requests_mock.get(SHOW_URL, **ok(job_json("PROCESSING")))
    fake = FakeTime()
    with pytest.raises(MetaStudioWaitTimeout) as exc:
        make_hook().wait_for_picture_modeling_job(
            JOB_ID, poll_interval=30, timeout=100, monotonic=fake.monotonic, sleep=fake.sleep
        )
    # polls at 0, 30, 60, 90 and, the last sleep cut to what was left, at the deadline (100)
    assert requests_mock.call_count == 5
    assert fake.slept == [30, 30, 30, 10]
    assert str(exc.value) == (
        f"Picture modeling job {JOB_ID} still PROCESSING after 100 s (timeout 100 s; "
        "last seen PROCESSING 0 s ago)"
    )


@pytest.mark.parametrize("state", ["SUCCEED", "FAILED", "CANCELED", "PARTIAL_SUCCEED"])
def test_wait_reports_a_job_that_ended_in_the_last_interval(requests_mock, state):
    """Giving up at 90 s (the next poll "would be late") would call a job that ended at 95 s a timeout."""
    requests_mock.get(SHOW_URL, [ok(job_json("PROCESSING"))] * 4 + [ok(job_json(state))])
    fake = FakeTime()
    job = make_hook().wait_for_picture_modeling_job(
        JOB_ID, poll_interval=30, timeout=100, monotonic=fake.monotonic, sleep=fake.sleep
    )
    assert job.state == state and requests_mock.call_count == 5
    assert fake.now - 100.0 == 100


def test_wait_with_no_timeout_waits_forever(requests_mock):
    requests_mock.get(SHOW_URL, [ok(job_json("PROCESSING"))] * 200 + [ok(job_json("SUCCEED"))])
    fake = FakeTime()
    job = make_hook().wait_for_picture_modeling_job(
        JOB_ID, poll_interval=3600, timeout=None, monotonic=fake.monotonic, sleep=fake.sleep
    )
    assert job.state == "SUCCEED" and fake.slept == [3600] * 200


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
        ({"poll_interval": "30"}, "poll_interval"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -5}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
    ],
)
def test_wait_refuses_bad_settings_before_any_request(requests_mock, kwargs, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        make_hook().wait_for_picture_modeling_job(JOB_ID, **kwargs)
    assert exc.value.field == field
    assert requests_mock.call_count == 0


def test_details_of_another_job_are_an_invalid_answer(requests_mock):
    requests_mock.get(SHOW_URL, **ok(job_json("SUCCEED", job_id="someone-elses-job"), request_id="req-x"))
    with pytest.raises(MetaStudioInvalidResponseError) as exc:
        make_hook().get_picture_modeling_job(JOB_ID)
    assert exc.value.status == 200 and exc.value.request_id == "req-x" and exc.value.call == "show"
    assert "someone-elses-job" in str(exc.value) and "req-x" in str(exc.value)


def test_async_details_of_another_job_are_an_invalid_answer(monkeypatch):
    hook = make_hook()
    answer = hook_module.ApiResponse(200, job_json(job_id="other"), "req-a", {})

    async def arequest(call):
        return answer

    monkeypatch.setattr(hook.transport, "arequest", arequest)
    with pytest.raises(MetaStudioInvalidResponseError) as exc:
        asyncio.run(hook.aget_picture_modeling_job(JOB_ID))
    assert exc.value.status == 200 and exc.value.request_id == "req-a" and "'other'" in str(exc.value)


def test_wait_propagates_a_final_api_error(requests_mock):
    requests_mock.get(SHOW_URL, **error(404, "MSS.00000003", "job not found", request_id="req-404"))
    fake = FakeTime()
    with pytest.raises(MetaStudioNotFoundError):
        make_hook().wait_for_picture_modeling_job(JOB_ID, monotonic=fake.monotonic, sleep=fake.sleep)
    assert fake.slept == []


# -- signing on the wire ---------------------------------------------------------------------------


def test_aksk_signature_on_the_wire(requests_mock):
    requests_mock.get(SHOW_URL, **ok())
    make_hook().get_picture_modeling_job(JOB_ID)
    sent = requests_mock.last_request
    names = assert_signed(sent)
    assert "user-agent" in names
    for unsigned in ("authorization", "content-length", "accept-encoding", "connection", "accept"):
        assert unsigned not in names
    assert "X-Auth-Token" not in sent.headers


def test_signature_would_not_verify_with_another_sk(requests_mock):
    requests_mock.get(SHOW_URL, **ok())
    make_hook().get_picture_modeling_job(JOB_ID)
    with pytest.raises(AssertionError):
        assert_signed(requests_mock.last_request, sk="another-secret")


def test_security_token_and_app_user_id_are_sent_and_signed(requests_mock):
    requests_mock.get(SHOW_URL, **ok())
    make_hook(
        {"security_token": SECURITY_TOKEN, "app_user_id": "third-party-user-7"}
    ).get_picture_modeling_job(JOB_ID)
    sent = requests_mock.last_request
    assert sent.headers["X-Security-Token"] == SECURITY_TOKEN
    assert sent.headers["X-App-UserId"] == "third-party-user-7"
    names = assert_signed(sent)
    assert "x-security-token" in names and "x-app-userid" in names


def test_a_retry_is_signed_afresh(requests_mock):
    clock = MovableClock()

    def advance(request, context):
        clock.now += timedelta(seconds=90)
        context.status_code = 500
        context.headers["X-Request-Id"] = "req-500"
        return {"error_code": "MSS.00000004", "error_msg": "Internal Error"}

    requests_mock.get(SHOW_URL, [{"json": advance}, ok()])
    make_hook(clock=clock).get_picture_modeling_job(JOB_ID)
    first, second = requests_mock.request_history
    assert_signed(first, sdk_date="20261124T093015Z")
    assert_signed(second, sdk_date="20261124T093145Z")
    assert first.headers["Authorization"] != second.headers["Authorization"]


# -- token and IAM password authentication ------------------------------------------------------------


def test_token_auth_sends_x_auth_token_and_no_signature(requests_mock):
    requests_mock.get(SHOW_URL, **ok())
    token_hook().get_picture_modeling_job(JOB_ID)
    sent = requests_mock.last_request
    assert sent.headers["X-Auth-Token"] == STATIC_TOKEN
    for header in ("Authorization", "X-Sdk-Date", "X-Sdk-Content-Sha256"):
        assert header not in sent.headers


def test_token_auth_401_is_final(requests_mock):
    requests_mock.get(SHOW_URL, **error(401, "APIGW.0301", "Incorrect IAM authentication information"))
    with pytest.raises(MetaStudioAuthError):
        token_hook().get_picture_modeling_job(JOB_ID)
    assert requests_mock.call_count == 1


def test_token_auth_with_app_user_id(requests_mock):
    requests_mock.get(SHOW_URL, **ok())
    make_hook(
        {"auth_type": "token", "app_user_id": "u-1"}, login=None, password=STATIC_TOKEN
    ).get_picture_modeling_job(JOB_ID)
    assert requests_mock.last_request.headers["X-App-UserId"] == "u-1"


def test_password_auth_gets_a_project_scoped_token(requests_mock):
    requests_mock.post(IAM_URL, **iam_ok(TOKEN_1))
    requests_mock.get(SHOW_URL, **ok())
    password_hook().get_picture_modeling_job(JOB_ID)
    (iam,) = requests_to(requests_mock, IAM_URL)
    assert iam.method == "POST"
    assert iam.headers["Content-Type"].startswith("application/json")
    assert iam.json() == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": IAM_USER, "password": IAM_PASSWORD, "domain": {"name": IAM_DOMAIN}}
                },
            },
            "scope": {"project": {"id": PROJECT_ID}},
        }
    }
    for header in ("Authorization", "X-Auth-Token"):
        assert header not in iam.headers
    (show,) = requests_to(requests_mock, SHOW_URL)
    assert show.headers["X-Auth-Token"] == TOKEN_1
    assert "Authorization" not in show.headers


def test_password_token_is_cached_across_hooks(requests_mock):
    iam = requests_mock.post(IAM_URL, [iam_ok(TOKEN_1), iam_ok(TOKEN_2)])
    requests_mock.get(SHOW_URL, **ok())
    password_hook().get_picture_modeling_job(JOB_ID)
    password_hook().get_picture_modeling_job(JOB_ID)
    assert iam.call_count == 1
    assert [r.headers["X-Auth-Token"] for r in requests_to(requests_mock, SHOW_URL)] == [TOKEN_1, TOKEN_1]


def test_password_token_is_not_shared_between_users(requests_mock):
    iam = requests_mock.post(IAM_URL, [iam_ok(TOKEN_1), iam_ok(TOKEN_2)])
    requests_mock.get(SHOW_URL, **ok())
    password_hook().get_picture_modeling_job(JOB_ID)
    password_hook(user="someone-else").get_picture_modeling_job(JOB_ID)
    assert iam.call_count == 2
    assert [r.headers["X-Auth-Token"] for r in requests_to(requests_mock, SHOW_URL)] == [TOKEN_1, TOKEN_2]


def test_password_token_is_renewed_shortly_before_expiry(requests_mock):
    iam = requests_mock.post(IAM_URL, [iam_ok(TOKEN_1), iam_ok(TOKEN_2, expires=NOW + timedelta(hours=48))])
    requests_mock.get(SHOW_URL, **ok())
    clock = MovableClock()
    hook = password_hook(clock=clock)
    hook.get_picture_modeling_job(JOB_ID)
    clock.now = TOKEN_EXPIRES - timedelta(minutes=5, seconds=1)  # the margin is 5 minutes for a 24 h token
    hook.get_picture_modeling_job(JOB_ID)
    assert iam.call_count == 1
    clock.now = TOKEN_EXPIRES - timedelta(minutes=5)
    hook.get_picture_modeling_job(JOB_ID)
    assert iam.call_count == 2
    assert [r.headers["X-Auth-Token"] for r in requests_to(requests_mock, SHOW_URL)] == [
        TOKEN_1,
        TOKEN_1,
        TOKEN_2,
    ]


def test_password_token_is_refreshed_once_after_a_401(requests_mock):
    iam = requests_mock.post(IAM_URL, [iam_ok(TOKEN_1), iam_ok(TOKEN_2)])
    show = requests_mock.get(SHOW_URL, [error(401, "APIGW.0301", "token revoked"), ok()])
    job = password_hook().get_picture_modeling_job(JOB_ID)
    assert job.job_id == JOB_ID
    assert iam.call_count == 2 and show.call_count == 2
    assert [r.headers["X-Auth-Token"] for r in requests_to(requests_mock, SHOW_URL)] == [TOKEN_1, TOKEN_2]


def test_password_second_401_is_final(requests_mock):
    iam = requests_mock.post(IAM_URL, [iam_ok(TOKEN_1), iam_ok(TOKEN_2), iam_ok("MIIthird-TOKENsecret")])
    show = requests_mock.get(SHOW_URL, **error(401, "APIGW.0301", "no", request_id="req-401"))
    with pytest.raises(MetaStudioAuthError) as exc:
        password_hook(retry_limit=5).get_picture_modeling_job(JOB_ID)
    assert exc.value.status == 401 and exc.value.request_id == "req-401"
    assert iam.call_count == 2 and show.call_count == 2


def test_password_wrong_credentials_are_sent_to_iam_once(requests_mock):
    # IAM locks accounts after repeated failed logins: a refused password must not be re-sent
    iam = requests_mock.post(IAM_URL, **error(401, "IAM.0004", "password wrong", request_id="iam-401"))
    with pytest.raises(MetaStudioAuthError) as exc:
        password_hook(retry_limit=3).get_picture_modeling_job(JOB_ID)
    assert exc.value.call == "iam" and exc.value.request_id == "iam-401"
    assert iam.call_count == 1
    assert requests_to(requests_mock, SHOW_URL) == []


def test_password_iam_server_errors_are_retried_only_by_the_token_request(requests_mock):
    iam = requests_mock.post(IAM_URL, **error(500, "IAM.0001", "internal"))
    with pytest.raises(MetaStudioServerError) as exc:
        password_hook(retry_limit=2).get_picture_modeling_job(JOB_ID)
    assert exc.value.call == "iam"
    assert iam.call_count == 3  # retry_limit + 1, not (retry_limit + 1) squared


def test_password_iam_answer_without_token_header(requests_mock):
    requests_mock.post(IAM_URL, status_code=201, json={"token": {}}, headers={"X-Request-Id": "iam-x"})
    with pytest.raises(MetaStudioInvalidResponseError, match="X-Subject-Token"):
        password_hook(retry_limit=0).get_picture_modeling_job(JOB_ID)


# -- error mapping -------------------------------------------------------------------------------


BIG_JOB = json.dumps(job_json(name="n" * MAX_RESPONSE_BYTES)).encode()
ERROR_CASES = {
    "400": (
        error(400, "MSS.00000003", "Invalid parameter", "rid-400"),
        MetaStudioBadRequestError,
        400,
        "MSS.00000003",
    ),
    "401 gateway": (
        error(401, "APIGW.0301", "Incorrect IAM authentication information", "rid-401"),
        MetaStudioAuthError,
        401,
        "APIGW.0301",
    ),
    "401 service": (
        error(401, "MSS.00000001", "Unauthorized", "rid-401s"),
        MetaStudioAuthError,
        401,
        "MSS.00000001",
    ),
    "403": (error(403, "MSS.00000005", "Forbidden", "rid-403"), MetaStudioAuthError, 403, "MSS.00000005"),
    "404": (
        error(404, "APIGW.0101", "The API does not exist", "rid-404"),
        MetaStudioNotFoundError,
        404,
        "APIGW.0101",
    ),
    "409": (
        error(409, "MSS.00000009", "Conflict", "rid-409"),
        MetaStudioBadRequestError,
        409,
        "MSS.00000009",
    ),
    "429": (
        error(
            429, "APIGW.0308", "The throttling threshold has been reached", "rid-429", {"Retry-After": "7"}
        ),
        MetaStudioThrottledError,
        429,
        "APIGW.0308",
    ),
    "500": (
        error(500, "MSS.00000004", "Internal Error", "rid-500"),
        MetaStudioServerError,
        500,
        "MSS.00000004",
    ),
    "503 json": (
        error(503, "APIGW.0201", "Backend unavailable", "rid-503"),
        MetaStudioServerError,
        503,
        "APIGW.0201",
    ),
    "502 html": (html_502("rid-502"), MetaStudioGatewayError, 502, None),
    "200 html": (
        {
            "status_code": 200,
            "text": "<html>login</html>",
            "headers": {"Content-Type": "text/html", "X-Request-Id": "rid-200h"},
        },
        MetaStudioInvalidResponseError,
        200,
        None,
    ),
    "200 empty": (
        {"status_code": 200, "content": b"", "headers": {"X-Request-Id": "rid-200e"}},
        MetaStudioInvalidResponseError,
        200,
        None,
    ),
    "200 too large": (  # valid JSON, a valid job even: only its size is wrong
        {"status_code": 200, "content": BIG_JOB, "headers": {"X-Request-Id": "rid-big"}},
        MetaStudioInvalidResponseError,
        200,
        None,
    ),
}


# Body shapes huaweicloudsdkcore's DefaultExceptionHandler reads: (body, error_code, error_msg).
ERROR_BODIES = {
    "snake": (
        {"error_code": "MSS.00000003", "error_msg": "Invalid parameter"},
        "MSS.00000003",
        "Invalid parameter",
    ),
    "camel": ({"errorCode": "MSS.00000005", "errorMsg": "Forbidden"}, "MSS.00000005", "Forbidden"),
    "code/message": ({"code": "APIGW.0308", "message": "throttled"}, "APIGW.0308", "throttled"),
    "nested code/message": (
        {"error": {"code": "IAM.0101", "message": "wrong password", "title": "Unauthorized"}},
        "IAM.0101",
        "wrong password",
    ),
    "nested snake": ({"error": {"error_code": "MSS.00000004", "error_msg": "boom"}}, "MSS.00000004", "boom"),
    "numeric code": ({"code": 40001, "message": "bad"}, "40001", "bad"),
    "code only": ({"error_code": "MSS.00000001"}, "MSS.00000001", None),
    "message only": ({"message": "Internal server error"}, None, "Internal server error"),
    "complete pair wins": (
        {"error_code": None, "code": "X.1", "message": "from code/message"},
        "X.1",
        "from code/message",
    ),
    "flat wins over nested": (
        {"error": {"code": "IAM.0101", "message": "nested"}, "error_code": "IAM.0101", "error_msg": "flat"},
        "IAM.0101",
        "flat",
    ),
}
ERROR_EXCEPTIONS = {
    400: MetaStudioBadRequestError,
    401: MetaStudioAuthError,
    403: MetaStudioAuthError,
    404: MetaStudioNotFoundError,
    409: MetaStudioBadRequestError,
    429: MetaStudioThrottledError,
    500: MetaStudioServerError,
    502: MetaStudioServerError,
    503: MetaStudioServerError,
    504: MetaStudioServerError,
}


@pytest.mark.parametrize("status", list(ERROR_EXCEPTIONS))
@pytest.mark.parametrize(("body", "code", "msg"), ERROR_BODIES.values(), ids=list(ERROR_BODIES))
def test_every_sdk_error_shape_keeps_code_and_message(requests_mock, status, body, code, msg):
    requests_mock.get(SHOW_URL, status_code=status, json=body, headers={"X-Request-Id": "rid-shape"})
    with pytest.raises(MetaStudioError) as exc:
        make_hook(retry_limit=0).get_picture_modeling_job(JOB_ID)
    assert type(exc.value) is ERROR_EXCEPTIONS[status]
    assert (exc.value.status, exc.value.error_code, exc.value.error_msg) == (status, code, msg)


def test_json_error_body_without_code_or_message_is_described(requests_mock):
    requests_mock.get(SHOW_URL, status_code=400, json={"detail": "?"}, headers={"X-Request-Id": "r"})
    with pytest.raises(MetaStudioBadRequestError) as exc:
        make_hook(retry_limit=0).get_picture_modeling_job(JOB_ID)
    assert exc.value.error_code is None
    assert exc.value.error_msg.startswith("JSON error body without a code or message")


@pytest.mark.parametrize(
    ("response", "exc_class", "status", "code"), ERROR_CASES.values(), ids=list(ERROR_CASES)
)
def test_error_mapping(requests_mock, response, exc_class, status, code):
    requests_mock.get(SHOW_URL, **response)
    with pytest.raises(MetaStudioError) as exc:
        make_hook(retry_limit=0).get_picture_modeling_job(JOB_ID)
    err = exc.value
    assert type(err) is exc_class
    request_id = response["headers"]["X-Request-Id"]
    message = str(err)
    assert f"HTTP {status}" in message
    assert f"X-Request-Id: {request_id}" in message
    assert (err.status, err.error_code, err.request_id, err.call) == (status, code, request_id, "show")
    if code:
        assert code in message
        assert err.error_msg == response["json"]["error_msg"]
    assert err.to_dict()["request_id"] == request_id
    assert requests_mock.call_count == 1


def test_401_gateway_message_explains_credentials_and_clock(requests_mock):
    requests_mock.get(SHOW_URL, **ERROR_CASES["401 gateway"][0])
    with pytest.raises(MetaStudioAuthError) as exc:
        make_hook(retry_limit=0).get_picture_modeling_job(JOB_ID)
    assert "clock" in str(exc.value) and "AK/SK" in str(exc.value) and "15 minutes" in str(exc.value)


def test_throttled_error_carries_retry_after(requests_mock):
    requests_mock.get(SHOW_URL, **ERROR_CASES["429"][0])
    with pytest.raises(MetaStudioThrottledError) as exc:
        make_hook(retry_limit=0).get_picture_modeling_job(JOB_ID)
    assert exc.value.retry_after == 7.0


def test_too_large_body_is_refused_by_size(requests_mock):
    requests_mock.get(SHOW_URL, content=BIG_JOB, headers={"X-Request-Id": "rid-big"})
    with pytest.raises(MetaStudioInvalidResponseError, match=f"larger than {MAX_RESPONSE_BYTES} bytes"):
        make_hook(retry_limit=0).get_picture_modeling_job(JOB_ID)


def test_long_error_messages_are_truncated(requests_mock):
    requests_mock.get(SHOW_URL, **error(400, "MSS.00000003", "x" * 5000))
    with pytest.raises(MetaStudioBadRequestError) as exc:
        make_hook(retry_limit=0).get_picture_modeling_job(JOB_ID)
    assert len(str(exc.value)) < 700


# -- retries -------------------------------------------------------------------------------------


READ_RETRIED = {
    "429": lambda: error(429, "APIGW.0308", "throttled"),
    "500": lambda: error(500, "MSS.00000004", "Internal Error"),
    "503": lambda: error(503, "APIGW.0201", "unavailable"),
    "502 html": html_502,
    "truncated json": lambda: {
        "status_code": 200,
        "text": '{"job_id": "f503',
        "headers": {"X-Request-Id": "r"},
    },
    "empty 200": lambda: {"status_code": 200, "content": b""},
    "connection refused": lambda: {"exc": refused()},
    "dns failure": lambda: {"exc": dns_failure()},
    "connect timeout": lambda: {"exc": connect_timeout()},
    "connection dropped": lambda: {"exc": dropped()},
    "read timeout": lambda: {"exc": read_timeout()},
}


@pytest.mark.parametrize("failure", READ_RETRIED.values(), ids=list(READ_RETRIED))
def test_reads_retry_then_succeed(requests_mock, sleeps, failure):
    requests_mock.get(SHOW_URL, [failure(), failure(), ok()])
    job = make_hook(retry_limit=2).get_picture_modeling_job(JOB_ID)
    assert job.job_id == JOB_ID
    assert requests_mock.call_count == 3
    assert sleeps == [0, 0]  # retry_delay=0: retried at once


@pytest.mark.parametrize("failure", READ_RETRIED.values(), ids=list(READ_RETRIED))
def test_list_retries_too(requests_mock, failure):
    requests_mock.get(LIST_URL, [failure(), {"json": {"count": 0, "picture_modeling_jobs": []}}])
    assert list(make_hook(retry_limit=1).list_picture_modeling_jobs()) == []
    assert requests_mock.call_count == 2


def test_retries_stop_after_retry_limit_plus_one_and_reraise_the_last_error(requests_mock, caplog):
    caplog.set_level(logging.WARNING, logger=TRANSPORT_LOGGER)
    requests_mock.get(
        SHOW_URL, [error(500, "MSS.00000004", "Internal Error", f"rid-{i}") for i in range(1, 6)]
    )
    with pytest.raises(MetaStudioServerError) as exc:
        make_hook(retry_limit=2).get_picture_modeling_job(JOB_ID)
    assert requests_mock.call_count == 3
    assert exc.value.request_id == "rid-3"
    warnings = _hook_records(caplog, logging.WARNING, TRANSPORT_LOGGER)
    assert len(warnings) == 2
    assert "attempt 2 of 3" in warnings[0] and "rid-1" in warnings[0]


def test_connection_errors_exhausted_raise_a_connection_error(requests_mock):
    requests_mock.get(SHOW_URL, [{"exc": refused()}, {"exc": refused()}])
    with pytest.raises(MetaStudioConnectionError) as exc:
        make_hook(retry_limit=1).get_picture_modeling_job(JOB_ID)
    assert exc.value.sent is False
    assert "could not connect" in str(exc.value) and "metastudio.example.test" in str(exc.value)
    assert requests_mock.call_count == 2


@pytest.mark.parametrize(
    "response",
    [
        error(400, "MSS.00000003", "bad"),
        error(401, "APIGW.0301", "bad signature"),
        error(403, "MSS.00000005", "Forbidden"),
        error(404, "MSS.00000003", "no such job"),
    ],
    ids=["400", "401", "403", "404"],
)
def test_final_4xx_is_not_retried(requests_mock, sleeps, response):
    requests_mock.get(SHOW_URL, [response, ok()])
    with pytest.raises(MetaStudioError):
        make_hook(retry_limit=5).get_picture_modeling_job(JOB_ID)
    assert requests_mock.call_count == 1
    assert sleeps == []


def test_retry_after_is_honoured(requests_mock, sleeps, caplog):
    caplog.set_level(logging.WARNING, logger=TRANSPORT_LOGGER)
    requests_mock.get(SHOW_URL, [error(429, "APIGW.0308", "throttled", headers={"Retry-After": "3"}), ok()])
    make_hook(retry_limit=2).get_picture_modeling_job(JOB_ID)
    assert sleeps == [3.0]
    assert "retrying in 3.0s" in _hook_records(caplog, logging.WARNING, TRANSPORT_LOGGER)[0]


def test_retry_after_is_capped_at_the_hooks_max_delay(requests_mock, sleeps):
    # A gateway that says "come back in an hour" must not hold a worker slot for an hour: the hook
    # waits at most retry_max_delay, then asks again (and fails after its retries if still refused).
    requests_mock.get(
        SHOW_URL, [error(429, "APIGW.0308", "throttled", headers={"Retry-After": "3600"}), ok()]
    )
    hook = make_hook(retry_limit=2)
    hook.retry_max_delay = 45.0
    hook.get_picture_modeling_job(JOB_ID)
    assert sleeps == [45.0]


def test_429s_have_their_own_limit_and_full_jitter_over_retry_after(requests_mock, sleeps, monkeypatch):
    # Processes throttled in the same second all read the same Retry-After: without jitter they come
    # back together and collide again. Each wait is Retry-After + uniform(0, retry_delay * 2^(n-1)).
    uniform = mock.Mock(side_effect=lambda low, high: high)  # the top of each range
    monkeypatch.setattr(transport_module.random, "uniform", uniform)
    throttled = error(429, "APIGW.0308", "throttled", headers={"Retry-After": "1"})
    requests_mock.get(SHOW_URL, [throttled] * 12 + [ok()])
    hook = MetaStudioHook(
        config=make_config(), retry_limit=2, throttle_retry_limit=12, retry_delay=0.5, retry_max_delay=10.0
    )
    hook.get_picture_modeling_job(JOB_ID)  # 12 429s pass although retry_limit is 2
    assert requests_mock.call_count == 13
    assert [c.args for c in uniform.call_args_list][:3] == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0)]
    assert sleeps == [1.5, 2.0, 3.0, 5.0, 9.0] + [10.0] * 7  # capped at retry_max_delay
    # One more 429 than the limit fails; other failures still count against retry_limit only.
    requests_mock.get(SHOW_URL, [throttled] * 13 + [ok()])
    with pytest.raises(MetaStudioThrottledError):
        hook.get_picture_modeling_job(JOB_ID)
    requests_mock.get(SHOW_URL, [throttled] * 5 + [error(500, "MSS.00000004", "boom")] * 3 + [ok()])
    with pytest.raises(MetaStudioServerError):
        hook.get_picture_modeling_job(JOB_ID)
    assert requests_mock.call_count == 13 + 13 + 8  # 5 429s, then 1 + 2 retries of the 500


def test_retry_after_as_http_date_is_honoured(requests_mock, sleeps):
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    requests_mock.get(
        SHOW_URL,
        [
            error(
                429,
                "APIGW.0308",
                "throttled",
                headers={"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")},
            ),
            ok(),
        ],
    )
    make_hook(retry_limit=1).get_picture_modeling_job(JOB_ID)
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 30


# -- creates are never duplicated -------------------------------------------------------------------


def _create_photo(hook):
    return hook.create_picture_modeling_job(photo=png_bytes(), style_id=STYLE_ID, name="m")


def _create_by_url(hook):
    return hook.create_picture_modeling_job_by_url(
        picture_url="https://cdn.example.com/a.png", style_id=STYLE_ID, name="m"
    )


CREATES = {"photo": (CREATE_URL, _create_photo), "by-url": (CREATE_BY_URL_URL, _create_by_url)}

CREATE_RETRIED = {
    "429": lambda: error(429, "APIGW.0308", "throttled"),
    "connection refused": lambda: {"exc": refused()},
    "dns failure": lambda: {"exc": dns_failure()},
    "connect timeout": lambda: {"exc": connect_timeout()},
}

CREATE_NOT_RETRIED = {
    "500": (lambda: error(500, "MSS.00000004", "Internal Error"), MetaStudioServerError),
    "503": (lambda: error(503, "APIGW.0201", "unavailable"), MetaStudioServerError),
    "502 html": (html_502, MetaStudioGatewayError),
    "truncated 200": (lambda: {"status_code": 200, "text": '{"job_id": "ab'}, MetaStudioInvalidResponseError),
    "read timeout": (lambda: {"exc": read_timeout()}, MetaStudioConnectionError),
    "connection dropped": (lambda: {"exc": dropped()}, MetaStudioConnectionError),
}


@pytest.mark.parametrize("create", CREATES.values(), ids=list(CREATES))
@pytest.mark.parametrize("failure", CREATE_RETRIED.values(), ids=list(CREATE_RETRIED))
def test_create_is_retried_when_the_service_did_not_take_it(requests_mock, create, failure):
    url, call = create
    requests_mock.post(url, [failure(), ok(CREATED)])
    assert call(make_hook(retry_limit=3)).job_id == CREATED["job_id"]
    assert len(requests_to(requests_mock, url, "POST")) == 2


@pytest.mark.parametrize("create", CREATES.values(), ids=list(CREATES))
@pytest.mark.parametrize(("failure", "exc_class"), CREATE_NOT_RETRIED.values(), ids=list(CREATE_NOT_RETRIED))
def test_create_is_never_duplicated_after_an_ambiguous_failure(requests_mock, create, failure, exc_class):
    url, call = create
    requests_mock.post(url, [failure(), ok(CREATED)])
    with pytest.raises(exc_class) as exc:
        call(make_hook(retry_limit=5))
    assert len(requests_to(requests_mock, url, "POST")) == 1
    if isinstance(exc.value, MetaStudioConnectionError):
        assert exc.value.sent is True
        assert "after the request was sent" in str(exc.value)


def test_create_throttled_to_the_end_raises_throttled(requests_mock):
    requests_mock.post(CREATE_URL, **error(429, "APIGW.0308", "throttled"))
    with pytest.raises(MetaStudioThrottledError):
        _create_photo(make_hook(retry_limit=2))
    assert requests_mock.call_count == 3


# -- client-side quota ----------------------------------------------------------------------------


def test_rate_limits_off_means_no_waiting(requests_mock, sleeps):
    requests_mock.get(SHOW_URL, **ok())
    hook = make_hook(rate_limits=False)
    for _ in range(3):
        hook.get_picture_modeling_job(JOB_ID)
    assert sleeps == []


def _seed_limiter(fake, call="show", rate=1.0):
    limiter = RateLimiter(rate, clock=fake.monotonic)
    ratelimit._LIMITERS[(ENDPOINT, PROJECT_ID, call, rate)] = limiter
    return limiter


def test_hooks_of_one_tenant_share_the_quota(requests_mock, monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(time, "sleep", fake.sleep)
    _seed_limiter(fake)
    requests_mock.get(SHOW_URL, **ok())
    make_hook(rate_limits=None).get_picture_modeling_job(JOB_ID)
    make_hook(rate_limits=None).get_picture_modeling_job(JOB_ID)
    assert fake.slept == [0.0, 1.0]


def test_hook_creates_the_process_wide_limiter(requests_mock):
    requests_mock.get(SHOW_URL, **ok())
    requests_mock.post(CREATE_BY_URL_URL, **ok(CREATED))
    hook = make_hook(rate_limits={"show": 4})
    hook.get_picture_modeling_job(JOB_ID)
    _create_by_url(hook)
    assert set(ratelimit._LIMITERS) == {
        (ENDPOINT, PROJECT_ID, "show", 4.0),
        (ENDPOINT, PROJECT_ID, "create_by_url", 2.0),
    }


def test_retry_after_holds_back_the_whole_process(requests_mock, monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(time, "sleep", fake.sleep)
    _seed_limiter(fake)
    requests_mock.get(
        SHOW_URL, [error(429, "APIGW.0308", "throttled", headers={"Retry-After": "3"}), ok(), ok()]
    )
    hook = make_hook(rate_limits=None)
    hook.get_picture_modeling_job(JOB_ID)
    # the quota slot (0), the Retry-After (3), then the limiter already agrees (0)
    assert fake.slept == pytest.approx([0.0, 3.0, 0.0])
    make_hook(rate_limits=None).get_picture_modeling_job(JOB_ID)
    assert fake.slept[-1] == pytest.approx(1.0)


# -- secrets ---------------------------------------------------------------------------------------


def _assert_no_secret(*texts):
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"secret leaked: {text[:200]!r}"


def test_aksk_secrets_never_leak(requests_mock, caplog, masked):
    caplog.set_level(logging.DEBUG)
    hook = make_hook({"security_token": SECURITY_TOKEN})
    assert mock.call(SK) in masked.call_args_list and mock.call(SECURITY_TOKEN) in masked.call_args_list
    requests_mock.get(
        SHOW_URL,
        [error(500, "MSS.00000004", "Internal Error"), {"exc": dropped()}, error(401, "APIGW.0301", "bad")],
    )
    with pytest.raises(MetaStudioAuthError) as exc:
        hook.get_picture_modeling_job(JOB_ID)
    requests_mock.get(SHOW_URL, [{"exc": refused()}] * 3)
    with pytest.raises(MetaStudioConnectionError) as conn_exc:
        hook.get_picture_modeling_job(JOB_ID)
    requests_mock.get(LIST_URL, **error(403, "MSS.00000005", "Forbidden"))
    _assert_no_secret(
        str(exc.value),
        repr(exc.value),
        json.dumps(exc.value.to_dict()),
        str(conn_exc.value),
        caplog.text,
        repr(hook.config),
        repr(hook.signer),
        repr(hook),
        hook.test_connection()[1],
    )
    assert (
        requests_mock.last_request.headers["X-Security-Token"] == SECURITY_TOKEN
    )  # it was used, just not shown


def test_token_secret_never_leaks(requests_mock, caplog, masked):
    caplog.set_level(logging.DEBUG)
    hook = token_hook(retry_limit=0)
    masked.assert_any_call(STATIC_TOKEN)
    requests_mock.get(SHOW_URL, **error(401, "APIGW.0301", "token expired"))
    with pytest.raises(MetaStudioAuthError) as exc:
        hook.get_picture_modeling_job(JOB_ID)
    _assert_no_secret(str(exc.value), caplog.text, repr(hook.config))


def test_password_flow_secrets_never_leak(requests_mock, caplog, masked):
    caplog.set_level(logging.DEBUG)
    requests_mock.post(IAM_URL, [iam_ok(TOKEN_1), iam_ok(TOKEN_2)])
    requests_mock.get(SHOW_URL, **error(401, "APIGW.0301", "bad token"))
    hook = password_hook()
    masked.assert_any_call(IAM_PASSWORD)
    with pytest.raises(MetaStudioAuthError) as exc:
        hook.get_picture_modeling_job(JOB_ID)
    masked.assert_any_call(TOKEN_1)
    masked.assert_any_call(TOKEN_2)
    # the IAM request (whose body holds the password) can end up in a traceback with locals
    _assert_no_secret(str(exc.value), caplog.text, repr(hook.config), repr(hook.transport._iam_call()))


def test_iam_failure_does_not_echo_the_password(requests_mock, caplog):
    caplog.set_level(logging.DEBUG)
    requests_mock.post(
        IAM_URL, [error(500, "IAM.0001", "internal"), {"exc": dropped()}, error(401, "IAM.0004", "wrong")]
    )
    with pytest.raises(MetaStudioAuthError) as exc:
        password_hook(retry_limit=2).get_picture_modeling_job(JOB_ID)
    _assert_no_secret(str(exc.value), caplog.text)


def test_connection_lookup_masks_the_password(monkeypatch, masked):
    monkeypatch.setenv(
        "AIRFLOW_CONN_METASTUDIO_DEFAULT",
        json.dumps(
            {"conn_type": "metastudio", "login": AK, "password": SK, "extra": {"project_id": PROJECT_ID}}
        ),
    )
    assert MetaStudioHook().config.sk == SK
    masked.assert_any_call(SK)


# -- the real connection lookup ------------------------------------------------------------------------


def test_connection_from_json_env_var(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_METASTUDIO_DEFAULT",
        json.dumps(
            {
                "conn_type": "metastudio",
                "host": ENDPOINT,
                "login": AK,
                "password": SK,
                "extra": {
                    "project_id": PROJECT_ID,
                    "rate_limits": False,
                    "app_user_id": "u-9",
                },
            }
        ),
    )
    requests_mock.get(SHOW_URL, **ok())
    hook = MetaStudioHook(retry_limit=0, clock=fixed_clock)
    assert hook.get_picture_modeling_job(JOB_ID).job_id == JOB_ID
    assert (hook.config.ak, hook.config.endpoint, hook.config.app_user_id) == (AK, ENDPOINT, "u-9")
    assert_signed(requests_mock.last_request)


def test_connection_from_uri_env_var_with_host_port_and_schema(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_METASTUDIO_DEFAULT",
        f"metastudio://{quote(AK, safe='')}:{quote(SK, safe='')}@{HOST}/https?project_id={PROJECT_ID}"
        "&rate_limits=false&timeout=7",
    )
    requests_mock.get(SHOW_URL, **ok())
    hook = MetaStudioHook(retry_limit=0, clock=fixed_clock)
    hook.get_picture_modeling_job(JOB_ID)
    assert (hook.config.sk, hook.config.endpoint, hook.config.timeout, hook.config.rate_limits) == (
        SK,
        ENDPOINT,
        (7.0, 7.0),
        None,
    )
    assert_signed(requests_mock.last_request)


def test_connection_with_another_id(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MY_METASTUDIO",
        json.dumps(
            {"conn_type": "metastudio", "login": AK, "password": SK, "extra": {"project_id": "other-project"}}
        ),
    )
    hook = MetaStudioHook("my_metastudio")
    assert hook.config.project_id == "other-project"
    assert hook.config.endpoint == "https://metastudio.cn-north-4.myhuaweicloud.com"


def test_connection_from_sdk_environment_variables(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_METASTUDIO_DEFAULT", f"metastudio://@/?project_id={PROJECT_ID}")
    monkeypatch.setenv("CLOUD_SDK_AK", AK)
    monkeypatch.setenv("CLOUD_SDK_SK", SK)
    assert (MetaStudioHook().config.ak, MetaStudioHook().config.sk) == (AK, SK)


def test_session_is_reused_and_configured(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    hook = make_hook({"verify": str(bundle)})
    session = hook.get_conn()
    assert hook.get_conn() is session
    assert session.verify == str(bundle)
    assert session.headers["User-Agent"].startswith("airflow-provider-metastudio/")
    hook.close()
    assert hook.get_conn() is not session


def test_proxy_and_ca_bundle_variables_are_honoured_and_read_once(requests_mock, monkeypatch, tmp_path):
    # The sync path bypasses Session.request() (which re-reads the environment on every call), so it
    # must still apply what request() would: HTTPS_PROXY / NO_PROXY and REQUESTS_CA_BUNDLE.
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("x")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.test:3128")
    monkeypatch.setenv("NO_PROXY", "obs.example.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    requests_mock.get(SHOW_URL, **ok())
    requests_mock.get("https://obs.example.test/cover.png", content=b"png")
    hook = make_hook()
    hook.get_picture_modeling_job(JOB_ID)
    hook.download_cover("https://obs.example.test/cover.png", io.BytesIO())
    api, cover = requests_mock.request_history
    assert api.proxies["https"] == "http://proxy.corp.test:3128"
    assert api.verify == str(bundle)
    assert "https" not in cover.proxies  # NO_PROXY
    # Read once per host for the hook's life: a later change of the environment is not seen ...
    monkeypatch.setenv("HTTPS_PROXY", "http://other-proxy.corp.test:3128")
    hook.get_picture_modeling_job(JOB_ID)
    assert requests_mock.last_request.proxies["https"] == "http://proxy.corp.test:3128"
    # ... until the hook is closed.
    hook.close()
    hook.get_picture_modeling_job(JOB_ID)
    assert requests_mock.last_request.proxies["https"] == "http://other-proxy.corp.test:3128"


def test_connection_verify_false_wins_over_ca_bundle_variable(requests_mock, monkeypatch, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "corp-ca.pem"))
    requests_mock.get(SHOW_URL, **ok())
    make_hook({"verify": False}).get_picture_modeling_job(JOB_ID)
    assert requests_mock.last_request.verify is False


# -- test_connection -----------------------------------------------------------------------------------


def test_test_connection_ok(requests_mock):
    requests_mock.get(
        LIST_URL, json={"count": 12, "picture_modeling_jobs": [job_json()]}, headers={"X-Request-Id": "r"}
    )
    ok_, message = make_hook().test_connection()
    assert ok_ is True
    assert PROJECT_ID in message and "12" in message
    assert urlsplit(requests_mock.last_request.url).query == "limit=1&offset=0"


def test_test_connection_401(requests_mock):
    requests_mock.get(
        LIST_URL, **error(401, "APIGW.0301", "Incorrect IAM authentication information", "rid-tc-401")
    )
    ok_, message = make_hook().test_connection()
    assert ok_ is False
    assert "401" in message and "APIGW.0301" in message and "rid-tc-401" in message
    assert requests_mock.call_count == 1


def test_test_connection_never_raises_on_connection_errors(requests_mock):
    requests_mock.get(LIST_URL, [{"exc": refused()}] * 3)
    ok_, message = make_hook(retry_limit=2).test_connection()
    assert ok_ is False and "could not connect" in message


def test_test_connection_never_raises_on_an_unexpected_error(requests_mock, monkeypatch):
    monkeypatch.setattr(transport_module.Transport, "request", mock.Mock(side_effect=RuntimeError("boom")))
    assert make_hook().test_connection() == (False, "RuntimeError: boom")


def test_test_connection_never_raises_on_a_bad_connection(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_METASTUDIO_DEFAULT",
        json.dumps({"conn_type": "metastudio", "login": AK, "password": SK}),
    )
    ok_, message = MetaStudioHook().test_connection()
    assert ok_ is False and "project_id" in message
    assert requests_mock.call_count == 0


def test_test_connection_never_raises_on_a_missing_connection(requests_mock):
    ok_, message = MetaStudioHook("metastudio_does_not_exist").test_connection()
    assert ok_ is False and "metastudio_does_not_exist" in message


# -- registry and connection form ---------------------------------------------------------------------------


def test_provider_info_matches_airflow_schema():
    import airflow
    import jsonschema

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-metastudio"
    assert info["versions"] == [__version__]


def test_provider_info_points_at_real_code():
    info = get_provider_info()
    (conn_type,) = info["connection-types"]
    module_name, _, class_name = conn_type["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module_name), class_name) is MetaStudioHook
    assert conn_type["connection-type"] == MetaStudioHook.conn_type == "metastudio"
    assert conn_type["hook-name"] == MetaStudioHook.hook_name
    for kind in ("hooks", "triggers", "sensors", "operators"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for link in info["extra-links"]:
        module_name, _, class_name = link.rpartition(".")
        assert hasattr(importlib.import_module(module_name), class_name)


def test_conn_fields_are_valid_json_schemas():
    import jsonschema

    for name, spec in CONN_FIELDS.items():
        jsonschema.Draft7Validator.check_schema(spec["schema"])
        assert spec["label"] and spec["description"], name
    project = jsonschema.Draft7Validator(CONN_FIELDS["project_id"]["schema"])
    assert project.is_valid(PROJECT_ID) and not project.is_valid("../x")


def test_ui_field_behaviour_matches_the_provider_info():
    behaviour = MetaStudioHook.get_ui_field_behaviour()
    (conn_type,) = get_provider_info()["connection-types"]
    registered = conn_type["ui-field-behaviour"]
    assert behaviour["hidden_fields"] == registered["hidden-fields"] == UI_FIELD_BEHAVIOUR["hidden-fields"]
    assert behaviour["relabeling"] == registered["relabeling"]
    assert behaviour["placeholders"] == registered["placeholders"]
    # Host/Port/Schema are the destination (stored secrets go only there): the form must show them.
    assert not {"host", "port", "schema"} & set(behaviour["hidden_fields"])
    assert "login" in behaviour["relabeling"] and "password" in behaviour["relabeling"]


def test_connection_form_widgets():
    pytest.importorskip("wtforms")
    pytest.importorskip("flask_appbuilder")
    pytest.importorskip("flask_babel")
    from wtforms import PasswordField, StringField

    widgets = MetaStudioHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    assert widgets["security_token"].field_class is PasswordField
    assert widgets["project_id"].field_class is StringField
    for name, field in widgets.items():
        assert field.kwargs["description"] == CONN_FIELDS[name]["description"]
    assert widgets["region"].kwargs["default"] == "cn-north-4"
