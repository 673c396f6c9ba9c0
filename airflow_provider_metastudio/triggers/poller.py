"""One shared, quota-aware poller per tenant and event loop, for all picture-modeling triggers.

Why not poll each job: the job-details call allows 1 request/s per tenant, so per-job polling at a
60 s interval saturates at 60 jobs; 1,000 jobs want 16.7 calls/s, drown in 429s and notice a
finished job many minutes late.

Two loops run side by side, each under its own quota (list: 1/s, details: 1/s by default):

* **The list loop** (fast path). Each round lists terminal jobs (``state=PARTIAL_SUCCEED,SUCCEED,
  FAILED,CANCELED``) newest first (``sort_key=update_time, sort_dir=desc``, 100 per page) and reads
  only what is new: it stops at the first job that ended before the newest end time already seen
  (less a few seconds, since times are whole seconds). One call per round covers every watched job;
  a busy round costs one call per 100 jobs that finished since the last one, and after a round that
  found a watched job done, the next one comes sooner (:attr:`TenantPoller.busy_interval`), so a
  burst of finishing jobs is reported at the pace the list quota allows. The first scan of a
  poller reads back an hour (at most 5 pages), for jobs that ended while no triggerer ran. New
  watches are also looked for once in the list of running jobs (``state=WAITING,PROCESSING``).
* **The details loop** (safety net). The list semantics are not confirmed by the contract (sort by
  ``update_time``, that it equals the end time, immediate visibility, stable offset paging), so they
  are only an optimisation: every watch also gets a details call of its own, round-robin, at least
  every :attr:`TenantPoller.net_rounds` of its poll intervals (60 s at least), paced to
  :attr:`TenantPoller.net_share` of the details quota so sync pokes of workers keep the rest.
  A job the lists miss (vanished, listed late with an old ``update_time``, listed out of order,
  skipped by paging) is therefore resolved within about
  ``max(net_rounds * poll_interval, 60 s, watches / (net_share * details quota))`` - at the defaults
  and 1/s, ``max(6 * poll_interval, 60 s, 2 s * watches)``. New watches that a full pass of the
  running list did not find, and jobs in a state the contract does not list, get theirs first.

Errors are handled by what they mean:

* A definitive answer about one job (404, or 400 to a details call, whose only variable part is the
  job id) ends only that job's watches.
* Transient errors (5xx, gateway pages, connection errors, 429 after the hook's retries, malformed
  bodies, anything unexpected) end no wait: the loop backs off with jitter and keeps every watch.
  An outage is logged once when it starts and once when it ends, in the triggerer's log and, through
  each watch, in every waiting task's own log.
* Authentication errors (401/403) end the tenant's waits only when they persist for
  :attr:`TenantPoller.auth_patience` (5 minutes); meanwhile the connection is looked up again after
  each refusal, so a connection fixed in Airflow is picked up without restarting anything.

The poller only observes: every observation goes to the waiting trigger's own queue, and the trigger
logs it in its task's context (see :class:`Observation`). Each trigger keeps its own deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from airflow_provider_metastudio.api import MAX_PAGE_SIZE, JobPage
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioBadRequestError,
    MetaStudioError,
    MetaStudioNotFoundError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.models import JobState, PictureModelingJob

log = logging.getLogger(__name__)

# Fixed tuples, never built from a set: a set's order follows string hashes, which differ between
# processes, and the list query (and its signature) must be the same in every triggerer.
TERMINAL = (
    JobState.PARTIAL_SUCCEED.value,
    JobState.SUCCEED.value,
    JobState.FAILED.value,
    JobState.CANCELED.value,
)
RUNNING = (JobState.WAITING.value, JobState.PROCESSING.value)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Job times are whole seconds: a job that ended in the same second as the newest one seen may be
# listed after it. Rescan this far behind it.
END_TIME_MARGIN = timedelta(seconds=2)
# The first scan of a poller (a triggerer that starts or restarts) reads back this far, in at most
# this many pages: jobs that ended while no triggerer watched them are found at once.
FIRST_SCAN_LOOKBACK = timedelta(hours=1)
FIRST_SCAN_PAGES = 5
# A runaway scan (a service that ignores the sort, a burst of thousands) is cut here; the details
# loop catches whatever it leaves.
MAX_SCAN_PAGES = 20
# Confirmation pages per round, so confirming 10,000 new watches never starves the finished scan.
CONFIRM_PAGES_PER_ROUND = 10
# The hook inside the poller retries little: the poller's own backoff keeps waiting far longer, and
# logs an outage once instead of a warning per retry.
POLLER_RETRY_LIMIT = 2
# 429s get more patience: with several triggerers on one tenant, the quota is shared by processes
# that do not know about each other; a 429 is a turn in the queue, not an outage to log.
POLLER_THROTTLE_RETRY_LIMIT = 6


def _now() -> float:
    """The event loop's clock: ``time.monotonic()`` on a real loop, so timers and timestamps agree;
    a test's virtual clock under the unit tests, which run hours of polling in milliseconds."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:  # not in a loop: the clock a real loop would use
        return time.monotonic()


@dataclass(frozen=True)
class Observation:
    """What the poller tells one waiting trigger.

    Exactly one of ``job`` (a state seen; terminal ends the wait), ``error`` (a definitive answer:
    the wait ends with it) and ``notice`` (an outage began or ended: log it and keep waiting).
    """

    job: PictureModelingJob | None = None  # with the X-Request-Id of the answer that showed it
    error: BaseException | None = None
    notice: str | None = None
    level: int = logging.INFO


@dataclass(eq=False)
class Watch:
    """One trigger's wait for one job; ``next()`` hands it the poller's observations in order."""

    job_id: str
    interval: float
    poller: TenantPoller = field(repr=False)
    queue: asyncio.Queue[Observation] = field(default_factory=asyncio.Queue, repr=False)
    next_due: float = 0.0  # monotonic: when this watch wants the next list round
    confirmed: bool = False  # seen in a list or a details answer since the watch began
    last_verified: float | None = None  # monotonic time of the last answer about this job alone
    priority: bool = False  # a full pass of the running list missed it: a details call must tell
    unknown_state: bool = False  # a state the contract does not list: only details can tell
    done: bool = False

    async def next(self) -> Observation:
        return await self.queue.get()

    async def read(self) -> PictureModelingJob:
        """One details call now, through the tenant's hook and quota (a trigger's final look)."""
        return await self.poller.hook.aget_picture_modeling_job(self.job_id)

    def _put(self, obs: Observation) -> None:
        if not self.done:
            self.queue.put_nowait(obs)


@dataclass
class _Trouble:
    """A run of failures of one kind of call, logged once at its start and once at its end."""

    since: float
    error: BaseException
    failures: int = 1


class TenantPoller:
    """Watches jobs of one tenant (endpoint, project, identity, headers) in one event loop.

    The attributes below are its tuning; tests and benchmarks may set them on an instance.
    """

    busy_interval = 2.0  # seconds between list rounds while watched jobs keep finishing
    net_rounds = 6  # a details call per watch at least every this many of its poll intervals...
    net_min_period = 60.0  # ...but not more often than this
    net_share = 0.5  # share of the details quota the safety net may use
    backoff_base = 1.0
    backoff_max = 30.0
    auth_patience = 300.0  # seconds of refused authentication before the waits end

    def __init__(self, conn_id: str, hook: MetaStudioHook, key: tuple[str, ...]) -> None:
        self.conn_id = conn_id
        self.hook = hook
        self.key = key
        self.watches: dict[str, list[Watch]] = {}
        self.high_water: datetime | None = None  # newest end_time seen (server clock)
        self.busy = False
        self._confirm_offset = 0
        self._confirm_batch: set[str] = set()
        self.rounds = 0
        self.list_calls = 0
        self.details_calls = 0
        self._list_wake = asyncio.Event()
        self._details_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._troubles: dict[str, _Trouble] = {}  # "list" / "details" -> the current outage
        self._auth_since: float | None = None
        self._net_next = 0.0  # monotonic: earliest next safety-net call
        self._closed = False
        self._last_round = 0.0
        self.refs = 0

    @property
    def project(self) -> str:
        return self.key[1]

    # -- registration -----------------------------------------------------------------------------

    def watch(self, job_id: str, interval: float) -> Watch:
        """Start watching ``job_id``; observations arrive on the returned watch."""
        w = Watch(job_id, interval, self, next_due=_now())
        self.watches.setdefault(job_id, []).append(w)
        for trouble in self._troubles.values():  # a wait that starts during an outage hears of it
            w._put(Observation(notice=self._outage_text(trouble), level=logging.WARNING))
        self._list_wake.set()
        self._details_wake.set()
        if not self._tasks or any(t.done() for t in self._tasks):
            self._start()
        return w

    def unwatch(self, w: Watch) -> None:
        w.done = True
        ws = self.watches.get(w.job_id, [])
        if w in ws:
            ws.remove(w)
        if not ws:
            self.watches.pop(w.job_id, None)

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

    # -- the list loop ----------------------------------------------------------------------------

    async def _list_loop(self) -> None:
        failures = 0
        while not self._closed:
            if not self.watches:
                self._list_wake.clear()
                await self._list_wake.wait()
                continue
            delay = self._list_due() - _now()
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
            self._recovered("list")

    def _list_due(self) -> float:
        due = min(w.next_due for ws in self.watches.values() for w in ws)
        if self.busy:
            due = min(due, self._last_round + self.busy_interval)
        return due

    async def _list_round(self) -> None:
        self.rounds += 1
        started = self._last_round = _now()
        for ws in self.watches.values():
            for w in ws:
                w.next_due = started + w.interval
        self.busy = await self._finished_scan() > 0
        await self._confirm_new()

    async def _list(self, states: tuple[str, ...], offset: int, sort_key: str) -> JobPage:
        self.list_calls += 1
        return await self.hook.alist_picture_modeling_jobs_page(
            offset=offset, limit=MAX_PAGE_SIZE, states=states, sort_key=sort_key, sort_dir="desc"
        )

    async def _finished_scan(self) -> int:
        """Read the finished jobs that are new since the last scan; return how many watches ended."""
        first = self.high_water is None
        cutoff = None if self.high_water is None else self.high_water - END_TIME_MARGIN
        newest = self.high_water
        offset = pages = resolved = 0
        while self.watches:  # stops early once every watch is resolved
            count, jobs, _ = await self._list(TERMINAL, offset, "update_time")
            pages += 1
            for job in jobs:
                if job.is_terminal:  # a list that ignores the state filter must not end a wait
                    resolved += self._resolve(job)
                if job.end_time and (newest is None or job.end_time > newest):
                    newest = job.end_time
            offset += len(jobs)
            if not jobs or offset >= count or pages >= (FIRST_SCAN_PAGES if first else MAX_SCAN_PAGES):
                break
            if first and cutoff is None and newest is not None:
                cutoff = newest - FIRST_SCAN_LOOKBACK  # server time: the first page's newest end
            last_end = jobs[-1].end_time
            if cutoff is None or (last_end is not None and last_end < cutoff):
                break
        self.high_water = newest or _EPOCH
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
            now = _now()
            for job in jobs:
                if job.is_terminal:  # a list that ignores the state filter: its answer still counts
                    self._resolve(job)
                elif job.job_id in unconfirmed:
                    unconfirmed.discard(job.job_id)
                    for w in self.watches.get(job.job_id, []):
                        w.confirmed, w.last_verified = True, now
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

    # -- the details loop (safety net) ------------------------------------------------------------

    def _check_every(self, w: Watch) -> float:
        if w.unknown_state:
            return w.interval
        return max(self.net_rounds * w.interval, self.net_min_period)

    def _next_details(self, now: float) -> tuple[str | None, float]:
        """The job to ask about next and whether it is paced by the net: (job id, wait seconds)."""
        best: tuple[float, str] | None = None
        for job_id, ws in self.watches.items():
            for w in ws:
                if w.priority:
                    return job_id, 0.0
                if w.last_verified is None:
                    due = -1.0 if not w.confirmed else now  # new watches before the round-robin
                else:
                    due = w.last_verified + self._check_every(w)
                if best is None or due < best[0]:
                    best = (due, job_id)
        if best is None:
            return None, 3600.0
        wait = max(best[0] - now, self._net_next - now, 0.0)
        return (best[1] if wait <= 0 else None), wait

    async def _details_loop(self) -> None:
        failures = 0
        while not self._closed:
            now = _now()
            job_id, wait = self._next_details(now)
            if job_id is None:
                self._details_wake.clear()
                await self._sleep(self._details_wake, wait)
                continue
            ws = self.watches.get(job_id, [])
            if not any(w.priority for w in ws):
                rate = (self.hook.config.rate_limits or {}).get("show") or 1.0
                self._net_next = now + 1.0 / (rate * self.net_share)
            try:
                self.details_calls += 1
                job = await self.hook.aget_picture_modeling_job(job_id)
            except asyncio.CancelledError:
                raise
            except (MetaStudioNotFoundError, MetaStudioBadRequestError) as e:
                self._recovered("details")
                self._end(job_id, e)
                continue
            except Exception as e:
                failures += 1
                for w in ws:  # asked about, even if unanswered: the round-robin moves on
                    w.last_verified = _now()
                    w.priority = False
                await self._failed("details", e)
                await asyncio.sleep(self._backoff(failures))
                continue
            failures = 0
            self._recovered("details")
            if job.is_terminal:
                self._resolve(job)
                continue
            for w in self.watches.get(job_id, []):
                w.last_verified = _now()
                w.confirmed, w.priority = True, False
                w.unknown_state = job.known_state is None
                w._put(Observation(job))

    # -- outcomes ---------------------------------------------------------------------------------

    def _resolve(self, job: PictureModelingJob) -> int:
        ws = self.watches.pop(job.job_id, [])
        for w in ws:
            w._put(Observation(job))
            w.done = True
        return len(ws)

    def _end(self, job_id: str, exc: BaseException) -> None:
        for w in self.watches.pop(job_id, []):
            w._put(Observation(error=exc))
            w.done = True

    def _notify_all(self, text: str, level: int) -> None:
        for ws in self.watches.values():
            for w in ws:
                w._put(Observation(notice=text, level=level))

    def _outage_text(self, trouble: _Trouble) -> str:
        return (
            f"MetaStudio answers no calls for project {self.project} since "
            f"{_now() - trouble.since:.0f}s ago ({trouble.error}); still waiting, retrying"
        )

    async def _failed(self, call: str, e: Exception) -> None:
        now = _now()
        if isinstance(e, MetaStudioAuthError):
            await self._auth_failed(e, now)
        elif not isinstance(e, MetaStudioError):
            log.warning("Unexpected error in the MetaStudio poller (%s call)", call, exc_info=e)
        trouble = self._troubles.get(call)
        if trouble is not None:
            trouble.failures += 1
            trouble.error = e
            return
        self._troubles[call] = _Trouble(now, e)
        text = (
            f"MetaStudio {call} calls fail for project {self.project} ({e}); "
            f"every wait is kept and retried with backoff"
        )
        log.warning("%s", text)
        self._notify_all(text, logging.WARNING)

    def _recovered(self, call: str) -> None:
        self._auth_since = None
        trouble = self._troubles.pop(call, None)
        if trouble is None:
            return
        text = (
            f"MetaStudio {call} calls work again for project {self.project} after "
            f"{_now() - trouble.since:.0f}s ({trouble.failures} failed rounds of retries)"
        )
        log.info("%s", text)
        self._notify_all(text, logging.INFO)

    async def _auth_failed(self, e: MetaStudioAuthError, now: float) -> None:
        if self._auth_since is None:
            self._auth_since = now
        elif now - self._auth_since >= self.auth_patience:
            err = MetaStudioAuthError(
                f"{e} - authentication was refused for {now - self._auth_since:.0f}s "
                f"(the poller's patience is {self.auth_patience:.0f}s); fix the connection "
                f"{self.conn_id!r} and retry the task",
                status=e.status,
                error_code=e.error_code,
                error_msg=e.error_msg,
                request_id=e.request_id,
                call=e.call,
            )
            for job_id in list(self.watches):
                self._end(job_id, err)
            self._auth_since = None
            return
        # The connection may have been fixed meanwhile: look it up again, use it if it changed.
        _HOOKS.get(asyncio.get_running_loop(), {}).pop(self.conn_id, None)
        try:
            hook = await _hook(self.conn_id)
        except Exception as lookup_error:  # a broken lookup is one more reason to keep waiting
            log.warning("Looking up connection %r again failed: %s", self.conn_id, lookup_error)
            return
        if hook.config != self.hook.config:
            log.info(
                "Connection %r changed; the poller for project %s uses it now", self.conn_id, self.project
            )
            old, self.hook = self.hook, hook
            await old.aclose()

    def _backoff(self, failures: int) -> float:
        # Full jitter: pollers of several triggerers that failed together do not retry together.
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** min(failures, 10)))

    @staticmethod
    async def _sleep(event: asyncio.Event, seconds: float) -> None:
        event.clear()
        try:
            await asyncio.wait_for(event.wait(), timeout=max(seconds, 0.0))
        except asyncio.TimeoutError:
            pass


# One poller per (event loop, tenant). dag.test() runs each trigger in its own asyncio.run(), so
# pollers are keyed by loop and never shared across loops.
_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], TenantPoller]] = (
    weakref.WeakKeyDictionary()
)


# A connection lookup costs about a millisecond of the event loop's CPU (secrets backends, Fernet);
# 10,000 triggers starting at once (a triggerer restart) would stall the loop for seconds. Triggers
# of one connection in one loop share a lookup for this long, so a changed connection is still seen.
CONFIG_TTL = 30.0
_HOOKS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Task[MetaStudioHook]]]
] = weakref.WeakKeyDictionary()


def _digest(*values: str | None) -> str:
    # Secrets take part in the key only as a digest: the key may appear in a debugger or a repr.
    return hashlib.sha256("\0".join(v or "" for v in values).encode()).hexdigest()[:16]


def tenant_key(config: MetaStudioConnectionConfig) -> tuple[str, ...]:
    """Everything that changes what a call sends: two configs with the same key share a poller."""
    return (
        config.endpoint,
        config.project_id,
        config.auth_type,
        config.ak or config.user or "",
        config.app_user_id or "",
        _digest(config.sk, config.token, config.password, config.security_token, config.domain),
        _digest(config.iam_endpoint, str(config.verify), repr(config.timeout), repr(config.rate_limits)),
    )


async def _lookup_hook(conn_id: str) -> MetaStudioHook:
    """A hook for a poller, its connection looked up (and its secrets masked) without blocking."""
    hook = MetaStudioHook(
        conn_id,
        retry_limit=POLLER_RETRY_LIMIT,
        throttle_retry_limit=POLLER_THROTTLE_RETRY_LIMIT,
        retry_log_level=logging.DEBUG,
    )
    await hook.aget_config()
    return hook


async def _hook(conn_id: str) -> MetaStudioHook:
    """The poller hook of ``conn_id``, looked up once per :data:`CONFIG_TTL` in this loop. Its config
    says which tenant poller the connection's triggers join; the poller that starts keeps it."""
    loop = asyncio.get_running_loop()
    hooks = _HOOKS.setdefault(loop, {})
    entry = hooks.get(conn_id)
    if entry is None or _now() - entry[0] >= CONFIG_TTL:
        # A task, so triggers starting together wait for one lookup instead of each making its own.
        entry = hooks[conn_id] = (_now(), loop.create_task(_lookup_hook(conn_id)))
    try:
        return await asyncio.shield(entry[1])
    except Exception:
        if hooks.get(conn_id) is entry:  # a failed lookup is not kept: the next trigger retries
            del hooks[conn_id]
        raise


async def acquire(conn_id: str) -> TenantPoller:
    """The shared poller for this connection's tenant in the running loop (reference counted)."""
    hook = await _hook(conn_id)
    per_loop = _POLLERS.setdefault(asyncio.get_running_loop(), {})
    key = tenant_key(hook.config)
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
