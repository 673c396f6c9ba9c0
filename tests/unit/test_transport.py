"""The sync transport on the wire: signing, the client-side quota, the session and routes."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from testsupport.hook_http import (  # noqa: F401  (pytest fixtures)
    CREATE_BY_URL_URL,
    CREATED,
    ENDPOINT,
    JOB_ID,
    PROJECT_ID,
    SECURITY_TOKEN,
    SHOW_URL,
    STYLE_ID,
    FakeTime,
    MovableClock,
    assert_signed,
    clean_process_state_fixture,
    error,
    make_hook,
    ok,
    sleeps_fixture,
)

import airflow_provider_metastudio.retry as retry_module
from airflow_provider_metastudio import ratelimit
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
    hook.create_picture_modeling_job_by_url(
        picture_url="https://cdn.example.com/a.png", style_id=STYLE_ID, name="m"
    )
    assert set(ratelimit._LIMITERS) == {
        (ENDPOINT, PROJECT_ID, "show", 4.0),
        (ENDPOINT, PROJECT_ID, "create_by_url", 2.0),
    }


def test_retry_after_holds_back_the_whole_process(requests_mock, monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(time, "sleep", fake.sleep)
    monkeypatch.setattr(retry_module.random, "uniform", lambda low, high: low)  # no jitter
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
