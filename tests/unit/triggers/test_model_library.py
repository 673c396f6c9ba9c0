"""The model-library watcher's logic on a virtual clock: options, filters, dedupe, and exactly-once
across restarts through Airflow's own shared-stream ack mode (``SharedStreamManager``, Airflow 3.3).

The tenant stream is the real one (``tenant.finished_jobs``) over the scripted service of
``testsupport.scripted_tenant`` (list pages and details answers, no HTTP). The asset state store is
a dict behind Airflow's accessor methods (``aget``/``aset``): in a triggerer those go to the
metadata database, which the full-stack test uses. The rest is Airflow's: the manager binds each
event to its raw item and advances only once the "runner" confirms the event persisted, as the
triggerer does after storing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from testsupport.scripted_tenant import INTERVAL, T0, FakeHook, Service, outcome
from testsupport.virtual_time import on_virtual_clock

from airflow_provider_metastudio import metrics, tenant
from airflow_provider_metastudio._compat import AIRFLOW_V_3
from airflow_provider_metastudio.exceptions import MetaStudioServerError, MetaStudioValidationError
from airflow_provider_metastudio.models import PictureModelingJob
from airflow_provider_metastudio.tenant import connections
from airflow_provider_metastudio.triggers import model_library
from airflow_provider_metastudio.triggers.model_library import (
    WATERMARK_KEY,
    MetaStudioModelLibraryTrigger,
    Watermark,
)

try:  # Airflow >= 3.3: ack mode
    from airflow.triggers import shared_stream
except ImportError:
    shared_stream = None  # type: ignore[assignment]

needs_ack_mode = pytest.mark.skipif(shared_stream is None, reason="shared streams are Airflow >= 3.3")
pytestmark = pytest.mark.skipif(not AIRFLOW_V_3, reason="asset watchers are Airflow >= 3.0")
SINCE = T0.isoformat()


class Library(Service):
    """The scripted service, with each job's name and style (``j<n>`` is ``model-<n>``, style s1)."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, tuple[str, str]] = {}

    def add_job(
        self, job_id: str, state: str = "PROCESSING", name: str | None = None, style: str = "s1"
    ) -> None:
        self.add(job_id, state)
        self.meta[job_id] = (name or f"model-{job_id}", style)

    def job(self, job_id: str) -> PictureModelingJob:
        name, style = self.meta.get(job_id, (None, None))
        return replace(super().job(job_id), name=name, style_id=style)


class Store:
    """The per-asset state store's accessor methods over a dict (the database in a triggerer)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes = 0
        self.frozen = False

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        assert value is not None
        if self.frozen:
            return
        self.values[key] = value
        self.writes += 1


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Library:
    svc = Library()

    async def lookup(conn_id: str) -> FakeHook:
        return FakeHook(svc)

    monkeypatch.setattr(connections, "_lookup_hook", lookup)
    return svc


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(metrics, "incr", lambda name, count=1, **dims: seen.append((name, dims)))
    return seen


def trigger(**kwargs: Any) -> MetaStudioModelLibraryTrigger:
    return MetaStudioModelLibraryTrigger(**{"name": "library", "poll_interval": INTERVAL, **kwargs})


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"states": ["SUCCEED", "PROCESSING"]}, "states"),
        ({"states": "SUCCEED"}, "states"),
        ({"states": []}, "states"),
        ({"style_ids": "s1"}, "style_ids"),
        ({"style_ids": [""]}, "style_ids"),
        ({"name_pattern": ""}, "name_pattern"),
        ({"since": "yesterday"}, "since"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"restart_replay": -1}, "restart_replay"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_options_fail_at_construction_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(MetaStudioValidationError, match=field):
        trigger(**kwargs)


def test_on_airflow_2_construction_names_the_alternative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_library, "AIRFLOW_V_3", False)
    with pytest.raises(Exception, match="MetaStudioPictureModelingJobSensor"):
        trigger()


def test_serialize_round_trips_plain_values() -> None:
    t = trigger(
        states=["FAILED", "CANCELED"],
        style_ids=["s2"],
        name_pattern="nightly-*",
        since="2026-12-01T00:00:00Z",
    )
    classpath, kwargs = t.serialize()
    assert classpath == "airflow_provider_metastudio.triggers.model_library.MetaStudioModelLibraryTrigger"
    assert MetaStudioModelLibraryTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["states"] == ["FAILED", "CANCELED"]


async def take(gen: AsyncIterator[Any], count: int, seconds: float) -> list[dict[str, Any]]:
    """Up to ``count`` event payloads within ``seconds`` (virtual)."""
    out: list[dict[str, Any]] = []

    async def loop() -> None:
        async for event in gen:
            out.append(event.payload)
            if len(out) >= count:
                return

    try:
        await asyncio.wait_for(loop(), seconds)
    except asyncio.TimeoutError:
        pass
    return out


# -- filters and dedupe (Airflow 3.0-3.2's path: run()) ---------------------------------------------


@on_virtual_clock
async def test_succeeded_models_fire_with_the_event_fields_and_nothing_before_since(
    service: Library, counted: list
) -> None:
    service.add("old", "SUCCEED", end=-60)  # ended before `since`
    for j in ("j1", "j2", "j3"):
        service.add_job(j)
    gen = trigger(since=SINCE).run()
    task = asyncio.ensure_future(take(gen, 2, 120))
    await asyncio.sleep(5)
    service.finish("j1", at=10)
    service.finish("j2", "FAILED", at=11)
    service.finish("j3", "PARTIAL_SUCCEED", at=12)
    events = await task
    assert sorted(e["job_id"] for e in events) == ["j1", "j3"]
    events.sort(key=lambda e: e["job_id"])
    end = (T0 + timedelta(seconds=10)).isoformat()
    assert events[0] == {
        "model_asset_id": "asset-j1",
        "job_id": "j1",
        "name": "model-j1",
        "style_id": "s1",
        "state": "SUCCEED",
        "end_time": end,
        "dedupe_key": f"{end}/j1",
    }
    assert ("watcher.events", {"watcher": "library"}) in counted
    await gen.aclose()


@on_virtual_clock
async def test_state_style_and_name_filters(service: Library) -> None:
    service.add_job("j1", "FAILED", name="nightly-1", style="s2")  # fires
    service.add_job("j2", "SUCCEED", name="nightly-2", style="s2")  # state
    service.add_job("j3", "CANCELED", name="nightly-3", style="s1")  # style
    service.add_job("j4", "CANCELED", name="daily-4", style="s2")  # name
    service.add_job("j5", "CANCELED", name="nightly-5", style="s2")  # fires
    for i, j in enumerate(("j1", "j2", "j3", "j4", "j5")):
        service.jobs[j]["end"] = i
    t = trigger(states=["FAILED", "CANCELED"], style_ids=["s2"], name_pattern="nightly-*", since=SINCE)
    gen = t.run()
    events = await take(gen, 3, 60)
    assert [e["job_id"] for e in events] == ["j5", "j1"]  # the list is newest first
    await gen.aclose()


@on_virtual_clock
async def test_a_job_the_stream_hands_over_again_fires_once_and_outages_are_logged(
    service: Library, counted: list, capsys: pytest.CaptureFixture[str]
) -> None:
    service.add_job("j1")
    gen = trigger(since=SINCE).run()
    task = asyncio.ensure_future(take(gen, 2, 200))
    await asyncio.sleep(5)
    service.finish("j1", at=10)
    await asyncio.sleep(15)
    service.list_error = MetaStudioServerError("503 gateway", status=503)
    await asyncio.sleep(30)
    service.list_error = None
    service.add("j1", "SUCCEED", end=10)  # listed again (a margin rescan of the same second)
    events = await task
    assert [e["job_id"] for e in events] == ["j1"]
    # The trigger logs through structlog on Airflow 3.3: its lines reach stdout here.
    out = capsys.readouterr().out
    assert "Watcher library: MetaStudio list calls fail for project p1" in out
    assert "Watcher library: MetaStudio list calls work again" in out
    await gen.aclose()


@on_virtual_clock
async def test_a_watcher_rides_the_list_calls_of_the_waits(service: Library) -> None:
    """Ten waits and a watcher on one triggerer: the watcher adds no list call and sees every job."""
    for i in range(10):
        service.add_job(f"j{i}")
    gen = trigger(since=SINCE).run()
    events = asyncio.ensure_future(take(gen, 10, 600))
    await asyncio.sleep(1)
    async with tenant.watch_job("ms", "j0", INTERVAL) as first:
        watches = [first.poller.watch(f"j{i}", INTERVAL) for i in range(1, 10)]
        assert first.poller.subscriptions  # the watcher's subscription is on the waits' poller
        for i in range(10):
            await asyncio.sleep(12)
            service.finish(f"j{i}", at=100 + i)
        await asyncio.gather(outcome(first), *(outcome(w) for w in watches))
        waits_calls = service.count("list")
        for w in watches:
            first.poller.unwatch(w)
    got = await events
    assert sorted(e["job_id"] for e in got) == [f"j{i}" for i in range(10)]
    # one list round per poll interval (plus the few busy rounds after a job ended), shared:
    # the waits alone would have made the same calls
    assert waits_calls <= 2 * (120 / INTERVAL + 10) + 5
    await gen.aclose()


# -- Airflow 3.3: ack mode, the watermark, restarts --------------------------------------------------


class Runner:
    """What the triggerer's run_trigger does with a shared-stream watcher (Airflow 3.3.2): subscribe,
    filter, bind each event, and confirm it once "stored" (after ``persist_delay`` seconds)."""

    def __init__(
        self, store: Store, stored: list[dict[str, Any]], persist_delay: float = 1.0, **kwargs: Any
    ) -> None:
        self.manager = shared_stream.SharedStreamManager(ack_timeout=300.0)
        self.trigger = trigger(**kwargs)
        self.trigger.asset_state_store = store
        self.store = store
        self.stored = stored
        self.persist_delay = persist_delay
        self.task: asyncio.Task[None] | None = None
        self.killed = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        key = self.trigger.shared_stream_key()
        assert key is not None
        stream = self.manager.subscribe(trigger_id=1, trigger=self.trigger, key=key)
        try:
            async for event in self.trigger.filter_shared_stream(stream):
                seq = self.manager.bind_pending_event(trigger_id=1, key=key)
                asyncio.get_running_loop().call_later(self.persist_delay, self._persist, seq, event.payload)
        finally:  # as run_trigger's finally
            if not self.killed:
                await self.manager.unsubscribe(1, key)
            await self.trigger.cleanup()

    def _persist(self, seq: int | None, payload: dict[str, Any]) -> None:
        self.stored.append(payload)
        if seq is not None:
            self.manager.confirm_persisted([seq])

    async def kill(self) -> None:
        """SIGKILL: the process is gone, nothing more is confirmed or written."""
        assert self.task is not None
        self.persist_delay = 1e9
        self.killed = True
        self.manager.confirm_persisted = lambda seqs: None  # type: ignore[method-assign]
        self.store.frozen = True  # a dead process writes nothing while its tasks are torn down
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.manager.stop_all()
        self.store.frozen = False

    async def stop(self) -> None:
        """SIGTERM: Airflow cancels the trigger and stops every group."""
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.manager.stop_all()


@needs_ack_mode
@on_virtual_clock
async def test_first_deployment_stores_the_service_now_and_replays_no_history(service: Library) -> None:
    service.add("old", "SUCCEED", end=0)
    service.add_job("j1")
    store, stored = Store(), []
    r = Runner(store, stored)
    r.start()
    await asyncio.sleep(5)
    mark = Watermark.from_json(store.values[WATERMARK_KEY])
    assert mark is not None and mark.newest == T0 and mark.floor is not None and mark.floor > T0  # "now"
    assert stored == []
    await r.stop()
    r = Runner(store, stored)  # restarted before any model: still no history
    r.start()
    await asyncio.sleep(5)
    service.finish("j1", at=30)
    await asyncio.sleep(30)
    assert [p["job_id"] for p in stored] == ["j1"]
    await r.stop()


@needs_ack_mode
@on_virtual_clock
async def test_watermark_is_written_only_after_airflow_stored_the_event(service: Library) -> None:
    service.add_job("j1")
    store, stored = Store(), []
    r = Runner(store, stored, persist_delay=30.0, since=SINCE)
    r.start()
    await asyncio.sleep(1)
    service.finish("j1", at=1)
    await asyncio.sleep(15)  # yielded, not yet stored: the watermark must not cover it
    assert "j1" not in store.values[WATERMARK_KEY]["ids"]
    await asyncio.sleep(30)
    assert "j1" in store.values[WATERMARK_KEY]["ids"]
    assert [p["job_id"] for p in stored] == ["j1"]
    await r.stop()


@needs_ack_mode
@pytest.mark.parametrize("how", ["kill", "stop"])
@on_virtual_clock
async def test_restart_resumes_from_the_stored_watermark_none_lost_none_twice(
    service: Library, how: str
) -> None:
    for n in range(1, 31):
        service.add_job(f"j{n:02d}")
    store, stored = Store(), []
    r = Runner(store, stored, since=SINCE)
    r.start()
    await asyncio.sleep(1)
    for n in range(1, 21):
        service.finish(f"j{n:02d}", at=n)
        await asyncio.sleep(3)
    await asyncio.sleep(20)  # every event stored and confirmed, the watermark moved
    service.finish("j21", at=80)  # ends while the triggerer goes down
    await (r.kill() if how == "kill" else r.stop())
    service.finish("j22", at=81)  # end while no triggerer runs
    service.finish("j23", at=82)
    r2 = Runner(store, stored, since=SINCE)
    r2.start()  # the new stream replays from the watermark less WINDOW: 1-23 come again
    await asyncio.sleep(5)
    for n in range(24, 31):
        service.finish(f"j{n:02d}", at=80 + n)
        await asyncio.sleep(3)
    await asyncio.sleep(30)
    ids = [p["job_id"] for p in stored]
    assert sorted(ids) == [f"j{n:02d}" for n in range(1, 31)], ids
    # the restarted watcher moves the watermark on too
    assert {f"j{n:02d}" for n in range(24, 31)} <= set(store.values[WATERMARK_KEY]["ids"])
    await r2.stop()


@needs_ack_mode
@on_virtual_clock
async def test_crash_between_store_and_confirmation_delivers_that_event_again(service: Library) -> None:
    """The one duplicate Airflow's ack mode leaves: stored, but the triggerer died before it heard."""
    service.add_job("j1")
    service.add_job("j2")
    store, stored = Store(), []
    r = Runner(store, stored, persist_delay=1.0, since=SINCE)
    r.start()
    await asyncio.sleep(1)
    service.finish("j1", at=1)
    await asyncio.sleep(20)
    r.manager.confirm_persisted = lambda seqs: None  # type: ignore[method-assign]
    service.finish("j2", at=2)
    await asyncio.sleep(15)  # j2 stored, its confirmation lost with the process
    await r.kill()
    r2 = Runner(store, stored, since=SINCE)
    r2.start()
    await asyncio.sleep(20)
    ids = [p["job_id"] for p in stored]
    assert ids == ["j1", "j2", "j2"]
    assert stored[1]["dedupe_key"] == stored[2]["dedupe_key"]
    await r2.stop()


@needs_ack_mode
@on_virtual_clock
async def test_the_watermark_covers_a_stored_event_as_soon_as_airflow_confirms_it(
    service: Library,
) -> None:
    """What a SIGKILL can repeat is what Airflow stored but the watermark did not yet cover. The
    watcher adds no delay of its own to Airflow's confirmation: it writes the watermark on it, not
    at the next model or tick (Airflow closes the event's window as soon as the filter loops back)."""
    service.add_job("j1")
    store, stored = Store(), []
    r = Runner(store, stored, persist_delay=0.2, since=SINCE)
    loop = asyncio.get_running_loop()
    stored_at: list[float] = []
    covered_at: list[float] = []
    persist, aset = r._persist, store.aset

    def timed_persist(seq: int | None, payload: dict[str, Any]) -> None:
        stored_at.append(loop.time())
        persist(seq, payload)

    async def timed_aset(key: str, value: Any) -> None:
        if key == WATERMARK_KEY and "j1" in value["ids"] and not covered_at:
            covered_at.append(loop.time())
        await aset(key, value)

    r._persist = timed_persist  # type: ignore[method-assign]
    store.aset = timed_aset  # type: ignore[method-assign]
    r.start()
    await asyncio.sleep(1)
    service.finish("j1", at=1)
    await asyncio.sleep(60)  # no other model comes
    assert stored_at and covered_at, (stored_at, covered_at)
    assert covered_at[0] - stored_at[0] <= 0.01, covered_at[0] - stored_at[0]
    await r.stop()


def test_airflow_gives_a_trigger_no_read_of_stored_asset_events() -> None:
    """Why a SIGKILL can still repeat an event on Airflow 3.3.2 (README, "React to every new model"):
    a task asks its supervisor for an asset's stored events (``GetAssetEventByAsset``), but the
    triggerer's supervisor decodes no such request from its triggers (and the trigger runner
    process has no database session: ``block_orm_access``). When this starts failing, Airflow lets
    triggers read them: skip the models whose events are stored on start, for zero duplicates."""
    comms = pytest.importorskip("airflow.sdk.execution_time.comms")
    pytest.importorskip("airflow.triggers.shared_stream")  # the 3.3 line this provider targets
    from airflow.jobs.triggerer_job_runner import ToTriggerSupervisor
    from pydantic import TypeAdapter, ValidationError

    request = comms.GetAssetEventByAsset(name="models", uri="models").model_dump()
    TypeAdapter(comms.ToSupervisor).validate_python(request)  # a task may ask
    with pytest.raises(ValidationError):
        TypeAdapter(ToTriggerSupervisor).validate_python(request)  # a trigger may not
