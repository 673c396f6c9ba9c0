"""An asset watcher's trigger: every model the tenant finishes becomes one asset event.

``MetaStudioModelLibraryTrigger`` rides the tenant's stream of finished jobs (the same list calls
that the job waits on this triggerer already make) and yields one ``TriggerEvent`` per job that
passes its filters. Airflow turns each into an asset event whose ``extra["payload"]`` holds
``model_asset_id``, ``job_id``, ``name``, ``style_id``, ``state``, ``end_time`` and ``dedupe_key``
(``<end_time>/<job_id>``), never a URL.

Delivery, by Airflow line:

* **3.3**: none lost; across a triggerer stop (SIGTERM or SIGKILL) only the events Airflow stored
  but had not yet confirmed to the watcher come again. The trigger runs as a shared stream in ack
  mode: Airflow calls :meth:`_WatermarkProducer.advance` only for models whose events it has
  stored, and then the watermark (the newest end time delivered and the job ids of the
  :data:`WINDOW` before it) is written to the watched asset's ``asset_state_store``. A restarted
  watcher reads it back and resumes there. Airflow 3.3.2 gives a trigger no read of the stored
  events themselves (its triggerer answers no ``GetAssetEventByAsset`` from triggers), so an event
  stored whose confirmation (a state sync later) had not reached the watcher is delivered again
  with the same ``dedupe_key``: a second or two of events in steady flow, a whole catch-up burst
  if the stop lands right after one. The same holds when Airflow moves the watcher on its own (a
  triggerer runner it declared deadlocked).
* **3.0-3.2**: no store a trigger can write: each start replays ``restart_replay`` seconds (at
  least once, duplicates bounded by that window and marked by the repeated ``dedupe_key``).
* **2.11**: no asset watchers; constructing the trigger fails, naming the alternative.

Two triggerers (HA): Airflow runs each watcher on one triggerer at a time; when it moves (a
triggerer died), the new one resumes from the stored watermark, so the duplicates are the same
bounded few.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Hashable, Sequence
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_metastudio import metrics, tenant
from airflow_provider_metastudio._compat import AIRFLOW_V_3, AirflowException
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioInvalidResponseError,
    MetaStudioValidationError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.models import JobState, PictureModelingJob, parse_time
from airflow_provider_metastudio.triggers.model_asset import MetaStudioModelAssetTrigger
from airflow_provider_metastudio.validation import validate_text, validate_wait_settings

try:  # Airflow >= 3.0
    from airflow.triggers.base import BaseEventTrigger
except ImportError:  # Airflow 2.11: the class refuses to be built (see __init__)
    BaseEventTrigger = BaseTrigger  # type: ignore[misc,assignment]

try:  # Airflow >= 3.3
    from airflow.triggers.shared_stream import AdvanceItem, SharedStreamProducer
except ImportError:  # Airflow 2.11-3.2: no ack mode; run() is used
    AdvanceItem = Any  # type: ignore[misc,assignment]
    SharedStreamProducer = object  # type: ignore[misc,assignment]

DEFAULT_STATES = (JobState.SUCCEED.value, JobState.PARTIAL_SUCCEED.value)
WATERMARK_KEY = "metastudio_model_library_watermark"
# Job ids remembered behind the newest end time delivered: a job the stream hands over late (it
# ended before a job already delivered) is still told apart from one delivered before a restart.
WINDOW = timedelta(minutes=5)
MAX_REMEMBERED = 5000
# With nothing new, the stream still moves on this often, so Airflow sees the last model's event
# resolved and the watermark covers it within seconds, not at the next model.
TICK_SECONDS = 2.0
# The ACTIVED wait ends before Airflow's ack timeout (300 s) would fail the watcher.
ASSET_WAIT_SECONDS = 240.0

_TICK = object()  # the stream moved on without a new item


def dedupe_key(job: PictureModelingJob) -> str:
    end = job.end_time.isoformat() if job.end_time else ""
    return f"{end}/{job.job_id}"


class Watermark:
    """What was delivered: the newest end time, and the ids that ended in the :data:`WINDOW` before it;
    ``floor`` is where the watcher began (what ended before it is history, never delivered).

    Stored as JSON in the asset's state store (Airflow 3.3); the ids are bounded by
    :data:`MAX_REMEMBERED`.
    """

    def __init__(
        self, newest: datetime | None = None, ids: dict[str, str] | None = None, floor: datetime | None = None
    ) -> None:
        self.newest = newest
        self.ids: dict[str, str] = dict(ids or {})  # job id -> end time (RFC 3339)
        self.floor = floor

    @classmethod
    def from_json(cls, value: Any) -> Watermark | None:
        if not isinstance(value, dict) or not value.get("newest"):
            return None
        return cls(
            parse_time(value["newest"], "newest"),
            value.get("ids") or {},
            parse_time(value.get("floor"), "floor"),
        )

    def to_json(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {"newest": iso(self.newest), "ids": self.ids, "floor": iso(self.floor)}

    def covers(self, job: PictureModelingJob) -> bool:
        """Delivered before (the id is remembered, or it ended before the window) or history."""
        if self.newest is None or job.end_time is None:
            return False
        if self.floor is not None and job.end_time < self.floor:
            return True
        return job.job_id in self.ids or job.end_time < self.newest - WINDOW

    def add(self, job: PictureModelingJob) -> None:
        if job.end_time is None:
            return
        if self.newest is None or job.end_time > self.newest:
            self.newest = job.end_time
        self.ids[job.job_id] = job.end_time.isoformat()
        floor = self.newest - WINDOW
        kept = sorted(
            ((i, t) for i, t in self.ids.items() if (parse_time(t, "end_time") or floor) >= floor),
            key=lambda it: it[1],
        )
        self.ids = dict(kept[-MAX_REMEMBERED:])


def _accessors(store: Any) -> list[Any]:
    """Each watched asset's accessor (a trigger shared by several assets writes to each)."""
    found = [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
    return found or [store]


# Ack mode hands the producer only the trigger's kwargs; the running trigger, whose asset state
# store Airflow injected, registers here under its shared-stream key.
_LIVE: dict[Hashable, MetaStudioModelLibraryTrigger] = {}


class MetaStudioModelLibraryTrigger(BaseEventTrigger):
    """Yield one event per finished picture-modeling job (for ``AssetWatcher``, Airflow >= 3.0).

    :param name: the watcher's name, in its log lines and metrics.
    :param metastudio_conn_id: the ``metastudio`` connection (its tenant).
    :param states: job states that count (``SUCCEED``, ``PARTIAL_SUCCEED``, ``FAILED``, ``CANCELED``).
    :param style_ids: only jobs of these style ids (None: any).
    :param name_pattern: only jobs whose name matches this glob (``nightly-*``; a plain prefix is
        ``prefix*``). None: any.
    :param wait_for_active: fire only when the job's model asset is ``ACTIVED`` (or has failed,
        with ``asset_state`` in the event), read through the model-asset trigger.
    :param since: RFC 3339 time; models that ended from then on, also before the watcher was
        deployed. None: from the watcher's first start (Airflow 3.3 remembers it).
    :param poll_interval: seconds between the tenant's list rounds.
    :param restart_replay: seconds replayed when no watermark is stored (Airflow 3.0-3.2 restarts).
    """

    def __init__(
        self,
        name: str,
        metastudio_conn_id: str = MetaStudioHook.default_conn_name,
        states: Sequence[str] = DEFAULT_STATES,
        style_ids: Sequence[str] | None = None,
        name_pattern: str | None = None,
        wait_for_active: bool = False,
        since: str | None = None,
        poll_interval: float = 10.0,
        restart_replay: float = 300.0,
    ) -> None:
        if not AIRFLOW_V_3:
            raise AirflowException(
                "MetaStudioModelLibraryTrigger needs Airflow >= 3.0 (asset watchers); on Airflow 2 "
                "schedule a DAG that lists the finished jobs and waits with "
                "MetaStudioPictureModelingJobSensor instead"
            )
        super().__init__()
        self.name = validate_text(name, "name")
        self.metastudio_conn_id = validate_text(metastudio_conn_id, "metastudio_conn_id")
        if isinstance(states, str) or not states:
            raise MetaStudioValidationError("states", f"{states!r} is not a non-empty list of job states")
        for s in states:
            if not JobState.is_terminal(s):
                raise MetaStudioValidationError(
                    "states",
                    f"{s!r} is not a terminal job state (SUCCEED, PARTIAL_SUCCEED, FAILED, CANCELED)",
                )
        self.states = [JobState(s).value for s in states]
        if isinstance(style_ids, str):
            raise MetaStudioValidationError("style_ids", "must be a list of style ids, not one string")
        self.style_ids = None if style_ids is None else [validate_text(s, "style_ids") for s in style_ids]
        self.name_pattern = None if name_pattern is None else validate_text(name_pattern, "name_pattern")
        self.wait_for_active = bool(wait_for_active)
        if since is not None:
            try:
                parse_time(since, "since")
            except MetaStudioInvalidResponseError:
                raise MetaStudioValidationError("since", f"{since!r:.80} is not an RFC 3339 time") from None
        self.since = since
        validate_wait_settings(poll_interval, None)
        validate_wait_settings(restart_replay, None, poll_field="restart_replay")
        self.poll_interval = float(poll_interval)
        self.restart_replay = float(restart_replay)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._watermark: Watermark | None = None
        self._since: datetime | None = None  # set by load_watermark, before the first item

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # Plain values, no secret: Airflow stores these and hashes them to identify the watcher.
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "name": self.name,
                "metastudio_conn_id": self.metastudio_conn_id,
                "states": list(self.states),
                "style_ids": None if self.style_ids is None else list(self.style_ids),
                "name_pattern": self.name_pattern,
                "wait_for_active": self.wait_for_active,
                "since": self.since,
                "poll_interval": self.poll_interval,
                "restart_replay": self.restart_replay,
            },
        )

    # -- where to start ---------------------------------------------------------------------------

    async def load_watermark(self) -> datetime | None:
        """The end time to resume from: the stored watermark, ``since``, now less the replay (no
        store: Airflow 3.0-3.2), or None: from now on the service's clock (a first deployment)."""
        self._since = await self._resume_from()
        return self._since

    async def _resume_from(self) -> datetime | None:
        since = parse_time(self.since, "since") if self.since else None
        store = self._store
        if store is None:
            return since or datetime.now(timezone.utc) - timedelta(seconds=self.restart_replay)
        mark = Watermark.from_json(await _accessors(store)[0].aget(WATERMARK_KEY))
        if mark is not None and mark.newest is not None:
            self._watermark = mark
            self.log.info(
                "Watcher %s resumes after %s (%d job ids remembered)",
                self.name,
                mark.newest.isoformat(),
                len(mark.ids),
            )
            return mark.newest - WINDOW
        # First deployment: its start is stored as soon as it is known (for "now", after the
        # stream's first scan), so a restart before the first model skips nothing in between.
        self._watermark = Watermark(since, floor=since)
        if since is not None:
            await self.save_watermark(self._watermark)
        return since

    @property
    def _store(self) -> Any:
        """The watched assets' state store Airflow >= 3.3 injects (None before, or unwatched)."""
        return getattr(self, "asset_state_store", None)

    async def save_watermark(self, mark: Watermark) -> None:
        if self._store is not None:
            value = mark.to_json()
            for accessor in _accessors(self._store):
                await accessor.aset(WATERMARK_KEY, value)

    # -- the filter (the same for run() and the shared stream) ------------------------------------

    def _wanted(self, job: PictureModelingJob) -> bool:
        since = self._since
        if (
            job.end_time is None
            or (since is not None and job.end_time < since)
            or job.state not in self.states
        ):
            return False
        if self.style_ids is not None and job.style_id not in self.style_ids:
            return False
        return self.name_pattern is None or fnmatch.fnmatchcase(job.name or "", self.name_pattern)

    def _duplicate(self, key: str, job: PictureModelingJob) -> bool:
        if key in self._seen or (self._watermark is not None and self._watermark.covers(job)):
            return True
        self._seen[key] = None
        while len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        return False

    async def _asset_state(self, asset_id: str) -> str:
        """The model asset's state once ``ACTIVED`` or failed, read by the model-asset trigger."""
        waiter = MetaStudioModelAssetTrigger(
            asset_id,
            metastudio_conn_id=self.metastudio_conn_id,
            poll_interval=min(self.poll_interval, 5.0),
            end_time=time.time() + ASSET_WAIT_SECONDS,
        )
        async for event in waiter.run():
            payload = event.payload
            if payload["status"] == "success":
                return str(payload["asset"].get("state") or "ACTIVED")
            return str(payload.get("state") or payload["status"])
        return "unknown"

    async def _event(self, job: PictureModelingJob) -> TriggerEvent | None:
        if not self._wanted(job):
            return None
        key = dedupe_key(job)
        if self._duplicate(key, job):
            metrics.incr("watcher.duplicates_skipped", watcher=self.name)
            return None
        extra: dict[str, Any] = {
            "model_asset_id": job.model_asset_id,
            "job_id": job.job_id,
            "name": job.name,
            "style_id": job.style_id,
            "state": job.state,
            "end_time": job.end_time.isoformat() if job.end_time else None,
            "dedupe_key": key,
        }
        if self.wait_for_active and job.model_asset_id:
            extra["asset_state"] = await self._asset_state(job.model_asset_id)
        lag = time.time() - job.end_time.timestamp() if job.end_time else 0.0
        self.log.info(
            "Watcher %s: job %s %s, model %s -> asset event (%.1fs after its end, request %s)",
            self.name,
            job.job_id,
            job.state,
            job.model_asset_id,
            lag,
            job.request_id,
        )
        metrics.incr("watcher.events", watcher=self.name)
        return TriggerEvent(extra)

    def _notice(self, obs: tenant.Observation) -> None:
        self.log.log(obs.level, "Watcher %s: %s", self.name, obs.notice)

    async def _filter(self, items: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        async for item in items:
            if item is _TICK:
                continue
            event = await self._event(item)
            if event is not None:
                yield event

    async def _items(self, since: datetime | None, tick: float | None) -> AsyncGenerator[Any, None]:
        """The tenant stream's jobs; with ``tick``, :data:`_TICK` after that long without one."""
        async with tenant.finished_jobs(
            self.metastudio_conn_id, since, self.name, self.poll_interval, on_notice=self._notice
        ) as sub:
            pending: asyncio.Future[Any] | None = None
            try:
                while True:
                    if pending is None:
                        pending = asyncio.ensure_future(sub.next())
                    # Waited on, never cancelled: a tick leaves the same next() running.
                    done, _ = await asyncio.wait({pending}, timeout=tick)
                    await self._first_scan_done(sub.since)
                    if not done:
                        yield _TICK
                        continue
                    future, pending = pending, None
                    try:
                        yield future.result()
                    except MetaStudioAuthError as e:  # the stream goes on and recovers with the connection
                        self.log.error("Watcher %s: %s", self.name, e)
            finally:
                if pending is not None:
                    pending.cancel()

    async def _first_scan_done(self, stream_since: datetime | None) -> None:
        mark = self._watermark
        if mark is not None and mark.newest is None and stream_since is not None:
            # "Now" is the end of the newest job listed: that job, and its second, are history.
            mark.newest = self._since = stream_since
            mark.floor = stream_since + timedelta(microseconds=1)
            await self.save_watermark(mark)

    # -- Airflow 3.0-3.2 (and 3.3 without a watched asset): one loop of its own -------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        since = await self.load_watermark()
        self.log.info("Watcher %s lists models that ended from %s", self.name, since or "now")
        async with aclosing(self._items(since, None)) as items:
            async for event in self._filter(items):
                yield event

    # -- Airflow 3.3: a shared stream in ack mode, so the watermark follows what Airflow stored ----

    def shared_stream_key(self) -> Hashable | None:
        if self._store is None:  # nowhere to keep a watermark: run() as on 3.0-3.2
            return None
        key = _stream_key(self.serialize()[1])
        _LIVE[key] = self
        return key

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> _WatermarkProducer:
        return _WatermarkProducer(_stream_key(kwargs))

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        # The producer loaded the watermark (and so ``since``) before it handed over any item.
        async for event in self._filter(shared_stream):
            yield event

    async def cleanup(self) -> None:
        for key, trigger in list(_LIVE.items()):
            if trigger is self:
                del _LIVE[key]


def _stream_key(kwargs: dict[str, Any]) -> tuple[str, str]:
    # All kwargs: equal kwargs are one trigger row in Airflow, so a group has one watcher.
    digest = hashlib.sha256(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()
    return ("metastudio-model-library", digest)


class _WatermarkProducer(SharedStreamProducer):  # type: ignore[misc,valid-type]
    """Reads the tenant stream for one watcher; writes its watermark once Airflow stored the events."""

    def __init__(self, key: Hashable) -> None:
        self.key = key

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        trigger = _LIVE[self.key]
        since = await trigger.load_watermark()
        trigger.log.info("Watcher %s lists models that ended from %s", trigger.name, since or "now")
        async with aclosing(trigger._items(since, TICK_SECONDS)) as items:
            async for item in items:
                yield item, item

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        trigger = _LIVE.get(self.key)
        if trigger is None or trigger._watermark is None:
            return
        moved = False
        for item in batch:
            job = item.broker_payload
            if isinstance(job, PictureModelingJob) and item.outcome.is_clean:
                trigger._watermark.add(job)
                moved = True
        if moved:
            await trigger.save_watermark(trigger._watermark)
