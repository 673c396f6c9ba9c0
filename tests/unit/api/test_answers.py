"""Answers mapped to typed errors (parse_response, read like the official SDK), through the hook."""

from __future__ import annotations

import asyncio
import json

import pytest
from testsupport.hook_http import (  # noqa: F401  (pytest fixtures)
    JOB_ID,
    SHOW_URL,
    clean_process_state_fixture,
    error,
    html_502,
    job_json,
    make_hook,
    sleeps_fixture,
)

from airflow_provider_metastudio.api import (
    ApiResponse,
    aiterate_pages,
    iterate_pages,
    parse_page,
    parse_response,
    parse_show,
)
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioBadRequestError,
    MetaStudioError,
    MetaStudioGatewayError,
    MetaStudioInvalidResponseError,
    MetaStudioNotFoundError,
    MetaStudioServerError,
    MetaStudioThrottledError,
)
from airflow_provider_metastudio.transport import MAX_RESPONSE_BYTES

pytestmark = pytest.mark.airflow_independent  # runs on the newest Airflow line only

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


# -- answers without a transport ---------------------------------------------------------------------------


def test_parse_response_reads_data_and_request_id():
    resp = parse_response("show", 200, {"X-Request-Id": "rid-9"}, b'{"a": 1}')
    assert (resp.status, resp.data, resp.request_id) == (200, {"a": 1}, "rid-9")


def test_parse_show_gives_the_job_its_request_id_outside_equality():
    data = job_json()
    one = parse_show(ApiResponse(200, data, "rid-1", {}), data["job_id"])
    two = parse_show(ApiResponse(200, data, "rid-2", {}), data["job_id"])
    assert (one.request_id, two.request_id) == ("rid-1", "rid-2")
    assert one == two and hash(one) == hash(two)


def test_parse_page_gives_every_job_the_page_request_id():
    page = parse_page(
        ApiResponse(200, {"count": 2, "picture_modeling_jobs": [job_json()]}, "rid-p", {}), 0, 1
    )
    assert page.total == 2 and page.request_id == "rid-p"
    assert [job.request_id for job in page.jobs] == ["rid-p"]


def test_iterate_pages_follows_offsets_and_stops_on_an_empty_page():
    asked = []

    def fetch(offset):
        asked.append(offset)
        return {0: (5, [1, 2]), 2: (5, [3]), 3: (5, [])}[offset]

    assert list(iterate_pages(fetch)) == [1, 2, 3]
    assert asked == [0, 2, 3]


def test_aiterate_pages_is_the_same_loop():
    async def fetch(offset):
        return {0: (3, ["a", "b"]), 2: (3, ["c"])}[offset]

    async def collect():
        return [item async for item in aiterate_pages(fetch)]

    assert asyncio.run(collect()) == ["a", "b", "c"]
