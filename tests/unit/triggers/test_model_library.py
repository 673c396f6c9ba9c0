"""The model-library watcher's logic on a virtual clock: options, filters, dedupe, and exactly-once
across restarts through Airflow's own shared-stream ack mode (``SharedStreamManager``, Airflow 3.3).

The tenant stream is a scripted stand-in with the tenant package's contract (a context manager
``finished_jobs(conn_id, since, name, poll_interval)`` whose ``next()`` hands over terminal jobs and
notices; a job may come again). The asset state store is a dict behind Airflow's accessor methods
(``aget``/``aset``): in a triggerer those go to the metadata database, which the full-stack test
uses. Everything else is Airflow's: the manager binds each event to its raw item and advances only
once the "runner" confirms the event persisted, as the triggerer does after storing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from testsupport.virtual_time import on_virtual_clock

from airflow_provider_metastudio import metrics
from airflow_provider_metastudio.exceptions import MetaStudioValidationError
from airflow_provider_metastudio.models import PictureModelingJob
from airflow_provider_metastudio.triggers import model_library
from airflow_provider_metastudio.triggers.model_library import (
    WATERMARK_KEY,
    MetaStudioModelLibraryTrigger,
    Watermark,
)

shared_stream = pytest.importorskip("airflow.triggers.shared_stream")  # Airflow 3.3: ack mode

T0 = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=30)


def job(
    n: int, state: str = "SUCCEED", at: float = 0.0, name: str | None = None, style: str = "s1"
) -> PictureModelingJob:
    return PictureModelingJob(
        job_id=f"job-{n:03d}",
        state=state,
        end_time=T0 + timedelta(seconds=at),
        model_asset_id=f"asset-{n:03d}",
        name=name or f"model-{n:03d}",
        style_id=style,
        request_id=f"req-{n}",
    )


@dataclass
class Notice:
    notice: str
    level: int = logging.WARNING


class Tenant:
    """The tenant stream's contract, scripted: every subscription gets each job ended at or after
    its ``since`` (less the margin), in the order the test publishes them."""

    margin = timedelta(seconds=2)

    def __init__(self) -> None:
        self.history: list[Any] = []
        self.subs: list[asyncio.Queue[Any]] = []
        self.opened: list[tuple[str, datetime | None, str, float]] = []

    def publish(self, *items: Any) -> None:
        self.history.extend(items)
        for q in self.subs:
            for item in items:
                q.put_nowait(item)

    @asynccontextmanager
    async def finished_jobs(
        self, conn_id: str, since: datetime | None, name: str, poll_interval: float
    ) -> AsyncIterator[Any]:
        self.opened.append((conn_id, since, name, poll_interval))
        q: asyncio.Queue[Any] = asyncio.Queue()
        for item in self.history:  # the first scan reads back: replays what ended since `since`
            if (
                isinstance(item, PictureModelingJob)
                and item.end_time
                and since
                and item.end_time >= since - self.margin
            ):
                q.put_nowait(item)
        self.subs.append(q)

        class Sub:
            async def next(self) -> Any:
                return await q.get()

        try:
            yield Sub()
        finally:
            self.subs.remove(q)


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
def tenant(monkeypatch: pytest.MonkeyPatch) -> Tenant:
    t = Tenant()
    monkeypatch.setattr(model_library, "_tenant_stream", t.finished_jobs)
    return t


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(metrics, "incr", lambda name, count=1, **dims: seen.append((name, dims)))
    return seen


def trigger(**kwargs: Any) -> MetaStudioModelLibraryTrigger:
    return MetaStudioModelLibraryTrigger(**{"name": "library", "poll_interval": 10.0, **kwargs})


async def collect(
    gen: AsyncIterator[Any], count: int, *items: Any, tenant: Tenant, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Start the watcher, publish ``items`` once it listens, and take up to ``count`` events."""
    out: list[dict[str, Any]] = []

    async def take() -> None:
        async for event in gen:
            out.append(event.payload)
            if len(out) >= count:
                return

    task = asyncio.get_running_loop().create_task(asyncio.wait_for(take(), timeout))
    await asyncio.sleep(1)
    tenant.publish(*items)
    try:
        await task
    except asyncio.TimeoutError:
        pass
    return out


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


# -- filters and dedupe (Airflow 3.0-3.2's path: run()) ---------------------------------------------


@on_virtual_clock
async def test_default_fires_for_succeeded_models_from_now_with_the_event_fields(
    tenant: Tenant, counted: list
) -> None:
    old = PictureModelingJob(job_id="old", state="SUCCEED", end_time=T0 - timedelta(hours=2))
    tenant.publish(old)
    t = trigger(restart_replay=60)
    gen = t.run()
    events = await collect(
        gen, 2, job(1), job(2, state="FAILED"), job(3, state="PARTIAL_SUCCEED"), Notice("x"), tenant=tenant
    )
    assert [e["job_id"] for e in events] == ["job-001", "job-003"]
    assert events[0] == {
        "model_asset_id": "asset-001",
        "job_id": "job-001",
        "name": "model-001",
        "style_id": "s1",
        "state": "SUCCEED",
        "end_time": job(1).end_time.isoformat(),
        "dedupe_key": f"{job(1).end_time.isoformat()}/job-001",
    }
    assert not any("url" in k for e in events for k in e)
    assert tenant.opened[0][2] == "library" and tenant.opened[0][3] == 10.0
    assert ("watcher.events", {"watcher": "library"}) in counted
    await gen.aclose()


@on_virtual_clock
async def test_state_style_and_name_filters(tenant: Tenant) -> None:
    t = trigger(states=["FAILED", "CANCELED"], style_ids=["s2"], name_pattern="nightly-*")
    gen = t.run()
    events = await collect(
        gen,
        3,
        job(1, state="FAILED", style="s2", name="nightly-1"),  # fires
        job(2, state="SUCCEED", style="s2", name="nightly-2"),  # state
        job(3, state="CANCELED", style="s1", name="nightly-3"),  # style
        job(4, state="CANCELED", style="s2", name="daily-4"),  # name
        job(5, state="CANCELED", style="s2", name="nightly-5"),  # fires
        tenant=tenant,
        timeout=30,
    )
    assert [e["job_id"] for e in events] == ["job-001", "job-005"]
    await gen.aclose()


@on_virtual_clock
async def test_a_job_the_stream_hands_over_again_fires_once(
    tenant: Tenant, counted: list, capsys: pytest.CaptureFixture[str]
) -> None:
    t = trigger()
    gen = t.run()
    notice = Notice("MetaStudio list calls fail for project p1")
    events = await collect(gen, 3, job(1), job(1), job(2), job(1), notice, tenant=tenant, timeout=30)
    assert [e["job_id"] for e in events] == ["job-001", "job-002"]
    assert counted.count(("watcher.duplicates_skipped", {"watcher": "library"})) == 2
    # The trigger logs through structlog on Airflow 3.3: its lines reach stdout here.
    assert "Watcher library: MetaStudio list calls fail for project p1" in capsys.readouterr().out
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


@on_virtual_clock
async def test_first_deployment_stores_its_start_and_replays_no_history(tenant: Tenant) -> None:
    tenant.publish(PictureModelingJob(job_id="old", state="SUCCEED", end_time=T0 - timedelta(hours=1)))
    store, stored = Store(), []
    r = Runner(store, stored)
    r.start()
    await asyncio.sleep(5)
    mark = Watermark.from_json(store.values[WATERMARK_KEY])
    assert mark is not None and mark.newest is not None and mark.ids == {}
    tenant.publish(job(1, at=10))
    await asyncio.sleep(20)
    assert [p["job_id"] for p in stored] == ["job-001"]
    await r.stop()


@on_virtual_clock
async def test_watermark_is_written_only_after_airflow_stored_the_event(tenant: Tenant) -> None:
    store, stored = Store(), []
    r = Runner(store, stored, persist_delay=30.0)
    r.start()
    await asyncio.sleep(1)
    tenant.publish(job(1, at=1))
    await asyncio.sleep(10)  # yielded, not yet stored: the watermark must not cover it
    assert "job-001" not in store.values[WATERMARK_KEY]["ids"]
    await asyncio.sleep(30)
    assert "job-001" in store.values[WATERMARK_KEY]["ids"]
    assert [p["job_id"] for p in stored] == ["job-001"]
    await r.stop()


@pytest.mark.parametrize("how", ["kill", "stop"])
@on_virtual_clock
async def test_restart_resumes_from_the_stored_watermark_none_lost_none_twice(
    tenant: Tenant, how: str
) -> None:
    store, stored = Store(), []
    r = Runner(store, stored)
    r.start()
    await asyncio.sleep(1)
    for n in range(1, 21):
        tenant.publish(job(n, at=n))
        await asyncio.sleep(1)
    await asyncio.sleep(10)  # every event stored and confirmed, the watermark moved
    tenant.publish(job(21, at=21))  # ends while the triggerer goes down
    await (r.kill() if how == "kill" else r.stop())
    tenant.publish(job(22, at=22), job(23, at=23))  # end while no triggerer runs

    r2 = Runner(store, stored)
    r2.start()  # the new triggerer's stream replays from the watermark less WINDOW: all 23 again
    await asyncio.sleep(5)
    for n in range(24, 31):
        tenant.publish(job(n, at=n))
        await asyncio.sleep(1)
    await asyncio.sleep(10)
    ids = [p["job_id"] for p in stored]
    assert sorted(ids) == [f"job-{n:03d}" for n in range(1, 31)], ids
    assert (
        tenant.opened[-1][1] is not None
        and tenant.opened[-1][1] <= T0 + timedelta(seconds=20) - model_library.WINDOW
    )
    await r2.stop()


@on_virtual_clock
async def test_crash_between_store_and_confirmation_delivers_that_event_again(tenant: Tenant) -> None:
    """The one duplicate Airflow's ack mode leaves: stored, but the triggerer died before it heard."""
    store, stored = Store(), []
    r = Runner(store, stored, persist_delay=1.0)
    r.start()
    await asyncio.sleep(1)
    tenant.publish(job(1, at=1))
    await asyncio.sleep(10)
    tenant.publish(job(2, at=2))
    await asyncio.sleep(0.5)
    r.manager.confirm_persisted = lambda seqs: None  # type: ignore[method-assign]
    await asyncio.sleep(2)  # job-002 stored, its confirmation lost with the process
    await r.kill()
    r2 = Runner(store, stored)
    r2.start()
    await asyncio.sleep(10)
    ids = [p["job_id"] for p in stored]
    assert ids == ["job-001", "job-002", "job-002"]
    assert stored[1]["dedupe_key"] == stored[2]["dedupe_key"]
    await r2.stop()
