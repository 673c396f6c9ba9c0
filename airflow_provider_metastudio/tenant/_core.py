"""The tenant client's shared state and vocabulary: constants, observations, watches, subscriptions.

Everything here is data and bookkeeping; the loops that fill it live in :mod:`.health`,
:mod:`.safety_net` and :mod:`.stream`, and :class:`~.poller.TenantPoller` puts them together.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.models import JobState, PictureModelingJob

if TYPE_CHECKING:
    from airflow_provider_metastudio.tenant.poller import TenantPoller
    from airflow_provider_metastudio.tenant.stream import Subscription

log = logging.getLogger("airflow_provider_metastudio.tenant")

# Fixed tuples, never built from a set: a set's order follows string hashes, which differ between
# processes, and the list query (and its signature) must be the same in every triggerer.
TERMINAL = (
    JobState.PARTIAL_SUCCEED.value,
    JobState.SUCCEED.value,
    JobState.FAILED.value,
    JobState.CANCELED.value,
)
RUNNING = (JobState.WAITING.value, JobState.PROCESSING.value)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Job times are whole seconds: a job that ended in the same second as the newest one seen may be
# listed after it. Rescan this far behind it.
END_TIME_MARGIN = timedelta(seconds=2)
# The first scan of a poller (a triggerer that starts or restarts) reads back this far, in at most
# this many pages: jobs that ended while no triggerer watched them are found at once.
FIRST_SCAN_LOOKBACK = timedelta(hours=1)
FIRST_SCAN_PAGES = 5
# A runaway scan (a service that ignores the sort, a burst of thousands) is cut here; the details
# loop catches whatever it leaves for waits.
MAX_SCAN_PAGES = 20
# Confirmation pages per round, so confirming 10,000 new watches never starves the finished scan.
CONFIRM_PAGES_PER_ROUND = 10
# The hook inside the poller retries little: the poller's own backoff keeps waiting far longer, and
# logs an outage once instead of a warning per retry.
POLLER_RETRY_LIMIT = 2
# 429s get more patience: with several triggerers on one tenant, the quota is shared by processes
# that do not know about each other; a 429 is a turn in the queue, not an outage to log.
POLLER_THROTTLE_RETRY_LIMIT = 6


def now() -> float:
    """The event loop's clock: ``time.monotonic()`` on a real loop, so timers and timestamps agree;
    a test's virtual clock under the unit tests, which run hours of polling in milliseconds."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:  # not in a loop: the clock a real loop would use
        return time.monotonic()


@dataclass(frozen=True)
class Observation:
    """What the poller tells one waiting trigger (or one stream subscription).

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
class Trouble:
    """A run of failures of one kind of call, logged once at its start and once at its end."""

    since: float
    error: BaseException
    failures: int = 1


class PollerState:
    """The state every part of the tenant client reads: the hook, the watches, the subscriptions.

    The class attributes are the tuning; tests and benchmarks may set them on an instance.
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
        self.subscriptions: list[Subscription] = []
        self.high_water: datetime | None = None  # newest end_time seen (server clock)
        self.busy = False
        self.rounds = 0
        self.list_calls = 0
        self.details_calls = 0
        self._list_wake = asyncio.Event()
        self._details_wake = asyncio.Event()
        self._troubles: dict[str, Trouble] = {}  # "list" / "details" -> the current outage
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []  # the two loops, while they run
        self._auth_since: float | None = None  # monotonic: first refusal of the current run
        self._net_next = 0.0  # monotonic: earliest next safety-net call
        self._last_round = 0.0  # monotonic: when the last list round began
        self._confirm_offset = 0  # where the running-list confirmation resumes
        self._confirm_batch: set[str] = set()  # what a full confirmation pass must account for
        self.refs = 0

    @property
    def project(self) -> str:
        return self.key[1]

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
        for sub in self.subscriptions:
            sub._notice(Observation(notice=text, level=level))

    # -- timing -----------------------------------------------------------------------------------

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
