"""Shared by the hook, transport, auth and answer unit tests: a MetaStudio tenant on requests-mock.

Constants, canned answers and failures, and the fixtures every such test needs (a clean token
cache and rate limiters, recorded sleeps, a spy on the secrets masker).
"""

from __future__ import annotations

import http.client
import json
import re
import time
from datetime import datetime, timedelta, timezone
from unittest import mock
from urllib.parse import urlsplit

import pytest
import requests
import urllib3.exceptions
from urllib3.connection import HTTPConnection

import airflow_provider_metastudio.hooks.metastudio as hook_module
import airflow_provider_metastudio.transport as transport_module
from airflow_provider_metastudio import auth, ratelimit
from airflow_provider_metastudio.auth import canonical_request, payload_hash, sign, string_to_sign
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.hooks.metastudio import (
    MetaStudioHook,
)
from testsupport import DATA

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
RETRY_LOGGER = "airflow_provider_metastudio.retry"  # the line before each retry


# -- helpers -------------------------------------------------------------------------------------


def fixed_clock() -> datetime:
    return NOW


class MovableClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_config(extra=None, *, login=AK, password=SK, rate_limits=False):
    # The host-wide quota file is off: it paces on the real clock and is shared by every test run
    # on this host (tests/unit/test_hostquota.py tests it).
    base = {"project_id": PROJECT_ID, "host_quota": False}
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


def log_messages(caplog, level, logger=HOOK_LOGGER):
    """The messages ``logger`` logged at exactly ``level``."""
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


# -- fixtures: import the *_fixture functions into a test module to use them ---------------------


@pytest.fixture(name="clean_process_state", autouse=True)
def clean_process_state_fixture(monkeypatch):
    auth._TOKEN_CACHE.clear()
    monkeypatch.setattr(ratelimit, "_LIMITERS", {})
    for name in ("AIRFLOW_CONN_METASTUDIO_DEFAULT", "CLOUD_SDK_AK", "CLOUD_SDK_SK"):
        monkeypatch.delenv(name, raising=False)
    yield
    auth._TOKEN_CACHE.clear()


@pytest.fixture(name="sleeps", autouse=True)
def sleeps_fixture(monkeypatch):
    """Every time.sleep (tenacity's waits, the rate limiter) is recorded, never slept."""
    recorded: list[float] = []
    monkeypatch.setattr(time, "sleep", recorded.append)
    return recorded


@pytest.fixture(name="masked")
def masked_fixture(monkeypatch):
    spy = mock.Mock()
    monkeypatch.setattr(hook_module, "mask_secret", spy)  # the connection's secrets
    monkeypatch.setattr(transport_module, "mask_secret", spy)  # IAM tokens, signed URLs
    return spy
