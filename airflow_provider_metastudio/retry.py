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
from airflow_provider_metastudio.ratelimit import RateLimiter

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


def retrying_kwargs(
    call: ApiCall,
    policy: RetryPolicy,
    *,
    tokens: TokenAuth,
    limiter: RateLimiter | None,
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
        if isinstance(exc, MetaStudioThrottledError) and exc.retry_after is not None:
            if limiter is not None:  # every caller of this tenant in this process holds back
                limiter.backoff(min(exc.retry_after, policy.retry_max_delay))
            # Full jitter on top of Retry-After: processes throttled in the same second (the
            # gateway tells them all the same time) would otherwise come back in lockstep and
            # collide again. Capped: a gateway answering "in an hour" must not hold a worker
            # slot for an hour.
            spread = min(policy.retry_delay * 2 ** (throttled - 1), policy.retry_max_delay)
            delay = min(exc.retry_after + random.uniform(0.0, spread), policy.retry_max_delay)
        else:
            delay = float(backoff(state))
        if isinstance(exc, MetaStudioThrottledError) and deadline is not None:
            delay = min(delay, max(deadline - clock(), 0.0))  # the last try just before the deadline
        return delay

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
