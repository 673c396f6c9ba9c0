"""One shared, quota-aware poller per tenant and event loop, for all picture-modeling triggers.

Why not poll each job: the job-details call allows 1 request/s per tenant, so per-job polling at a
60 s interval saturates at 60 jobs; 1,000 jobs want 16.7 calls/s, drown in 429s and notice a
finished job many minutes late.

The scheme (measured in ``benchmarks/bench_polling.py``; see the README's Performance section):

* **Finished scan.** Each round lists terminal jobs (``state=SUCCEED,PARTIAL_SUCCEED,FAILED,
  CANCELED``) newest first (``sort_key=update_time, sort_dir=desc``, 100 per page) and stops at the
  first job that ended before the previous round's high-water mark minus a safety margin. One call
  per round covers every watched job, however many; a busy round costs one call per 100 jobs that
  finished since the last one. Every watched job found there is done, with its full details. The
  first scan reads back an hour (at most 5 pages), for jobs that ended while no triggerer ran.
* **Confirmation scan, for new watches only.** A job that ended *before* the first finished scan
  would never show up in later ones, so each new watch is confirmed once in the list of running
  jobs (``state=WAITING,PROCESSING``, newest first). Jobs that are neither running nor among the
  recent finished ones (ended long ago, unknown state, or gone) get a details call: the only case
  the lists cannot answer.
* Rounds run when the earliest watch is due and serve all watches at once, so a job is never polled
  twice and each task's own ``poll_interval`` is still honoured. Calls go through the hook, so the
  client-side quota and ``Retry-After`` apply.

Polling the running list every round instead (scheme "running") costs ``ceil(running/100)`` calls
per round: 100 calls per round at 10,000 jobs, more than the quota allows at a 60 s interval. The
finished scan's cost follows the finish rate instead, which is what a quota of 1/s can afford.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import MetaStudioError, MetaStudioNotFoundError
from airflow_provider_metastudio.hooks.metastudio import MAX_PAGE_SIZE, JobPage, MetaStudioHook
from airflow_provider_metastudio.models import TERMINAL_STATES, JobState, PictureModelingJob

log = logging.getLogger(__name__)

TERMINAL = [s.value for s in TERMINAL_STATES]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
RUNNING = [JobState.WAITING.value, JobState.PROCESSING.value]
# Jobs may become visible in the finished list slightly out of end_time order; rescan this much
# (server time) behind the newest end_time already seen.
SAFETY_MARGIN = timedelta(seconds=120)
# The first scan of a poller (a triggerer that starts or restarts) reads back this far, in at most
# this many pages: jobs that ended while no triggerer watched them are found at once, instead of
# after two confirmation passes and a details call each (tens of rounds at 10,000 watches).
FIRST_SCAN_LOOKBACK = timedelta(hours=1)
FIRST_SCAN_PAGES = 5
# Confirmation pages per round, so confirming 10,000 new watches never starves the finished scan.
CONFIRM_PAGES_PER_ROUND = 10
# Details calls per round. They share nothing with the list calls but the round's time: a backlog
# of them (thousands, at 10,000 watches) must not hold back the next finished scan.
DETAILS_PER_ROUND = 10
# Offset paging of the running list skips jobs when others finish between two pages, so a watch
# must be missed by two full passes before it counts as "not running" and costs a details call.
PASSES_BEFORE_DETAILS = 2


@dataclass(eq=False)
class Watch:
    job_id: str
    interval: float
    future: asyncio.Future[PictureModelingJob]
    next_due: float = 0.0
    confirmed: bool = False  # seen running after the first finished scan
    # Round in which a full pass of the running list missed it. If the next finished scan does not
    # find it either, it ended before the first scan (or is gone): a details call must tell.
    missed_in_round: int | None = None
    missed_passes: int = 0
    needs_details: bool = False  # in a state the contract does not list: only details can tell
    on_state: Callable[[PictureModelingJob, str | None], object] | None = field(default=None, repr=False)

    def observe(self, job: PictureModelingJob, request_id: str | None) -> None:
        if self.on_state is not None:
            self.on_state(job, request_id)


class TenantPoller:
    """Watches jobs of one tenant (endpoint, project, credentials) in one event loop."""

    def __init__(self, hook: MetaStudioHook, key: tuple[str, ...]) -> None:
        self.hook = hook
        self.key = key
        self.watches: dict[str, list[Watch]] = {}
        self.high_water: datetime | None = None  # newest end_time seen (server clock)
        self._confirm_offset = 0
        self._confirm_batch: set[str] = set()
        self.rounds = 0
        self.calls = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.refs = 0

    # -- registration -----------------------------------------------------------------------------

    def watch(
        self,
        job_id: str,
        interval: float,
        on_state: Callable[[PictureModelingJob, str | None], object] | None = None,
    ) -> Watch:
        """Start watching; the returned watch's future resolves with the terminal job."""
        loop = asyncio.get_running_loop()
        w = Watch(job_id, interval, loop.create_future(), next_due=time.monotonic(), on_state=on_state)
        self.watches.setdefault(job_id, []).append(w)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=f"metastudio-poller-{self.key[1]}")
        return w

    def unwatch(self, w: Watch) -> None:
        ws = self.watches.get(w.job_id, [])
        if w in ws:
            ws.remove(w)
        if not ws:
            self.watches.pop(w.job_id, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    # -- rounds -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self.watches:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = time.monotonic()
            due = min(w.next_due for ws in self.watches.values() for w in ws)
            if due > now:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=due - now)
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                await self._round()
            except MetaStudioError as e:
                # Retries inside the hook did not cure it: every waiting trigger gets the error.
                self._fail_all(e)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never leave triggers waiting on a dead poller
                log.exception("MetaStudio poller for project %s failed", self.key[1])
                self._fail_all(e)

    async def _round(self) -> None:
        self.rounds += 1
        started = time.monotonic()
        for ws in self.watches.values():
            for w in ws:
                w.next_due = started + w.interval
        await self._finished_scan()
        await self._details_where_needed()
        await self._confirm_new()

    async def _list(self, states: list[str], offset: int, **kw: Any) -> JobPage:
        self.calls += 1
        return await self.hook.alist_picture_modeling_jobs_page(
            offset=offset, limit=MAX_PAGE_SIZE, states=states, sort_dir="desc", **kw
        )

    async def _finished_scan(self) -> None:
        first = self.high_water is None
        cutoff = self.high_water - SAFETY_MARGIN if self.high_water else None
        newest = self.high_water
        offset = pages = 0
        while self.watches:  # stops early once every watch is resolved
            count, jobs, request_id = await self._list(TERMINAL, offset, sort_key="update_time")
            pages += 1
            for job in jobs:
                self._resolve(job, request_id)
                if job.end_time and (newest is None or job.end_time > newest):
                    newest = job.end_time
            offset += len(jobs)
            if not jobs or offset >= count:
                break
            if first and cutoff is None and newest is not None:
                cutoff = newest - FIRST_SCAN_LOOKBACK  # server time: the first page's newest end
            last_end = jobs[-1].end_time
            if (first and pages >= FIRST_SCAN_PAGES) or cutoff is None:
                break
            if last_end is not None and last_end < cutoff:
                break
        # No finished job at all yet: the next scan must read everything that finishes meanwhile,
        # not just its first page.
        self.high_water = newest or _EPOCH

    async def _confirm_new(self) -> None:
        """Page the running list (resuming where the last round stopped) until new watches are seen."""
        unconfirmed = {job_id for job_id, ws in self.watches.items() if any(not w.confirmed for w in ws)}
        if not unconfirmed:
            self._confirm_offset = 0
            return
        if self._confirm_offset == 0:
            self._confirm_batch = set(unconfirmed)  # what a full pass must account for
        for _ in range(CONFIRM_PAGES_PER_ROUND):
            count, jobs, request_id = await self._list(RUNNING, self._confirm_offset, sort_key="create_time")
            for job in jobs:
                if job.job_id in unconfirmed:
                    unconfirmed.discard(job.job_id)
                    for w in self.watches.get(job.job_id, []):
                        w.confirmed = True
                        w.observe(job, request_id)
            self._confirm_offset += len(jobs)
            if not jobs or self._confirm_offset >= count:
                # A full pass did not find them running: they ended since the last finished scan
                # (the next one will say), long before it, are in an unlisted state, or are gone.
                for job_id in unconfirmed & self._confirm_batch:
                    for w in self.watches.get(job_id, []):
                        w.missed_passes += 1
                        if w.missed_passes >= PASSES_BEFORE_DETAILS and w.missed_in_round is None:
                            w.missed_in_round = self.rounds
                self._confirm_offset = 0
                return
            if not unconfirmed:
                self._confirm_offset = 0
                return

    def _needs_details(self, w: Watch) -> bool:
        return w.needs_details or (w.missed_in_round is not None and w.missed_in_round < self.rounds)

    async def _details_where_needed(self) -> None:
        due = [j for j, ws in self.watches.items() if any(self._needs_details(w) for w in ws)]
        for job_id in due[:DETAILS_PER_ROUND]:
            try:
                job, request_id = await self.hook.aget_picture_modeling_job_with_request_id(job_id)
            except MetaStudioNotFoundError as e:
                self._fail(job_id, e)
                continue
            self.calls += 1
            if job.is_terminal:
                self._resolve(job, request_id)
                continue
            for w in self.watches.get(job_id, []):
                w.observe(job, request_id)
                w.missed_in_round, w.missed_passes = None, 0
                w.confirmed = job.known_state is not None  # running after all: the lists will report it
                w.needs_details = not w.confirmed

    def _resolve(self, job: PictureModelingJob, request_id: str | None) -> None:
        for w in self.watches.pop(job.job_id, []):
            if not w.future.done():
                w.observe(job, request_id)
                w.future.set_result(job)

    def _fail(self, job_id: str, exc: BaseException) -> None:
        for w in self.watches.pop(job_id, []):
            if not w.future.done():
                w.future.set_exception(exc)

    def _fail_all(self, exc: BaseException) -> None:
        for job_id in list(self.watches):
            self._fail(job_id, exc)


# One poller per (event loop, tenant). dag.test() runs each trigger in its own asyncio.run(), so
# pollers are keyed by loop and never shared across loops.
_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], TenantPoller]] = (
    weakref.WeakKeyDictionary()
)


# A connection lookup costs about a millisecond of the event loop's CPU (secrets backends, Fernet);
# 10,000 triggers starting at once (a triggerer restart) would stall the loop for seconds. Triggers
# of one connection in one loop share a lookup for this long, so a changed connection is still seen.
CONFIG_TTL = 30.0
_CONFIGS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Task[MetaStudioConnectionConfig]]]
] = weakref.WeakKeyDictionary()


def tenant_key(hook: MetaStudioHook) -> tuple[str, ...]:
    cfg = hook.config
    identity = cfg.ak or cfg.user or "token"
    return (cfg.endpoint, cfg.project_id, cfg.auth_type, identity)


async def acquire(hook: MetaStudioHook) -> TenantPoller:
    """The shared poller for this hook's tenant in the running loop (reference counted)."""
    loop = asyncio.get_running_loop()
    configs = _CONFIGS.setdefault(loop, {})
    conn_id = hook.metastudio_conn_id
    entry = configs.get(conn_id)
    if entry is None or time.monotonic() - entry[0] >= CONFIG_TTL:
        # A task, so triggers starting together wait for one lookup instead of each making its own.
        entry = configs[conn_id] = (time.monotonic(), loop.create_task(hook.aget_config()))
    try:
        hook.adopt_config(await asyncio.shield(entry[1]))
    except Exception:
        if configs.get(conn_id) is entry:  # a failed lookup is not kept: the next trigger retries
            del configs[conn_id]
        raise
    per_loop = _POLLERS.setdefault(loop, {})
    key = tenant_key(hook)
    poller = per_loop.get(key)
    if poller is None:
        poller = per_loop[key] = TenantPoller(hook, key)
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
