"""The signer against the vectors produced with the official SDK (tests/data/aksk_signing_vectors.json)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import requests
from testsupport import DATA
from testsupport.hook_http import (  # noqa: F401  (pytest fixtures)
    IAM_DOMAIN,
    IAM_PASSWORD,
    IAM_URL,
    IAM_USER,
    JOB_ID,
    NOW,
    PROJECT_ID,
    SHOW_URL,
    STATIC_TOKEN,
    TOKEN_1,
    TOKEN_2,
    TOKEN_EXPIRES,
    MovableClock,
    clean_process_state_fixture,
    error,
    iam_ok,
    make_hook,
    ok,
    password_hook,
    requests_to,
    sleeps_fixture,
    token_hook,
)

from airflow_provider_metastudio.auth import (
    AkSkSigner,
    HttpxAkSkAuth,
    RequestsAkSkAuth,
    canonical_query,
    canonical_request,
    canonicalize_url,
    payload_hash,
    string_to_sign,
)
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioInvalidResponseError,
    MetaStudioServerError,
)

pytestmark = pytest.mark.airflow_independent  # runs on the newest Airflow line only

VECTORS = json.loads((DATA / "aksk_signing_vectors.json").read_text())["vectors"]
SIGNER_VECTORS = [v for v in VECTORS if v["kind"] == "signer"]
WIRE_VECTORS = [v for v in VECTORS if v["kind"] == "wire"]


def _body(raw):
    if raw is None:
        return None
    if isinstance(raw, dict):
        return base64.b64decode(raw["base64"])
    return raw.encode()


def _date(value: str) -> datetime:
    return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def test_vector_file_has_all_kinds():
    assert len(SIGNER_VECTORS) >= 10
    assert len(WIRE_VECTORS) == 4


@pytest.mark.parametrize("vec", SIGNER_VECTORS, ids=[v["name"] for v in SIGNER_VECTORS])
def test_pure_functions_reproduce_signer_vectors(vec):
    exp = vec["expected"]
    headers = dict(vec["headers"])
    headers.update(exp["extra_headers_added"])
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    canonical, signed = canonical_request(
        vec["method"],
        vec["path"],
        canonical_query(vec["query"]),
        headers,
        payload_hash(_body(vec["body"]), content_type),
    )
    assert signed == exp["signed_headers"]
    assert canonical == exp["canonical_request"]
    assert string_to_sign(canonical, headers["X-Sdk-Date"]) == exp["string_to_sign"]


@pytest.mark.parametrize("vec", SIGNER_VECTORS, ids=[v["name"] for v in SIGNER_VECTORS])
def test_signer_reproduces_authorization_and_uri_sent(vec):
    exp = vec["expected"]
    headers = {k: v for k, v in vec["headers"].items() if k != "X-Sdk-Date"}
    signer = AkSkSigner(vec["ak"], vec["sk"], clock=lambda: _date(vec["headers"]["X-Sdk-Date"]))
    query = canonical_query(vec["query"])
    url = f"https://{vec['host']}{vec['path']}" + (f"?{query}" if query else "")
    out = signer.sign_request(vec["method"], url, headers, _body(vec["body"]))
    assert out["Authorization"] == exp["authorization"]
    for name, value in exp["extra_headers_added"].items():
        assert out[name] == value
    parts = httpx.URL(url)
    sent = parts.raw_path.decode()
    assert sent.replace("%20", " ") == exp["uri_sent"].replace("%20", " ")


@pytest.mark.parametrize("vec", WIRE_VECTORS, ids=[v["raw_path"][-40:] for v in WIRE_VECTORS])
def test_wire_requests_of_the_official_client(vec):
    headers = dict(vec["headers"])
    auth = headers.pop("Authorization")
    signed_names = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    to_sign = {k: v for k, v in headers.items() if k.lower() in signed_names and k.lower() != "x-sdk-date"}
    signer = AkSkSigner(vec["ak"], vec["sk"], clock=lambda: _date(headers["X-Sdk-Date"]))
    url = f"http://{vec['host_signed']}{vec['raw_path']}"
    assert canonicalize_url(url) == url  # the official client already sends the canonical query
    out = signer.sign_request(vec["method"], url, to_sign, base64.b64decode(vec["body_base64"]))
    assert out["Authorization"] == vec["expected_authorization"]


def test_requests_auth_signs_the_prepared_request_and_canonicalizes_query():
    vec = next(v for v in SIGNER_VECTORS if v["name"] == "list jobs with filters")
    signer = AkSkSigner(vec["ak"], vec["sk"], clock=lambda: _date("20261124T093015Z"))
    req = requests.Request(
        "GET",
        f"https://{vec['host']}{vec['path']}",
        # deliberately unsorted and not percent-encoded: the auth must rewrite it
        params=[
            ("state", "WAITING,PROCESSING"),
            ("offset", 0),
            ("sort_key", "update_time"),
            ("limit", 100),
            ("sort_dir", "desc"),
            ("create_since", "2026-11-24T00:00:00Z"),
        ],
        headers={"Content-Type": "application/json", "X-Project-Id": "0d697589d98091f12f92c0073501cd79"},
    ).prepare()
    RequestsAkSkAuth(signer)(req)
    assert req.path_url == vec["expected"]["uri_sent"]
    assert req.headers["Authorization"] == vec["expected"]["authorization"]
    assert req.headers["Host"] == vec["host"]


def test_httpx_auth_signs_the_same_way():
    vec = next(v for v in SIGNER_VECTORS if v["name"] == "create by URL (JSON body)")
    signer = AkSkSigner(vec["ak"], vec["sk"], clock=lambda: _date("20261124T093015Z"))
    request = httpx.Request(
        "POST",
        f"https://{vec['host']}{vec['path']}",
        content=vec["body"].encode(),
        headers={
            "Content-Type": "application/json;charset=UTF-8",
            "X-Project-Id": "0d697589d98091f12f92c0073501cd79",
        },
    )
    flow = HttpxAkSkAuth(signer).sync_auth_flow(request)
    signed = next(flow)
    assert signed.headers["Authorization"] == vec["expected"]["authorization"]


def test_resigning_replaces_a_stale_signature():
    times = iter([_date("20261124T093015Z"), _date("20261124T093115Z")])
    signer = AkSkSigner("AK", "SK", project_id="p", clock=lambda: next(times))
    first = signer.sign_request("GET", "https://h/x", {}, None)
    second = signer.sign_request("GET", "https://h/x", first, None)
    assert second["X-Sdk-Date"] == "20261124T093115Z"
    assert second["Authorization"] != first["Authorization"]
    assert list(second).count("Authorization") == 1


def test_secret_key_is_not_in_repr():
    signer = AkSkSigner("AKVALUE", "SKVALUE-secret", security_token="TOKVALUE")
    assert "SKVALUE" not in repr(signer) and "TOKVALUE" not in repr(signer)


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
