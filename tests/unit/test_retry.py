"""The retry policy on the wire: what is retried, how long it waits, and creates never duplicated."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from testsupport import png_header
from testsupport.hook_http import (  # noqa: F401  (pytest fixtures)
    CREATE_BY_URL_URL,
    CREATE_URL,
    CREATED,
    JOB_ID,
    LIST_URL,
    RETRY_LOGGER,
    SHOW_URL,
    STYLE_ID,
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
    read_timeout,
    refused,
    requests_to,
    sleeps_fixture,
)

import airflow_provider_metastudio.retry as retry_module
from airflow_provider_metastudio.exceptions import (
    MetaStudioConnectionError,
    MetaStudioError,
    MetaStudioGatewayError,
    MetaStudioInvalidResponseError,
    MetaStudioServerError,
    MetaStudioThrottledError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook

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
    caplog.set_level(logging.WARNING, logger=RETRY_LOGGER)
    requests_mock.get(
        SHOW_URL, [error(500, "MSS.00000004", "Internal Error", f"rid-{i}") for i in range(1, 6)]
    )
    with pytest.raises(MetaStudioServerError) as exc:
        make_hook(retry_limit=2).get_picture_modeling_job(JOB_ID)
    assert requests_mock.call_count == 3
    assert exc.value.request_id == "rid-3"
    warnings = log_messages(caplog, logging.WARNING, RETRY_LOGGER)
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
    caplog.set_level(logging.WARNING, logger=RETRY_LOGGER)
    requests_mock.get(SHOW_URL, [error(429, "APIGW.0308", "throttled", headers={"Retry-After": "3"}), ok()])
    make_hook(retry_limit=2).get_picture_modeling_job(JOB_ID)
    assert sleeps == [3.0]
    assert "retrying in 3.0s" in log_messages(caplog, logging.WARNING, RETRY_LOGGER)[0]


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


def test_429s_have_their_own_limit_and_a_bounded_jitter_over_retry_after(requests_mock, sleeps, monkeypatch):
    # Processes throttled in the same second all read the same Retry-After: without jitter they come
    # back together and collide again. The jitter grows one retry_delay per 429 in a row (no
    # limiter here) but never beyond THROTTLE_SPREAD_MAX; the wall clock does not move (sleeps are
    # recorded, not slept), so the call's own wait does not shrink it here.
    uniform = mock.Mock(side_effect=lambda low, high: high)  # the top of each range
    monkeypatch.setattr(retry_module.random, "uniform", uniform)
    monkeypatch.setattr(retry_module, "clock", lambda: 1000.0)
    throttled = error(429, "APIGW.0308", "throttled", headers={"Retry-After": "1"})
    requests_mock.get(SHOW_URL, [throttled] * 12 + [ok()])
    hook = MetaStudioHook(
        config=make_config(), retry_limit=2, throttle_retry_limit=12, retry_delay=0.5, retry_max_delay=10.0
    )
    hook.get_picture_modeling_job(JOB_ID)  # 12 429s pass although retry_limit is 2
    assert requests_mock.call_count == 13
    assert [c.args for c in uniform.call_args_list][:3] == [(0.0, 0.5), (0.0, 1.0), (0.0, 1.5)]
    assert sleeps == [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5] + [1.0 + retry_module.THROTTLE_SPREAD_MAX] * 5
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
    return hook.create_picture_modeling_job(photo=png_header(), style_id=STYLE_ID, name="m")


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


@pytest.fixture(name="wall")
def wall_fixture(monkeypatch):
    """A wall clock for 429 deadlines that moves only when the hook sleeps (never really sleeps)."""
    now = [1_000_000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(retry_module.time, "sleep", sleep)
    monkeypatch.setattr(retry_module, "clock", lambda: now[0])
    return now


@pytest.mark.parametrize("create", [_create_photo, _create_by_url], ids=["photo", "by-url"])
def test_a_throttled_create_keeps_trying_until_its_deadline_not_a_fixed_count(requests_mock, wall, create):
    # A wave of 40 429s (Retry-After 5 s: over 200 s) is longer than the 12-try budget; with the
    # task's deadline 15 minutes away the create waits its turn and is sent once it is taken.
    url = CREATE_URL if create is _create_photo else CREATE_BY_URL_URL
    throttled = error(429, "APIGW.0308", "throttled", headers={"Retry-After": "5"})
    requests_mock.post(url, [throttled] * 40 + [ok(CREATED)])
    hook = make_hook(retry_limit=2)
    assert hook.throttle_retry_limit < 40
    started = wall[0]
    name = "m"
    if create is _create_photo:
        created = hook.create_picture_modeling_job(
            photo=png_header(), style_id=STYLE_ID, name=name, deadline=started + 900
        )
    else:
        created = hook.create_picture_modeling_job_by_url(
            picture_url="https://cdn.example.com/a.png", style_id=STYLE_ID, name=name, deadline=started + 900
        )
    assert created.job_id
    assert requests_mock.call_count == 41
    assert 200 <= wall[0] - started < 900


def test_a_throttled_create_stops_at_its_deadline_with_the_throttled_error(requests_mock, wall):
    throttled = error(429, "APIGW.0308", "throttled", headers={"Retry-After": "5"})
    requests_mock.post(CREATE_BY_URL_URL, **throttled)
    hook = make_hook(retry_limit=2)
    started = wall[0]
    with pytest.raises(MetaStudioThrottledError) as exc:
        hook.create_picture_modeling_job_by_url(
            picture_url="https://cdn.example.com/a.png", style_id=STYLE_ID, name="m", deadline=started + 60
        )
    assert exc.value.status == 429 and exc.value.request_id
    # Tried at the deadline itself, not beyond it: the last wait is cut to what was left.
    assert wall[0] - started == pytest.approx(60.0)
    assert 60 / 10 <= requests_mock.call_count <= 60 / 5 + 1
