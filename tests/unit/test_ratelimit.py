"""The client-side quota (ratelimit.py): spacing, burst, Retry-After backoff, process-wide sharing."""

from __future__ import annotations

import threading

import pytest

from airflow_provider_metastudio import ratelimit
from airflow_provider_metastudio.ratelimit import DEFAULT_RATES, RateLimiter, get_limiter, parse_rate_limits

pytestmark = pytest.mark.airflow_independent  # runs on the newest Airflow line only

START = 1000.0


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(autouse=True)
def fresh_limiters(monkeypatch):
    monkeypatch.setattr(ratelimit, "_LIMITERS", {})


def test_first_request_goes_at_once(clock):
    assert RateLimiter(1.0, clock=clock).reserve() == 0.0


@pytest.mark.parametrize(
    ("rate", "interval"), [(1.0, 1.0), (2.0, 0.5), (10.0, 0.1)], ids=["1/s", "2/s", "10/s"]
)
def test_back_to_back_requests_are_spaced_one_interval_apart(clock, rate, interval):
    limiter = RateLimiter(rate, clock=clock)
    waits = [limiter.reserve() for _ in range(4)]
    assert waits == pytest.approx([0.0, interval, 2 * interval, 3 * interval])


def test_callers_that_honour_the_wait_are_spaced_evenly(clock):
    limiter = RateLimiter(2.0, clock=clock)
    sent_at = []
    for _ in range(5):
        clock.advance(limiter.reserve())
        sent_at.append(clock.now)
    assert [b - a for a, b in zip(sent_at, sent_at[1:], strict=False)] == pytest.approx([0.5] * 4)


def test_idle_time_is_not_saved_up_without_burst(clock):
    limiter = RateLimiter(1.0, clock=clock)
    limiter.reserve()
    clock.advance(60)
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == pytest.approx(1.0)


def test_burst_allows_that_many_at_once_then_spaces(clock):
    limiter = RateLimiter(1.0, burst=3, clock=clock)
    assert [limiter.reserve() for _ in range(5)] == pytest.approx([0.0, 0.0, 0.0, 1.0, 2.0])


def test_burst_refills_after_idle(clock):
    limiter = RateLimiter(1.0, burst=2, clock=clock)
    assert [limiter.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])
    clock.advance(10)
    assert [limiter.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])


def test_partial_elapsed_time_shortens_the_wait(clock):
    limiter = RateLimiter(1.0, clock=clock)
    limiter.reserve()
    clock.advance(0.25)
    assert limiter.reserve() == pytest.approx(0.75)


def test_backoff_holds_every_caller_back(clock):
    limiter = RateLimiter(1.0, clock=clock)
    limiter.reserve()
    limiter.backoff(5.0)
    assert limiter.reserve() == pytest.approx(5.0)
    assert limiter.reserve() == pytest.approx(6.0)


def test_backoff_holds_back_even_with_burst(clock):
    # "no request from this process before `seconds` from now" must hold whatever the burst
    limiter = RateLimiter(1.0, burst=3, clock=clock)
    limiter.backoff(5.0)
    assert limiter.reserve() == pytest.approx(5.0)


def test_backoff_shorter_than_the_queue_shifts_the_later_slots_by_half_an_interval(clock):
    # Slots handed out stay; the free ones move half an interval, so two processes whose slots
    # collide (same period, same phase) drift apart instead of colliding at every slot.
    limiter = RateLimiter(1.0, clock=clock)
    for _ in range(5):
        limiter.reserve()  # queue up to START + 5
    limiter.backoff(2.0)
    assert limiter.reserve() == pytest.approx(5.5)


@pytest.mark.parametrize("rate", [0, -1.0], ids=["zero", "negative"])
def test_rate_must_be_positive(rate):
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(rate)


def test_concurrent_reservations_get_distinct_slots(clock):
    limiter = RateLimiter(10.0, clock=clock)
    waits: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            w = limiter.reserve()
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == pytest.approx([i * 0.1 for i in range(100)])


def test_get_limiter_is_shared_for_the_same_tenant_and_call():
    a = get_limiter("https://metastudio.cn-north-4.myhuaweicloud.com", "p1", "show", 1.0)
    b = get_limiter("https://metastudio.cn-north-4.myhuaweicloud.com", "p1", "show", 1.0)
    assert a is b
    assert a.reserve() == 0.0
    assert b.reserve() > 0.5  # the second hook waits for the first one's slot


@pytest.mark.parametrize(
    "other",
    [
        ("https://metastudio.cn-east-3.myhuaweicloud.com", "p1", "show", 1.0),
        ("https://metastudio.cn-north-4.myhuaweicloud.com", "p2", "show", 1.0),
        ("https://metastudio.cn-north-4.myhuaweicloud.com", "p1", "list", 1.0),
        ("https://metastudio.cn-north-4.myhuaweicloud.com", "p1", "show", 5.0),
    ],
    ids=["endpoint", "project", "call", "rate"],
)
def test_get_limiter_differs_when_any_key_part_differs(other):
    base = get_limiter("https://metastudio.cn-north-4.myhuaweicloud.com", "p1", "show", 1.0)
    assert get_limiter(*other) is not base


def test_get_limiter_uses_the_rate_and_never_exceeds_it():
    fast, slow = get_limiter("e", "p", "create_by_url", 2.0), get_limiter("e", "p", "show", 1.0)
    assert fast.interval == pytest.approx(slow.interval / 2)
    assert fast.interval >= 0.5 and slow.interval >= 1.0  # headroom may only make it slower


def test_default_rates_match_the_documented_quotas():
    assert dict(DEFAULT_RATES) == {
        "show": 1.0,
        "list": 1.0,
        "create": 1.0,
        "create_by_url": 2.0,
        "asset_show": 1.0,
        "asset_list": 1.0,
    }


RATE_LIMIT_CASES = {
    "missing": (None, dict(DEFAULT_RATES)),
    "true": (True, dict(DEFAULT_RATES)),
    "override one": ({"show": 5}, {**DEFAULT_RATES, "show": 5.0}),
    "override fraction": ({"list": "0.5"}, {**DEFAULT_RATES, "list": 0.5}),
    "json string": ('{"show": 5}', {**DEFAULT_RATES, "show": 5.0}),
    "false": (False, None),
    "string false": ("false", None),
    "string off": (" Off ", None),
    "string zero": ("0", None),
}


@pytest.mark.parametrize(("value", "expected"), RATE_LIMIT_CASES.values(), ids=list(RATE_LIMIT_CASES))
def test_parse_rate_limits(value, expected):
    assert parse_rate_limits(value) == expected


def test_parse_rate_limits_does_not_share_the_defaults():
    parse_rate_limits(None)["show"] = 99.0
    assert DEFAULT_RATES["show"] == 1.0


INVALID_RATE_LIMITS = {
    "unknown call": ({"delete": 1}, "unknown call"),
    "zero": ({"show": 0}, "positive"),
    "negative": ({"create": -2}, "positive"),
    "not a number": ({"show": "fast"}, "show"),
    "null rate": ({"show": None}, "show"),
    "nan": ({"show": "nan"}, "positive"),
    "list": ([1, 2], "mapping"),
    "number": (5, "mapping"),
    "garbage string": ("fast please", "mapping"),
    "broken json": ('{"show": ', "Expecting value"),
}


@pytest.mark.parametrize(("value", "fragment"), INVALID_RATE_LIMITS.values(), ids=list(INVALID_RATE_LIMITS))
def test_parse_rate_limits_refuses(value, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_rate_limits(value)
