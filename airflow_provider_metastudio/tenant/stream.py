"""The list loop: the finished-job stream of the tenant, and the confirmation of new watches.

Each round lists terminal jobs (``state=PARTIAL_SUCCEED,SUCCEED,FAILED,CANCELED``) newest first
(``sort_key=update_time, sort_dir=desc``, 100 per page) and reads only what is new: it stops at the
first job that ended before the newest end time already seen (less :data:`END_TIME_MARGIN`, since
times are whole seconds). One call per round covers every watched job; a busy round costs one call
per 100 jobs that finished since the last one, and after a round that found a watched job done, the
next one comes sooner (``busy_interval``), so a burst of finishing jobs is reported at the pace the
list quota allows. The first scan of a poller reads back an hour (at most 5 pages), for jobs that
ended while no triggerer ran. New watches are also looked for once in the list of running jobs
(``state=WAITING,PROCESSING``), a few pages per round; those pages give way whenever a finished scan
is due, so confirming a thousand new watches never delays the stream.

**Subscriptions** (for event watchers, issue 21) ride the same scan::

    async with tenant.finished_jobs(conn_id, since, name, poll_interval=30.0) as sub:
        job = await sub.next()  # a PictureModelingJob: terminal, end_time set, request_id set

* While any subscription exists the scan runs even with no waits, at the smallest interval among
  waits and subscriptions, under the same list quota, outage patience and auth patience as waits.
  Waits and any number of subscriptions of one tenant in one event loop cost the list calls of the
  waits alone: one scan feeds them all.
* A subscription receives every terminal job the scan sees with
  ``end_time >= since - END_TIME_MARGIN``. On its first scan the stream reads back to the oldest
  new subscriber's ``since`` (paging as needed, at most ``MAX_SCAN_PAGES`` pages: 2,000 jobs; what
  lies beyond is logged as not read). ``since=None`` means "from now": the end time of the newest
  job on the next scan's first page (server clock).
* The same job may arrive again (the margin rescans a second or two, a restarted triggerer starts
  over from ``since``): the subscriber dedupes by ``(end_time, job_id)``.
* Outage notices (start and end) reach the subscription as :class:`~._core.Observation` notices:
  ``next()`` hands each to ``on_notice`` (default: logged with the subscription's name in the
  triggerer's log) before returning the next job. When refused authentication outlasts the
  patience, ``next()`` raises that error once; the stream keeps going and recovers with the
  connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from airflow_provider_metastudio.api import MAX_PAGE_SIZE, JobPage
from airflow_provider_metastudio.models import PictureModelingJob
from airflow_provider_metastudio.tenant._core import (
    CONFIRM_PAGES_PER_ROUND,
    END_TIME_MARGIN,
    EPOCH,
    FIRST_SCAN_LOOKBACK,
    FIRST_SCAN_PAGES,
    MAX_SCAN_PAGES,
    RUNNING,
    TERMINAL,
    Observation,
    log,
    now,
)
from airflow_provider_metastudio.tenant.safety_net import SafetyNet

if TYPE_CHECKING:
    from airflow_provider_metastudio.tenant.poller import TenantPoller


@dataclass(eq=False)
class Subscription:
    """One watcher's share of the tenant's finished-job stream (see the module docstring)."""

    name: str
    since: datetime | None  # None until the first scan fixes "now" (server clock)
    interval: float
    poller: TenantPoller = field(repr=False)
    on_notice: Callable[[Observation], None] | None = field(default=None, repr=False)
    queue: asyncio.Queue[Observation] = field(default_factory=asyncio.Queue, repr=False)
    next_due: float = 0.0  # monotonic: when this subscription wants the next list round
    caught_up: bool = False  # the scan has read back to ``since`` (less the margin)
    closed: bool = False

    async def next(self) -> PictureModelingJob:
        """The next finished job the stream saw; notices go to ``on_notice`` on the way."""
        while True:
            obs = await self.queue.get()
            if obs.job is not None:
                return obs.job
            if obs.error is not None:
                raise obs.error
            if obs.notice is not None:
                if self.on_notice is not None:
                    self.on_notice(obs)
                else:
                    log.log(obs.level, "%s: %s", self.name, obs.notice)

    def _offer(self, job: PictureModelingJob) -> None:
        if self.closed or self.since is None or job.end_time is None:
            return
        if job.end_time >= self.since - END_TIME_MARGIN:
            self.queue.put_nowait(Observation(job))

    def _notice(self, obs: Observation) -> None:
        if not self.closed:
            self.queue.put_nowait(obs)


class FinishedStream(SafetyNet):
    """The list loop of the tenant client: the finished scan and the running-list confirmations."""

    async def _list_loop(self) -> None:
        failures = 0
        while not self._closed:
            if not self.watches and not self.subscriptions:
                self._list_wake.clear()
                await self._list_wake.wait()
                continue
            delay = self._list_due() - now()
            if delay > 0:
                await self._sleep(self._list_wake, delay)
                continue
            try:
                await self._list_round()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                await self._failed("list", e)
                await asyncio.sleep(self._backoff(failures))
                continue
            failures = 0

    def _list_due(self) -> float:
        due = min(
            [w.next_due for ws in self.watches.values() for w in ws]
            + [s.next_due for s in self.subscriptions]
        )
        if self.busy:
            due = min(due, self._last_round + self.busy_interval)
        return due

    async def _list_round(self) -> None:
        self.rounds += 1
        started = self._last_round = now()
        for ws in self.watches.values():
            for w in ws:
                w.next_due = started + w.interval
        for sub in self.subscriptions:
            sub.next_due = started + sub.interval
        self.busy = await self._finished_scan() > 0
        await self._confirm_new()

    async def _list(self, states: tuple[str, ...], offset: int, sort_key: str) -> JobPage:
        self.list_calls += 1
        page = await self.hook.alist_picture_modeling_jobs_page(
            offset=offset, limit=MAX_PAGE_SIZE, states=states, sort_key=sort_key, sort_dir="desc"
        )
        # Said before the jobs of this answer are handed out, so a wait or a subscriber hears that
        # the outage ended before it hears what the first answer after it showed.
        self._recovered("list")
        return page

    async def _finished_scan(self) -> int:
        """Read the finished jobs that are new since the last scan (and, for new subscriptions, back
        to their ``since``); hand each to its watches and the subscriptions; return how many watches
        ended."""
        first = self.high_water is None
        cutoff = None if self.high_water is None else self.high_water - END_TIME_MARGIN
        from_now = [s for s in self.subscriptions if s.since is None]
        backfill = [s for s in self.subscriptions if s.since is not None and not s.caught_up]
        floor = min((s.since for s in backfill if s.since is not None), default=None)
        if floor is not None:
            floor -= END_TIME_MARGIN
        limit = FIRST_SCAN_PAGES if first and floor is None else MAX_SCAN_PAGES
        newest = self.high_water
        offset = pages = resolved = 0
        last_end = None
        # Stops early once every watch is resolved, unless a subscription still reads.
        while self.watches or self.subscriptions:
            count, jobs, _ = await self._list(TERMINAL, offset, "update_time")
            pages += 1
            if pages == 1:  # "from now" is the newest end on the first page (server clock)
                page_newest = max((j.end_time for j in jobs if j.end_time), default=None)
                for sub in from_now:
                    sub.since, sub.caught_up = page_newest or newest or EPOCH, True
            for job in jobs:
                if job.is_terminal:  # a list that ignores the state filter must not end a wait
                    resolved += self._resolve(job)
                    for sub in self.subscriptions:
                        sub._offer(job)
                if job.end_time and (newest is None or job.end_time > newest):
                    newest = job.end_time
            offset += len(jobs)
            last_end = jobs[-1].end_time if jobs else None
            if not jobs or offset >= count:
                last_end = None  # the whole list was read
                break
            if pages >= limit:
                break
            if first and cutoff is None and newest is not None:
                cutoff = newest - FIRST_SCAN_LOOKBACK  # server time: the first page's newest end
            stop_at = cutoff if floor is None else floor if cutoff is None else min(cutoff, floor)
            if stop_at is None or (last_end is not None and last_end < stop_at):
                last_end = None
                break
        for sub in backfill:
            sub.caught_up = True
        if floor is not None and last_end is not None and last_end >= floor:
            log.warning(
                "The finished-job stream of project %s read %d pages back to %s, not to %s; "
                "older finished jobs are not delivered to %s",
                self.project,
                pages,
                last_end.isoformat(),
                floor.isoformat(),
                ", ".join(s.name for s in backfill),
            )
        self.high_water = newest or EPOCH
        return resolved

    async def _confirm_new(self) -> None:
        """Page the running list (resuming where the last round stopped) until new watches are seen."""
        unconfirmed = {job_id for job_id, ws in self.watches.items() if any(not w.confirmed for w in ws)}
        if not unconfirmed:
            self._confirm_offset = 0
            return
        if self._confirm_offset == 0:
            self._confirm_batch = set(unconfirmed)  # what a full pass must account for
        for _ in range(CONFIRM_PAGES_PER_ROUND):
            count, jobs, _ = await self._list(RUNNING, self._confirm_offset, "create_time")
            t = now()
            for job in jobs:
                if job.is_terminal:  # a list that ignores the state filter: its answer still counts
                    self._resolve(job)
                elif job.job_id in unconfirmed:
                    unconfirmed.discard(job.job_id)
                    for w in self.watches.get(job.job_id, []):
                        w.confirmed, w.last_verified = True, t
                        w._put(Observation(job))
            self._confirm_offset += len(jobs)
            if not jobs or self._confirm_offset >= count:
                # A full pass did not find them running: they ended since the finished scan (the
                # next one will say), long before it, are in an unlisted state, or are gone.
                for job_id in unconfirmed & self._confirm_batch:
                    for w in self.watches.get(job_id, []):
                        w.priority = True
                self._details_wake.set()
                self._confirm_offset = 0
                return
            if not unconfirmed:
                self._confirm_offset = 0
                return
