"""The wait after a 429 (retry.throttled_wait): bounded, and fair to the creates that waited longest.

Where no shared file coordinates the processes (Celery on several machines), each process keeps to
its own limiter and the gateway's 429s sort out the rest. These scenarios run the real retry loop
(``tenacity.AsyncRetrying`` with :func:`retrying_kwargs`) against a gateway with the emulator's
quota rule itself (GCRA, 2/s, 50 ms early allowed, ``Retry-After`` in whole seconds) on a virtual
clock, so minutes of contention take milliseconds and run the same every time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics

import pytest
import tenacity
from testsupport.virtual_time import on_virtual_clock

import airflow_provider_metastudio.retry as retry_module
from airflow_provider_metastudio.api.calls import create_by_url_call
from airflow_provider_metastudio.exceptions import MetaStudioThrottledError
from airflow_provider_metastudio.ratelimit import HEADROOM, RateLimiter
from airflow_provider_metastudio.retry import THROTTLE_SPREAD_MAX, RetryPolicy, retrying_kwargs
from airflow_provider_metastudio.testing import EmulatorConfig
from airflow_provider_metastudio.testing._quotas import Quotas
from airflow_provider_metastudio.testing._shared import Shared

pytestmark = pytest.mark.airflow_independent

QUOTA = 2.0
CALL = create_by_url_call(
    "https://metastudio.example.test/v1/p1", picture_url="https://cdn.example.com/a.png",
    style_id="s", name="n", notify_url=None,
)  # fmt: skip


class Gateway:
    """The emulator's own quota rule (``testing/_quotas.py``: GCRA, 50 ms early allowed,
    ``Retry-After`` in whole seconds) on the loop's virtual clock."""

    def __init__(self) -> None:
        shared = Shared(EmulatorConfig(rates={"create_by_url": QUOTA}, global_rates={"create_by_url": QUOTA}))
        shared.now = asyncio.get_running_loop().time  # type: ignore[method-assign]
        self.quotas = Quotas(shared)
        self.throttled = 0
        self.accepted: list[float] = []

    def arrive(self) -> None:
        reply = self.quotas.throttle("create_by_url", "tenant")
        if reply is not None:
            self.throttled += 1
            raise MetaStudioThrottledError("429", status=429, retry_after=float(reply.headers["Retry-After"]))
        self.accepted.append(asyncio.get_running_loop().time())


async def contend(hosts: int, per_host: int, creates: int) -> tuple[Gateway, list[float], list[float]]:
    """``hosts`` x ``per_host`` processes create ``creates`` jobs each, one after another; the
    processes of a host share one limiter at the full quota (as the host-wide file makes them).
    Returns the gateway, every create's wait and every single wait after a 429."""
    loop = asyncio.get_running_loop()
    gateway = Gateway()
    policy = RetryPolicy(log_level=logging.DEBUG)
    waits: list[float] = []
    sleeps: list[float] = []

    def after(state: tenacity.RetryCallState) -> None:
        sleeps.append(state.upcoming_sleep)

    async def process(limiter: RateLimiter) -> None:
        for _ in range(creates):
            asked = loop.time()
            kwargs = retrying_kwargs(CALL, policy, tokens=None, limiter=limiter, deadline=asked + 900)  # type: ignore[arg-type]
            async for attempt in tenacity.AsyncRetrying(**kwargs, after=after):
                with attempt:
                    # Signing, scheduling and the network put up to 20 ms between slot and arrival.
                    await asyncio.sleep(limiter.reserve() + random.uniform(0.0, 0.02))
                    try:
                        gateway.arrive()
                    finally:
                        limiter.settle()
            waits.append(loop.time() - asked)

    limiters = [RateLimiter(QUOTA, clock=loop.time, headroom=HEADROOM) for _ in range(hosts)]
    await asyncio.gather(*(process(limiters[h]) for h in range(hosts) for _ in range(per_host)))
    return gateway, waits, sleeps


@pytest.fixture(autouse=True)
def loop_clock(monkeypatch):
    random.seed(19)
    monkeypatch.setattr(retry_module, "clock", lambda: asyncio.get_running_loop().time())


@pytest.mark.parametrize(("hosts", "per_host"), [(32, 1), (2, 16)], ids=["32-lone-processes", "2-hosts-x-16"])
@on_virtual_clock
async def test_uncoordinated_creates_keep_the_quota_busy_and_wait_near_their_fair_share(hosts, per_host):
    gateway, waits, sleeps = await contend(hosts, per_host, 6)
    n = hosts * per_host * 6
    assert len(gateway.accepted) == n and len(waits) == n  # none failed, each made once
    # Each wait after a 429: Retry-After (1 s here) plus a jitter of at most THROTTLE_SPREAD_MAX,
    # never the old doubling up to a minute (which left the quota idle: 1.5-2.2x the floor).
    assert gateway.throttled > 0 and max(sleeps) <= 1.0 + THROTTLE_SPREAD_MAX
    wall = gateway.accepted[-1]
    fair = 32 / QUOTA  # 32 creates always waiting: first come first served gives each about this
    print(
        f"wall {wall / (n / QUOTA):.2f}x the floor, {gateway.throttled / n:.1f} 429s per job, "
        f"waits mean {statistics.mean(waits):.1f} s, max {max(waits):.0f} s (fair {fair:.0f} s)"
    )
    assert wall <= 1.3 * n / QUOTA
    assert statistics.mean(waits) <= 1.2 * fair
    # The unlucky create: with the doubling jitter the longest waited 130-190 s in this model (32
    # lone processes); now 87 s, and 96 s on two hosts. Without a shared file a 429'd create goes
    # back to the end of its host's queue, so this stays above twice the fair share: the host file
    # (one host) is what keeps every create near it.
    assert max(waits) <= 7 * fair
