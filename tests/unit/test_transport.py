"""The sync transport on the wire: signing, retries, creates never duplicated, the quota, routes."""

from __future__ import annotations

import io
import logging
import time
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from testsupport.hook_http import (  # noqa: F401  (pytest fixtures)
    CREATE_BY_URL_URL,
    CREATE_URL,
    CREATED,
    ENDPOINT,
    JOB_ID,
    LIST_URL,
    PROJECT_ID,
    SECURITY_TOKEN,
    SHOW_URL,
    STYLE_ID,
    TRANSPORT_LOGGER,
    FakeTime,
    MovableClock,
    assert_signed,
    clean_process_state_fixture,
    connect_timeout,
    dns_failure,
    dropped,
    error,
    html_502,
    log_messages,
    make_config,
    make_hook,
    ok,
    png_bytes,
    read_timeout,
    refused,
    requests_to,
    sleeps_fixture,
)

import airflow_provider_metastudio.transport as transport_module
from airflow_provider_metastudio import ratelimit
from airflow_provider_metastudio.exceptions import (
    MetaStudioConnectionError,
    MetaStudioError,
    MetaStudioGatewayError,
    MetaStudioInvalidResponseError,
    MetaStudioServerError,
    MetaStudioThrottledError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.ratelimit import RateLimiter

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
    warnings = log_messages(caplog, logging.WARNING, TRANSPORT_LOGGER)
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
    assert "retrying in 3.0s" in log_messages(caplog, logging.WARNING, TRANSPORT_LOGGER)[0]


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
