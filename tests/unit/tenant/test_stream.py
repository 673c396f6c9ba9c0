"""The finished-job stream for event watchers (``tenant.finished_jobs``), on the virtual clock
against the scripted tenant: what a subscription receives, what it costs, and what it hears."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from testsupport.scripted_tenant import INTERVAL, T0, FakeHook, Service, new_poller, outcome, run
from testsupport.virtual_time import on_virtual_clock

from airflow_provider_metastudio import tenant
from airflow_provider_metastudio.exceptions import MetaStudioAuthError, MetaStudioServerError
from airflow_provider_metastudio.models import PictureModelingJob
from airflow_provider_metastudio.tenant import Observation, Subscription, connections


async def drain(sub: Subscription) -> list[PictureModelingJob]:
    """What the subscription holds now, without waiting."""
    jobs = []
    while not sub.queue.empty():
        obs = sub.queue.get_nowait()
        if obs.job is not None:
            jobs.append(obs.job)
    return jobs


@on_virtual_clock
async def test_a_subscription_from_now_streams_what_ends_later_with_no_wait_at_all():
    service = Service()
    for i in range(5):
        service.add(f"old-{i}", "SUCCEED", end=i)  # history: ended before the subscription
    service.add("new-1")
    service.add("new-2")
    poller = new_poller(service)
    sub = poller.subscribe("lib", None, INTERVAL)

    async def scenario():
        await asyncio.sleep(1)  # the first scan fixed "now" at the newest end (4)
        assert sub.since == T0 + timedelta(seconds=4)
        service.finish("new-1", at=100)
        service.finish("new-2", "FAILED", at=101)
        jobs = []
        while sum(j.job_id.startswith("new") for j in jobs) < 2:
            jobs.append(await sub.next())
        return jobs

    jobs = await run(poller, scenario())
    old = {j.job_id for j in jobs if j.job_id.startswith("old")}
    # The margin may repeat the history jobs that ended within 2 s of "now": that is all.
    assert old <= {"old-2", "old-3", "old-4"}
    got = sorted((j.job_id, j.state) for j in jobs if j.job_id.startswith("new"))
    assert got == [("new-1", "SUCCEED"), ("new-2", "FAILED")]
    assert all(j.end_time is not None and j.request_id == "rid-list" for j in jobs)
    assert not poller.watches  # the stream ran for the subscription alone


@on_virtual_clock
async def test_a_subscription_since_a_past_time_reads_back_to_it_over_several_pages():
    service = Service()
    for i in range(400):  # four pages of finished jobs, one a second
        service.add(f"j{i}", "SUCCEED", end=i)
    poller = new_poller(service)
    poller.subscribe("first", None, INTERVAL)  # an earlier subscriber: the stream is under way

    async def scenario():
        await asyncio.sleep(INTERVAL + 1)
        late = poller.subscribe("late", T0 + timedelta(seconds=150), INTERVAL)
        await asyncio.sleep(INTERVAL + 1)
        return late

    late = await run(poller, scenario())
    ids = {j.job_id for j in await drain(late)}
    assert {f"j{i}" for i in range(150, 400)} <= ids  # every job since, across three pages
    assert ids <= {f"j{i}" for i in range(148, 400)}  # and nothing older than since - margin
    assert late.caught_up


@on_virtual_clock
async def test_a_history_deeper_than_the_page_bound_is_cut_and_said(caplog):
    service = Service()
    for i in range(tenant.MAX_SCAN_PAGES * 100 + 50):
        service.add(f"j{i}", "SUCCEED", end=i)
    poller = new_poller(service)
    sub = poller.subscribe("replay", T0, INTERVAL)
    with caplog.at_level(logging.WARNING, logger=tenant.__name__):
        await run(poller, asyncio.sleep(1))
    assert service.count("list") == tenant.MAX_SCAN_PAGES
    assert len(await drain(sub)) == tenant.MAX_SCAN_PAGES * 100
    assert any("older finished jobs are not delivered to replay" in r.getMessage() for r in caplog.records)


async def _waits_scenario(subscribers: int) -> tuple[int, int]:
    """Ten waits whose jobs end over two minutes, plus ``subscribers`` subscriptions at the same
    interval: (list calls while the waits ran, jobs the first subscription received)."""
    service = Service()
    for i in range(10):
        service.add(f"j{i}")
    poller = new_poller(service)
    subs = [poller.subscribe(f"w{n}", None, INTERVAL) for n in range(subscribers)]
    watches = [poller.watch(f"j{i}", INTERVAL) for i in range(10)]

    async def scenario():
        for i in range(10):
            await asyncio.sleep(12)
            service.finish(f"j{i}", at=1000 + i)
        await asyncio.gather(*(outcome(w) for w in watches))
        calls = service.count("list")
        await asyncio.sleep(INTERVAL + 1)  # a job the safety net resolved first: the next scan shows it
        return calls

    calls = await run(poller, scenario())
    received = {j.job_id for j in await drain(subs[0])} if subs else set()
    return calls, len(received)


@pytest.mark.parametrize("subscribers", [1, 25])
def test_waits_and_subscriptions_cost_the_list_calls_of_the_waits_alone(subscribers):
    alone, _ = on_virtual_clock(_waits_scenario)(0)
    shared, received = on_virtual_clock(_waits_scenario)(subscribers)
    assert shared == alone, (alone, shared)
    assert received == 10  # and every job reached the subscribers


@on_virtual_clock
async def test_the_stream_runs_at_the_smallest_interval_among_waits_and_subscriptions():
    service = Service()
    service.add("slow")
    poller = new_poller(service)
    poller.watch("slow", 60)
    poller.subscribe("fast", None, 5)
    await run(poller, asyncio.sleep(60.5))
    assert 12 <= poller.rounds <= 13  # every 5 s, not every 60 s


@on_virtual_clock
async def test_outage_notices_reach_a_subscription_and_the_stream_resumes():
    service = Service()
    service.add("a")
    poller = new_poller(service)
    heard: list[Observation] = []
    sub = poller.subscribe("lib", None, INTERVAL, on_notice=heard.append)

    async def scenario():
        await asyncio.sleep(1)
        service.list_error = MetaStudioServerError("503 gateway", status=503)
        await asyncio.sleep(120)
        service.list_error = None
        service.finish("a", at=500)
        while True:
            job = await sub.next()
            if job.job_id == "a":
                return job

    job = await run(poller, scenario())
    assert job.state == "SUCCEED"
    texts = [o.notice for o in heard]
    assert sum("calls fail" in (t or "") for t in texts) == 1, texts
    assert sum("work again" in (t or "") for t in texts) == 1, texts
    assert all(o.level in (logging.WARNING, logging.INFO) for o in heard)


@on_virtual_clock
async def test_a_subscription_without_a_notice_handler_logs_with_its_name(caplog):
    service = Service()
    service.list_error = MetaStudioServerError("503 gateway", status=503)
    poller = new_poller(service)
    sub = poller.subscribe("model-library", None, INTERVAL)

    async def scenario():
        await asyncio.sleep(30)
        service.list_error = None
        service.add("a", "SUCCEED", end=10)
        await asyncio.sleep(40)
        service.add("b", "SUCCEED", end=20)
        return await sub.next()

    with caplog.at_level(logging.INFO, logger=tenant.__name__):
        await run(poller, scenario())
    named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model-library: ")]
    assert any("calls fail" in m for m in named) and any("work again" in m for m in named), named


@on_virtual_clock
async def test_refused_authentication_past_the_patience_is_raised_to_the_subscriber(monkeypatch):
    service = Service()
    service.list_error = MetaStudioAuthError("401 APIGW.0301", status=401, error_code="APIGW.0301")

    async def same_config(conn_id):
        return FakeHook(service)

    monkeypatch.setattr(connections, "_lookup_hook", same_config)
    poller = new_poller(service)
    sub = poller.subscribe("lib", None, INTERVAL, on_notice=lambda obs: None)

    async def scenario():
        started = asyncio.get_running_loop().time()
        with pytest.raises(MetaStudioAuthError, match="patience"):
            await sub.next()
        return asyncio.get_running_loop().time() - started

    took = await run(poller, scenario())
    assert poller.auth_patience <= took <= poller.auth_patience + poller.backoff_max + INTERVAL


@on_virtual_clock
async def test_a_naive_since_is_refused_naming_the_field():
    poller = new_poller(Service())
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        poller.subscribe("lib", T0.replace(tzinfo=None), INTERVAL)
    await poller.close()


@on_virtual_clock
async def test_finished_jobs_shares_the_tenant_client_with_waits(monkeypatch):
    service = Service()
    service.add("a")

    async def lookup(conn_id):
        return FakeHook(service)

    monkeypatch.setattr(connections, "_lookup_hook", lookup)
    async with tenant.finished_jobs("ms", None, "lib", poll_interval=INTERVAL) as sub:
        async with tenant.watch_job("ms", "a", INTERVAL) as w:
            assert w.poller is sub.poller  # one owner of the tenant's calls in this loop
            await asyncio.sleep(1)
            service.finish("a", at=50)
            final, _ = await outcome(w)
            job = await sub.next()
    assert final.job is not None and job.job_id == "a"
    assert sub.closed and sub.poller.refs == 0
