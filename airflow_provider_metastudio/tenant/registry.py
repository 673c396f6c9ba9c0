"""One tenant client per (event loop, tenant), reference counted, and the context managers on it.

``dag.test()`` runs each trigger in its own ``asyncio.run()``, so clients are keyed by loop and
never shared across loops: one owner of the tenant's calls per event loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from airflow_provider_metastudio.tenant import connections
from airflow_provider_metastudio.tenant._core import Observation, Watch
from airflow_provider_metastudio.tenant.poller import TenantPoller
from airflow_provider_metastudio.tenant.stream import Subscription

_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], TenantPoller]] = (
    weakref.WeakKeyDictionary()
)


async def acquire(conn_id: str) -> TenantPoller:
    """The shared poller for this connection's tenant in the running loop (reference counted)."""
    hook = await connections.lookup(conn_id)
    per_loop = _POLLERS.setdefault(asyncio.get_running_loop(), {})
    key = connections.tenant_key(hook.config)
    poller = per_loop.get(key)
    if poller is None:
        poller = per_loop[key] = TenantPoller(conn_id, hook, key)
    poller.refs += 1
    return poller


async def release(poller: TenantPoller) -> None:
    """Drop one reference; the last one stops the poller and closes its client."""
    poller.refs -= 1
    if poller.refs > 0:
        return
    per_loop = _POLLERS.get(asyncio.get_running_loop(), {})
    if per_loop.get(poller.key) is poller:
        del per_loop[poller.key]
    await poller.close()
    await poller.hook.aclose()


def pollers() -> list[TenantPoller]:
    """The tenant clients of the running loop (for benchmarks and diagnostics)."""
    return list(_POLLERS.get(asyncio.get_running_loop(), {}).values())


@asynccontextmanager
async def watch_job(conn_id: str, job_id: str, interval: float) -> AsyncIterator[Watch]:
    """Watch ``job_id`` with the shared poller of ``conn_id``'s tenant until the block ends."""
    poller = await acquire(conn_id)
    try:
        w = poller.watch(job_id, interval)
        try:
            yield w
        finally:
            poller.unwatch(w)
    finally:
        await release(poller)


@asynccontextmanager
async def finished_jobs(
    conn_id: str,
    since: datetime | None,
    name: str,
    poll_interval: float = 30.0,
    on_notice: Callable[[Observation], None] | None = None,
) -> AsyncIterator[Subscription]:
    """Subscribe to the finished jobs of ``conn_id``'s tenant until the block ends.

    :param since: deliver jobs that ended at or after this (aware) time, less
        :data:`~._core.END_TIME_MARGIN`; None: from now (server clock).
    :param name: the subscriber's name, in its log lines.
    :param poll_interval: seconds between scans this subscriber wants (the smallest interval among
        the tenant's waits and subscriptions wins).
    :param on_notice: called with each outage notice (an :class:`~._core.Observation`); default:
        logged with ``name`` in the triggerer's log.
    """
    poller = await acquire(conn_id)
    try:
        sub = poller.subscribe(name, since, poll_interval, on_notice)
        try:
            yield sub
        finally:
            poller.unsubscribe(sub)
    finally:
        await release(poller)
