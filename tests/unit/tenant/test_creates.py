"""The tenant's create queue on the virtual clock against the scripted tenant: first come first
served, paced at the create quota, one name lookup per arrival burst, and adoption by name of a
job an earlier run of the same trigger (a restart, an HA copy) created."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from testsupport.scripted_tenant import T0, FakeHook, Service, new_poller, run
from testsupport.virtual_time import on_virtual_clock

from airflow_provider_metastudio import tenant
from airflow_provider_metastudio.exceptions import MetaStudioServerError
from airflow_provider_metastudio.tenant import CreateRequest, connections

STYLE = "system_male_001"


def request(name: str, **kw) -> CreateRequest:
    return CreateRequest(
        picture_url="https://cdn.example.com/p.png?Signature=SECRET",
        style_id=STYLE,
        name=name,
        created_since=kw.pop("created_since", T0 - timedelta(minutes=5)),
        deadline=kw.pop("deadline", time.time() + 3600),
        **kw,
    )


@on_virtual_clock
async def test_creates_go_out_first_come_first_served_at_the_quota():
    service = Service()
    poller = new_poller(service, list_rate=1.0, create_rate=2.0)
    names = [f"model-{i:03d}" for i in range(40)]

    async def scenario():
        outcomes = await asyncio.gather(*(poller.creates.submit(request(n)) for n in names))
        return outcomes, asyncio.get_running_loop().time()

    outcomes, took = await run(poller, scenario())
    created = [c[1] for c in service.calls if c[0] == "create"]
    assert created == names  # in the order they arrived, each once
    assert [o.job_id for o in outcomes] == [f"created-{i + 1}" for i in range(40)]
    assert all(o.adopted is None for o in outcomes)
    gaps = [b - a for a, b in zip(poller.hook.created_at, poller.hook.created_at[1:], strict=False)]
    assert min(gaps) >= 0.5 - 1e-9  # never faster than 2/s
    assert took <= 40 / 2 + 2  # and the quota is used: the floor plus the one lookup
    assert poller.creates.lookups == 1  # one name lookup served the whole burst
    assert outcomes[-1].queued_seconds >= 17  # the last one waited its turn (4 go to the limiter early)


@on_virtual_clock
async def test_a_restarted_trigger_adopts_the_job_its_earlier_run_created():
    service = Service()
    # The earlier run's create was sent (and taken) before the triggerer died.
    service.add("earlier-job", "PROCESSING", name="model-1", style_id=STYLE, created=10)
    service.add("failed-one", "FAILED", end=5, name="model-2", style_id=STYLE, created=5)
    poller = new_poller(service, list_rate=1.0, create_rate=2.0)

    async def scenario():
        return await asyncio.gather(
            poller.creates.submit(request("model-1")), poller.creates.submit(request("model-2"))
        )

    adopted, fresh = await run(poller, scenario())
    assert adopted.job_id == "earlier-job" and adopted.adopted is not None
    assert adopted.adopted.state == "PROCESSING"
    # A FAILED job of that name is left alone: a new one is created, as a task retry does.
    assert fresh.adopted is None and fresh.job_id.startswith("created-")
    assert [c[1] for c in service.calls if c[0] == "create"] == ["model-2"]


@on_virtual_clock
async def test_an_ha_copy_started_later_adopts_the_job_of_the_first_copy():
    service = Service()
    first = new_poller(service, list_rate=1.0, create_rate=2.0)
    second = new_poller(service, list_rate=1.0, create_rate=2.0)  # another triggerer on the tenant

    async def scenario():
        a = await first.creates.submit(request("model-ha"))
        await asyncio.sleep(30)  # Airflow starts the copy after the first triggerer's heartbeat lapsed
        b = await second.creates.submit(request("model-ha"))
        return a, b

    try:
        a, b = await run(first, scenario())
    finally:
        await second.close()
    assert b.job_id == a.job_id and b.adopted is not None
    assert service.count("create") == 1


@on_virtual_clock
async def test_a_create_that_fails_answers_its_own_request_only():
    service = Service()
    poller = new_poller(service, list_rate=1.0, create_rate=2.0)
    real_create = service.create

    def create(name, style_id, at):
        if name == "bad":
            service.calls.append(("create", name))
            raise MetaStudioServerError("500 MSS.00000004", status=500, request_id="r-500")
        return real_create(name, style_id, at)

    service.create = create  # type: ignore[method-assign]

    async def scenario():
        return await asyncio.gather(
            *(poller.creates.submit(request(n)) for n in ("a", "bad", "c")), return_exceptions=True
        )

    a, bad, c = await run(poller, scenario())
    assert isinstance(bad, MetaStudioServerError) and bad.request_id == "r-500"
    assert a.job_id.startswith("created-") and c.job_id.startswith("created-")
    assert service.count("create") == 3  # an ambiguous failure is not retried: the task's retry adopts


@on_virtual_clock
async def test_a_request_cancelled_while_queued_is_never_sent():
    service = Service()
    poller = new_poller(service, list_rate=1.0, create_rate=2.0)

    async def scenario():
        tasks = [asyncio.ensure_future(poller.creates.submit(request(f"m{i}"))) for i in range(10)]
        await asyncio.sleep(1.2)  # the lookup and the first creates
        tasks[-1].cancel()  # its trigger reached its deadline
        await asyncio.gather(*tasks[:-1])

    await run(poller, scenario())
    sent = [c[1] for c in service.calls if c[0] == "create"]
    assert sent == [f"m{i}" for i in range(9)]


@on_virtual_clock
async def test_lookups_keep_the_first_come_order_for_requests_arriving_later():
    service = Service()
    poller = new_poller(service, list_rate=1.0, create_rate=2.0)

    async def scenario():
        early = [asyncio.ensure_future(poller.creates.submit(request(f"early-{i}"))) for i in range(6)]
        await asyncio.sleep(1.5)
        late = [asyncio.ensure_future(poller.creates.submit(request(f"late-{i}"))) for i in range(3)]
        await asyncio.gather(*early, *late)

    await run(poller, scenario())
    sent = [c[1] for c in service.calls if c[0] == "create"]
    assert sent == [f"early-{i}" for i in range(6)] + [f"late-{i}" for i in range(3)]
    assert poller.creates.lookups == 2


@on_virtual_clock
async def test_create_by_url_shares_the_tenant_client_with_waits(monkeypatch):
    service = Service()
    hook = FakeHook(service)

    async def lookup(conn_id):
        return hook

    monkeypatch.setattr(connections, "_lookup_hook", lookup)
    async with tenant.watch_job("ms", "x", 10) as w:
        outcome = await tenant.create_by_url("ms", request("model-x"))
        assert w.poller.creates.creates == 1  # the queue of the client the waits use
    assert outcome.job_id == "created-1"


def test_a_request_never_shows_its_picture_url():
    assert "SECRET" not in repr(request("m")) and "cdn.example.com" not in repr(request("m"))


@pytest.mark.parametrize("partial", [True, False])
def test_partial_success_is_adopted_only_when_accepted(partial):
    from airflow_provider_metastudio.models import PictureModelingJob

    job = PictureModelingJob("j", "PARTIAL_SUCCEED", name="m", style_id=STYLE)
    assert request("m", accept_partial_success=partial).adoptable(job) is partial
