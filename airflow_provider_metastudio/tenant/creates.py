"""The tenant's create queue: creates by URL from deferred tasks, first come first served, paced
by the create quota of the tenant client they share (one per tenant and triggerer event loop).

Why in the triggerer: every worker process has a limiter of its own, so 32 processes creating at
once exceed the tenant's quota together, draw 429s and starve some creates. Deferred creates of one
triggerer wait in one queue instead, and go out at the quota's pace (``rate_limits["create_by_url"]``,
the documented 2/s), in the order they arrived.

**Create once.** A trigger cannot tell a first run from a rerun: the triggerer may restart after
its create was sent, and Airflow's HA may run two copies of one trigger at once. So, as a task
retry does (``find_picture_modeling_jobs``), every request is first looked up by name: one list
read (newest first, back to the oldest request's ``created_since``, at most :data:`LOOKUP_PAGES`
pages) serves every request that arrived since the last one. A job of that name and style that is
running or succeeded is adopted instead of created. Names are unique per task run (the operator's
default), so one task makes one job. A 429 means the service did not take the create: it is
retried (``Retry-After`` + jitter) until the request's deadline. Any other failure of a create is
the request's answer (a 5xx may hide a created job: the task's retry adopts it by name).

What is left: two copies of one trigger that both pass the lookup before either's create is
listed (within about a second of each other) still make two jobs; Airflow starts the second copy
only after the first triggerer missed its heartbeats, so this needs a create stuck that long.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from airflow_provider_metastudio import metrics
from airflow_provider_metastudio.api import MAX_PAGE_SIZE
from airflow_provider_metastudio.models import JobState, PictureModelingJob
from airflow_provider_metastudio.tenant._core import log, now

if TYPE_CHECKING:
    from airflow_provider_metastudio.tenant.poller import TenantPoller

# Creates sent at once: enough to keep the quota busy when a create takes longer than its turn,
# few enough that the queue, not the rate limiter, decides the order.
IN_FLIGHT = 4
# A name lookup reads at most this many pages (newest first); a tenant creating more than that
# many jobs within the lookup window is beyond what a name lookup can cover.
LOOKUP_PAGES = 20
ADOPTABLE = (JobState.WAITING.value, JobState.PROCESSING.value, JobState.SUCCEED.value)


@dataclass(frozen=True)
class CreateRequest:
    """One deferred create by URL; ``created_since`` bounds the name lookup (service clock)."""

    picture_url: str = field(repr=False)  # may be a pre-signed URL: never in a repr or a log line
    style_id: str
    name: str
    created_since: datetime
    notify_url: str | None = field(default=None, repr=False)
    deadline: float | None = None  # time.time(): a throttled create keeps trying until then
    accept_partial_success: bool = True

    def adoptable(self, job: PictureModelingJob) -> bool:
        if job.name != self.name or job.style_id != self.style_id:
            return False
        ok = ADOPTABLE + ((JobState.PARTIAL_SUCCEED.value,) if self.accept_partial_success else ())
        return job.state in ok


@dataclass(frozen=True)
class CreateOutcome:
    """The job a request got: created now, or ``adopted`` (found by name: an earlier run's)."""

    job_id: str
    model_asset_id: str
    queued_seconds: float
    adopted: PictureModelingJob | None = None


@dataclass(eq=False)
class _Item:
    request: CreateRequest
    future: asyncio.Future[CreateOutcome]
    enqueued: float
    checked: bool = False  # a name lookup that began after it arrived found no job to adopt


class CreateQueue:
    """First come, first served creates of one tenant client (see the module docstring)."""

    def __init__(self, poller: TenantPoller) -> None:
        self.poller = poller
        self._items: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.lookups = 0  # list calls made by name lookups
        self.creates = 0  # create calls made (a 429's retries are the hook's, not counted here)

    def __len__(self) -> int:
        return len(self._items)

    async def submit(self, request: CreateRequest) -> CreateOutcome:
        """Queue ``request`` and return its job once created or adopted; raises the create's error.

        Cancelling (the trigger's deadline, the trigger removed) takes a request that was not sent
        out of the queue; one already sent completes, and its job is found by name next time.
        """
        loop = asyncio.get_running_loop()
        item = _Item(request, loop.create_future(), now())
        self._items.append(item)
        metrics.gauge("creates.queued", len(self._items))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=f"metastudio-creates-{self.poller.project}")
        try:
            return await asyncio.shield(item.future)
        except asyncio.CancelledError:
            if item in self._items:
                self._items.remove(item)
            raise

    async def close(self) -> None:
        for task in [self._task, *self._in_flight]:
            if task is not None:
                task.cancel()
        pending = [t for t in [self._task, *self._in_flight] if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=5)
        for item in self._items:
            if not item.future.done():
                item.future.cancel()
        self._items.clear()

    async def _run(self) -> None:
        failures = 0
        while self._items or self._in_flight:
            head = self._items[0] if self._items else None
            if head is not None and not head.checked:
                try:
                    await self._lookup([i for i in self._items if not i.checked])
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the requests wait; each has its own deadline
                    failures += 1
                    log.warning("Looking up queued creates by name failed (%s); retrying", e)
                    await asyncio.sleep(self.poller._backoff(failures))
                else:
                    failures = 0
                continue
            if head is not None and len(self._in_flight) < IN_FLIGHT:
                self._items.popleft()
                metrics.gauge("creates.queued", len(self._items))
                task = asyncio.get_running_loop().create_task(self._create(head))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                await asyncio.sleep(0)  # it takes its turn at the rate limiter before the next one
                continue
            # Nothing to send now: wait for a new request or for a create to finish.
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({waiter, *self._in_flight}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def _lookup(self, items: list[_Item]) -> None:
        """One name lookup for every request that arrived since the last one began."""
        since = min(i.request.created_since for i in items)
        found: list[PictureModelingJob] = []
        offset = 0
        for _ in range(LOOKUP_PAGES):
            self.lookups += 1
            count, jobs, _ = await self.poller.hook.alist_picture_modeling_jobs_page(
                offset=offset,
                limit=MAX_PAGE_SIZE,
                sort_key="create_time",
                sort_dir="desc",
                create_since=since,
            )
            found += jobs
            offset += len(jobs)
            if not jobs or offset >= count:
                break
        for item in items:
            item.checked = True
            job = next((j for j in found if item.request.adoptable(j)), None)
            if job is not None and item in self._items:
                self._items.remove(item)
                self._settle(
                    item, CreateOutcome(job.job_id, job.model_asset_id or "", now() - item.enqueued, job)
                )

    async def _create(self, item: _Item) -> None:
        r = item.request
        waited = now() - item.enqueued
        metrics.timing("creates.queue_wait", waited)
        try:
            self.creates += 1
            created = await self.poller.hook.acreate_picture_modeling_job_by_url(
                picture_url=r.picture_url,
                style_id=r.style_id,
                name=r.name,
                notify_url=r.notify_url,
                deadline=r.deadline,
            )
        except asyncio.CancelledError:
            item.future.cancel()
            raise
        except Exception as e:  # the service's answer (or a failure) is the request's outcome
            if not item.future.done():
                item.future.set_exception(e)
            return
        self._settle(item, CreateOutcome(created.job_id, created.model_asset_id, waited))

    @staticmethod
    def _settle(item: _Item, outcome: CreateOutcome) -> None:
        if not item.future.done():
            item.future.set_result(outcome)
