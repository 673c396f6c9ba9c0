"""The tenant client: one per tenant (endpoint, project, identity, headers) and event loop.

Why not poll each job: the job-details call allows 1 request/s per tenant, so per-job polling at a
60 s interval saturates at 60 jobs; 1,000 jobs want 16.7 calls/s, drown in 429s and notice a
finished job many minutes late. Two loops run side by side, each under its own quota (list: 1/s,
details: 1/s by default): the list loop (:mod:`.stream`, the fast path) and the details loop
(:mod:`.safety_net`); :mod:`.health` handles outages and refused credentials for both.

The poller only observes: every observation goes to the waiting trigger's own queue, and the trigger
logs it in its task's context (see :class:`~._core.Observation`). Each trigger keeps its own deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from airflow_provider_metastudio.tenant._core import Observation, Watch, log, now
from airflow_provider_metastudio.tenant.stream import FinishedStream, Subscription


class TenantPoller(FinishedStream):
    """Watches jobs of one tenant in one event loop; see the package docstring for the contract."""

    def watch(self, job_id: str, interval: float) -> Watch:
        """Start watching ``job_id``; observations arrive on the returned watch."""
        w = Watch(job_id, interval, self, next_due=now())
        self.watches.setdefault(job_id, []).append(w)
        for obs in self._current_outages():  # a wait that starts during an outage hears of it
            w._put(obs)
        self._wake()
        return w

    def unwatch(self, w: Watch) -> None:
        w.done = True
        ws = self.watches.get(w.job_id, [])
        if w in ws:
            ws.remove(w)
        if not ws:
            self.watches.pop(w.job_id, None)

    def subscribe(
        self,
        name: str,
        since: datetime | None,
        interval: float,
        on_notice: Callable[[Observation], None] | None = None,
    ) -> Subscription:
        """Start a subscription to the finished-job stream (see :mod:`.stream`)."""
        if since is not None and since.tzinfo is None:
            raise ValueError(f"since must be timezone-aware (got {since.isoformat()!r})")
        sub = Subscription(name, since, float(interval), self, on_notice, next_due=now())
        self.subscriptions.append(sub)
        for obs in self._current_outages():
            sub._notice(obs)
        self._wake()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        if sub in self.subscriptions:
            self.subscriptions.remove(sub)

    def _wake(self) -> None:
        self._list_wake.set()
        self._details_wake.set()
        if not self._tasks or any(t.done() for t in self._tasks):
            self._start()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        for t in self._tasks:
            t.cancel()
        self._tasks = [
            loop.create_task(self._guard(self._list_loop), name=f"metastudio-list-{self.project}"),
            loop.create_task(self._guard(self._details_loop), name=f"metastudio-details-{self.project}"),
        ]

    async def close(self) -> None:
        # Python 3.11's wait_for can swallow a cancellation that races its timeout; the loops also
        # stop on this flag, and close() never waits on them unbounded.
        self._closed = True
        self._list_wake.set()
        self._details_wake.set()
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._tasks = []

    async def _guard(self, loop_fn: Callable[[], Awaitable[None]]) -> None:
        # A bug in a loop must never leave triggers waiting on a dead poller: restart it, slowly.
        while not self._closed:
            try:
                await loop_fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("MetaStudio poller for project %s failed; restarting it", self.project)
                await asyncio.sleep(self.backoff_max)
