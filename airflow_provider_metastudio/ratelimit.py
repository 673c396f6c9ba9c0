"""Client-side quota: one process-wide rate limiter per endpoint, project and call.

The service allows 1 request/s per tenant for show, list and create, and 2/s for create-by-URL.
Every hook in a process (all tasks of a worker, all triggers of a triggerer) shares the same
limiter for the same tenant, so a process never causes 429s by itself. The limiter only *computes*
how long a caller must wait; the caller sleeps with ``time.sleep`` or ``asyncio.sleep``, so the
same object serves the sync and the async clients.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_RATES: Mapping[str, float] = {"show": 1.0, "list": 1.0, "create": 1.0, "create_by_url": 2.0}


class RateLimiter:
    """Generic cell rate algorithm: requests are spaced ``1/rate`` apart, with ``burst`` allowed at once.

    :param rate: requests per second.
    :param burst: how many requests may go out back to back after an idle period.
    :param clock: monotonic seconds; injectable for tests.
    """

    def __init__(self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.tolerance = max(burst - 1.0, 0.0) * self.interval
        self._clock = clock
        self._next = 0.0  # earliest time the next request conforms (theoretical arrival time)
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; return how many seconds to wait before using it."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next - self.tolerance)
            self._next = max(self._next, now) + self.interval
            return max(0.0, start - now)

    def backoff(self, seconds: float) -> None:
        """After a 429 with ``Retry-After``: no request from this process before ``seconds`` from now."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


_LIMITERS: dict[tuple[Any, ...], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def parse_rate_limits(value: Any) -> dict[str, float] | None:
    """Rates from the connection's ``rate_limits`` extra: None/missing = documented quotas, false = off.

    A mapping overrides single calls, e.g. ``{"show": 5}`` for a tenant with a raised quota.
    """
    if value is None or value is True:
        return dict(DEFAULT_RATES)
    if value is False or (isinstance(value, str) and value.strip().lower() in ("false", "off", "none", "0")):
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"rate_limits must be a mapping of call to requests/second or false, got {value!r:.60}")
    rates = dict(DEFAULT_RATES)
    for call, rate in value.items():
        if call not in DEFAULT_RATES:
            raise ValueError(f"rate_limits: unknown call {call!r}; known: {', '.join(DEFAULT_RATES)}")
        rates[call] = float(rate)
        if rates[call] <= 0:
            raise ValueError(f"rate_limits: {call} must be positive")
    return rates


def get_limiter(endpoint: str, project_id: str, call: str, rate: float) -> RateLimiter:
    """The process-wide limiter for one tenant and call (created on first use)."""
    key = (endpoint, project_id, call, rate)
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = _LIMITERS[key] = RateLimiter(rate)
        return limiter
