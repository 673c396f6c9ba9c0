"""Client-side quota: one process-wide rate limiter per endpoint, project, call and rate.

The service allows 1 request/s per tenant for show, list and create, and 2/s for create-by-URL; the
asset calls are assumed to allow 1/s (see :data:`DEFAULT_RATES`). A connection's ``rate_limits``
extra overrides single rates or turns the limiter off. Every hook in a process (all tasks of a
worker, all triggers of a triggerer) with the same tenant and rate shares one limiter, so a process
keeps to the quota by itself; several processes on one tenant do not know about each other and can
still draw 429s, which the hook retries after ``Retry-After`` (:meth:`RateLimiter.backoff`), unless
they share the host-wide quota file (``hostquota.py``, on by default). The
limiter only *computes* how long a caller must wait; the caller sleeps with ``time.sleep`` or
``asyncio.sleep``, so the same object serves the sync and the async clients.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from airflow_provider_metastudio.hostquota import HostLimiter, host_reservations

DEFAULT_RATES: Mapping[str, float] = {
    "show": 1.0,
    "list": 1.0,
    "create": 1.0,
    "create_by_url": 2.0,
    # Asset library calls (issue #14): their quota is not stated anywhere we have; assume the
    # documented 1 request/s per tenant per call of the picture-modeling calls (conservative).
    "asset_show": 1.0,
    "asset_list": 1.0,
}
# The gateway measures *arrival* times, which jitter by tens of milliseconds after a request's slot
# (signing, scheduling, the network): spacing requests exactly 1/rate apart still draws 429s.
HEADROOM = 0.1


class Limiter(Protocol):
    """What the transports and the retry policy use: :class:`RateLimiter` or a ``HostLimiter``."""

    interval: float

    def reserve(self) -> float: ...

    def settle(self) -> None: ...

    def backoff(self, seconds: float) -> None: ...


class RateLimiter:
    """Generic cell rate algorithm: requests are spaced ``1/rate`` apart, with ``burst`` allowed at once.

    :param rate: requests per second.
    :param burst: how many requests may go out back to back after an idle period.
    :param clock: monotonic seconds; injectable for tests.
    :param headroom: extra spacing, as a share of ``1/rate``.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        headroom: float = 0.0,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = (1.0 + headroom) / rate
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

    def settle(self) -> None:
        """A request got its answer, so the gateway saw it no later than now: the next one waits a
        full interval from here. Anchoring on the answer, not only on the slot, absorbs the time
        between taking a slot and arriving (connection set-up, signing, a busy event loop), which
        otherwise reaches the gateway as two requests less than ``1/rate`` apart."""
        with self._lock:
            self._next = max(self._next, self._clock() + self.interval - self.tolerance)

    def backoff(self, seconds: float) -> None:
        """After a 429 with ``Retry-After``: no request from this process before ``seconds`` from now."""
        with self._lock:
            # reserve() lets a burst start `tolerance` before _next: add it, or a burst would go early.
            # Slots already handed out cannot move, but the later ones shift by half an interval:
            # two processes whose slots fall less than 1/quota apart (a 429 every time, for ever:
            # same period, same phase) drift out of step instead.
            self._next = max(self._next + self.interval / 2, self._clock() + seconds + self.tolerance)


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
    if isinstance(value, str) and value.strip().startswith("{"):
        value = json.loads(value)  # a connection form stores the field as text; errors are ValueErrors
    if not isinstance(value, Mapping):
        raise ValueError(
            f"rate_limits must be a mapping of call to requests/second or false, got {value!r:.60}"
        )
    rates = dict(DEFAULT_RATES)
    for call, rate in value.items():
        if call not in DEFAULT_RATES:
            raise ValueError(f"rate_limits: unknown call {call!r}; known: {', '.join(DEFAULT_RATES)}")
        try:
            rates[call] = float(rate)
        except (TypeError, ValueError):
            raise ValueError(f"rate_limits: {call} must be a number, got {rate!r:.30}") from None
        if not rates[call] > 0:  # also refuses NaN
            raise ValueError(f"rate_limits: {call} must be positive")
    return rates


def get_limiter(
    endpoint: str, project_id: str, call: str, rate: float, host_path: str | None = None
) -> Limiter:
    """The process-wide limiter for one tenant and call (created on first use); with ``host_path``
    (the tenant's host-wide reservation file) the slots come from that file."""
    key = (endpoint, project_id, call, rate)
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = _LIMITERS[key] = RateLimiter(rate, headroom=HEADROOM)
    if host_path is None:
        return limiter
    return HostLimiter(limiter, host_reservations(host_path), call)
