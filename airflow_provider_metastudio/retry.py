"""The retry policy: which failed calls are tried again, how long to wait, and when to stop.

Shared by both transports (``transport.py``) through :func:`retrying_kwargs`, the settings of a
``tenacity.Retrying`` (sync) or ``tenacity.AsyncRetrying`` (async) loop. Reads retry on 429, 5xx,
broken bodies and connection errors; a create only when the service provably did not take it;
429s have their own, larger budget and honour ``Retry-After`` with jitter.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import tenacity

from airflow_provider_metastudio import metrics
from airflow_provider_metastudio.api import ApiCall
from airflow_provider_metastudio.auth import TokenAuth
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioConnectionError,
    MetaStudioError,
    MetaStudioInvalidResponseError,
    MetaStudioServerError,
    MetaStudioThrottledError,
)
from airflow_provider_metastudio.ratelimit import Limiter

log = logging.getLogger(__name__)

# The wall clock a 429 deadline is compared with (``time.time()`` seconds); tests replace it.
clock = time.time


@dataclass(frozen=True)
class RetryPolicy:
    """How failed calls are retried (see :func:`is_retryable` for which ones).

    :param retry_limit: how many times a retryable failure other than 429 is retried.
    :param throttle_retry_limit: how many times a 429 is retried (its own, larger budget).
    :param retry_delay: base of the exponential backoff, in seconds.
    :param retry_max_delay: cap of one backoff (and of a ``Retry-After``), in seconds.
    :param log_level: level of the line logged before each retry.
    """

    retry_limit: int = 5
    throttle_retry_limit: int = 12
    retry_delay: float = 1.0
    retry_max_delay: float = 60.0
    log_level: int = logging.WARNING


def is_retryable(call: ApiCall, exc: BaseException) -> bool:
    """Reads retry on 429, 5xx, broken bodies and connection errors. A create is retried only
    when the service provably did not take it (429, or a connection that never opened): a
    duplicate picture-modeling job costs the user money."""
    if isinstance(exc, MetaStudioThrottledError):
        return True
    if isinstance(exc, MetaStudioConnectionError):
        return call.idempotent or not exc.sent
    if not call.idempotent:
        return False
    return isinstance(exc, (MetaStudioServerError, MetaStudioInvalidResponseError))


# The most jitter a 429's wait adds to Retry-After, in seconds. A jitter that doubles with every 429
# (up to a minute) left the quota idle while creates slept, and the unlucky ones starved.
THROTTLE_SPREAD_MAX = 4.0


def throttled_wait(
    retry_after: float | None, throttled: int, waited: float, limiter: Limiter | None, policy: RetryPolicy
) -> float:
    """How long a call waits after its ``throttled``-th 429 in a row, having waited ``waited`` s.

    ``Retry-After`` (capped at ``retry_max_delay``) plus a jitter, so that callers throttled in the
    same second do not come back in lockstep. The jitter's range grows with the contention seen (one
    quota interval per 429 in a row: about one more contender each), bounded by
    :data:`THROTTLE_SPREAD_MAX`, and shrinks with the time the call has already waited
    (``spread * spread / (spread + waited)``): older calls come back sooner, so no call's wait
    drifts far past its fair share. Every caller of the tenant in this process (or host, with the
    host-wide quota) holds back by ``Retry-After`` through the limiter.
    """
    after = min(retry_after or 0.0, policy.retry_max_delay)
    if limiter is not None:
        if retry_after is not None:
            limiter.backoff(after)
        unit = limiter.interval
    else:
        unit = policy.retry_delay
    spread = min(unit * throttled, THROTTLE_SPREAD_MAX)
    if spread > 0:
        spread *= spread / (spread + max(waited, 0.0))
    return min(after + random.uniform(0.0, spread), policy.retry_max_delay)


def retrying_kwargs(
    call: ApiCall,
    policy: RetryPolicy,
    *,
    tokens: TokenAuth,
    limiter: Limiter | None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """tenacity settings for one call, shared by the sync and async loops.

    :param tokens: the connection's token authentication, renewed once after a 401.
    :param limiter: the call's process-wide quota, held back by a ``Retry-After``.
    :param deadline: ``time.time()`` by which the caller must be done (a task's own timeout). With
        it, a 429 (the service did not take the request) is retried until the deadline instead of
        ``throttle_retry_limit`` times: a throttled create waits its turn as long as its task may.
    """
    backoff = tenacity.wait_random_exponential(multiplier=policy.retry_delay, max=policy.retry_max_delay)
    started = clock()  # a call that has waited longer retries a 429 sooner (throttled_wait)
    refreshed = False
    throttled = 0  # 429s so far: they have their own limit, other failures count the rest

    def retry(state: tenacity.RetryCallState) -> bool:
        nonlocal refreshed, throttled
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return False
        if isinstance(exc, MetaStudioThrottledError):
            throttled += 1  # counted here: tenacity asks retry, then wait, then stop
        if isinstance(exc, MetaStudioError) and exc.call == "iam" and call.name != "iam":
            # The token request already had its retries; IAM locks accounts after failed logins.
            return False
        if (
            isinstance(exc, MetaStudioAuthError)
            and exc.status == 401
            and tokens.renews
            and call.authenticated
            and not refreshed
        ):
            refreshed = True  # a cached token may have been revoked early: renew it once
            tokens.invalidate_token()
            return True
        return is_retryable(call, exc)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, MetaStudioAuthError):
            return 0.0
        if isinstance(exc, MetaStudioThrottledError):
            delay = throttled_wait(exc.retry_after, throttled, clock() - started, limiter, policy)
            if deadline is not None:  # the last try just before the deadline
                delay = min(delay, max(deadline - clock(), 0.0))
            return delay
        return float(backoff(state))

    def stop(state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, MetaStudioThrottledError):
            if deadline is not None:
                return clock() >= deadline
            return throttled > policy.throttle_retry_limit
        return state.attempt_number - throttled > policy.retry_limit

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        metrics.incr("api.retries", call=call.name)
        # The most attempts if failures of this kind go on (429s and others have own limits).
        if isinstance(exc, MetaStudioThrottledError) and deadline is not None:
            log.log(
                policy.log_level,
                "%s; retrying in %.1fs (attempt %d; throttled calls are retried until the task's "
                "deadline in %.0fs)",
                exc,
                state.next_action.sleep if state.next_action else 0.0,
                state.attempt_number + 1,
                max(deadline - clock(), 0.0),
            )
            return
        if isinstance(exc, MetaStudioThrottledError):
            most = policy.throttle_retry_limit + state.attempt_number - throttled + 1
        else:
            most = policy.retry_limit + throttled + 1
        log.log(
            policy.log_level,
            "%s; retrying in %.1fs (attempt %d of %d)",
            exc,
            state.next_action.sleep if state.next_action else 0.0,
            state.attempt_number + 1,
            most,
        )

    return {"retry": retry, "wait": wait, "stop": stop, "before_sleep": before_sleep, "reraise": True}
