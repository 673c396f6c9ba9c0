"""The shared poller's logic against a scripted service and a virtual clock: milliseconds per test,
no HTTP (one test starts fresh interpreters to check the list query does not depend on the hash seed).

The scripted service stands in for the hook (list pages and details answers, with errors on
demand). Each test runs on a virtual-time event loop (``testsupport.virtual_time``), so the poller
runs with its production timing (10 s intervals, 30 s backoff, 5 minutes of auth patience) and the
scenarios are written in real seconds, deterministically. The HTTP path and the emulator are covered
by ``tests/integration/test_picture_modeling_trigger.py`` and the end-to-end suites.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from testsupport.scripted_tenant import CONFIG, INTERVAL, FakeHook, Service, new_poller, outcome, run
from testsupport.virtual_time import on_virtual_clock

from airflow_provider_metastudio import tenant
from airflow_provider_metastudio.api import base_url, show_call
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioBadRequestError,
    MetaStudioNotFoundError,
    MetaStudioServerError,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.tenant import connections, tenant_key
from airflow_provider_metastudio.tenant._core import POLLER_RETRY_LIMIT


@on_virtual_clock
async def test_an_outage_of_every_call_ends_no_wait_and_is_logged_once(caplog):
    service = Service()
    for i in range(3):
        service.add(f"job-{i}")
    poller = new_poller(service)
    outage = MetaStudioServerError("503 gateway", status=503)
    service.list_error = service.show_error = outage
    watches = [poller.watch(f"job-{i}", INTERVAL) for i in range(3)]

    async def scenario():
        await asyncio.sleep(300)  # five minutes of failed rounds of both loops
        assert not any(w.queue.empty() for w in watches)  # each heard of the outage
        service.list_error = service.show_error = None
        for i in range(3):
            service.finish(f"job-{i}", at=i)
        return await asyncio.gather(*(outcome(w) for w in watches))

    with caplog.at_level(logging.INFO, logger=tenant.__name__):
        results = await run(poller, scenario())
    for final, notices in results:
        assert final.error is None and final.job is not None and final.job.state == "SUCCEED"
        texts = [n.notice for n in notices]
        # Once when the outage starts and once when it ends, per kind of call.
        assert sum("calls fail" in t for t in texts) == 2, texts
        assert sum("work again" in t for t in texts) <= 2
    logged = [r.getMessage() for r in caplog.records]
    assert sum("list calls fail" in m for m in logged) == 1
    assert sum("details calls fail" in m for m in logged) == 1


@on_virtual_clock
async def test_a_bad_job_ends_only_its_own_wait():
    service = Service()
    service.add("bad")
    service.add("good")
    service.hidden_from_lists.add("bad")
    service.show_errors["bad"] = MetaStudioBadRequestError(
        "400 MSS.00000003 invalid job_id bad", status=400, error_code="MSS.00000003", request_id="r-bad"
    )
    poller = new_poller(service)
    bad, good = poller.watch("bad", INTERVAL), poller.watch("good", INTERVAL)

    async def scenario():
        bad_end, _ = await outcome(bad)
        assert "good" in poller.watches  # the neighbour is still watched
        service.finish("good")
        return bad_end, (await outcome(good))[0]

    bad_end, good_end = await run(poller, scenario())
    assert isinstance(bad_end.error, MetaStudioBadRequestError)
    assert bad_end.error.request_id == "r-bad"
    assert good_end.job is not None and good_end.job.state == "SUCCEED"


@on_virtual_clock
async def test_a_job_that_vanishes_while_watched_ends_with_the_service_answer():
    service = Service()
    service.add("gone")
    poller = new_poller(service)
    w = poller.watch("gone", INTERVAL)

    async def scenario():
        first = await w.next()  # seen running first
        assert first.job is not None and first.job.state == "PROCESSING"
        del service.jobs["gone"]
        return await outcome(w)

    final, _ = await run(poller, scenario())
    assert isinstance(final.error, MetaStudioNotFoundError)


@pytest.mark.parametrize("quirk", ["hidden", "listed-below-the-high-water-mark"])
@on_virtual_clock
async def test_a_finished_job_the_lists_miss_is_found_by_the_safety_net(quirk):
    service = Service()
    for i in range(5):
        service.add(f"old-{i}", "SUCCEED", end=100 + i)
    service.add("late")
    poller = new_poller(service)
    w = poller.watch("late", INTERVAL)

    async def scenario():
        while poller.rounds < 3:  # the high-water mark is at the newest end (104)
            await asyncio.sleep(1)
        if quirk == "hidden":
            service.hidden_from_lists.add("late")
            service.finish("late", at=200)
        else:  # listed late, with an old end time: below the high-water mark
            service.finish("late", at=50)
        return await outcome(w)

    final, _ = await run(poller, scenario())
    assert final.job is not None and final.job.state == "SUCCEED"
    assert service.count("show") >= 1


@on_virtual_clock
async def test_the_finished_scan_reads_what_is_new_not_the_history():
    service = Service()
    for i in range(450):  # five pages of history
        service.add(f"old-{i}", "SUCCEED", end=i)
    service.add("watched")
    poller = new_poller(service)
    w = poller.watch("watched", INTERVAL)

    async def scenario():
        while poller.rounds < 2:
            await asyncio.sleep(1)
        before = service.count("list")
        rounds = poller.rounds
        while poller.rounds < rounds + 10:
            await asyncio.sleep(1)
        finished_pages = sum(1 for c in service.calls[before:] if c == ("list", tuple(tenant.TERMINAL)))
        service.finish("watched", at=1000)
        final, _ = await outcome(w)
        return finished_pages, poller.rounds - rounds, final

    pages, rounds, final = await run(poller, scenario())
    assert pages <= rounds + 1  # one page a round, not five
    assert final.job is not None and final.job.state == "SUCCEED"


def test_the_state_filters_name_exactly_the_terminal_and_the_running_states():
    from airflow_provider_metastudio.models import JobState

    assert sorted(tenant.TERMINAL) == sorted(s.value for s in JobState if JobState.is_terminal(s))
    assert tenant.RUNNING == ("WAITING", "PROCESSING")


# Builds the finished scan's list request through the hook (requests_mock: no network) and prints
# its URL. Run in fresh interpreters: string hashes, and so any set's order, differ between them.
_PRINT_LIST_URL = """
import requests_mock
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.tenant import TERMINAL
with requests_mock.Mocker() as m:
    m.get(requests_mock.ANY, json={"count": 0, "picture_modeling_jobs": []})
    hook = MetaStudioHook()
    list(hook.list_picture_modeling_jobs(states=TERMINAL, sort_key="update_time", sort_dir="desc"))
    print(m.request_history[0].url)
"""


@pytest.mark.airflow_independent  # fresh interpreters cost 20 s: once per matrix is enough
def test_the_finished_scan_query_is_the_same_in_every_process(tmp_path):
    conn = {"conn_type": "metastudio", "login": "AK", "password": "SK", "host": "127.0.0.1", "port": 1}
    conn.update(schema="http", extra={"project_id": "p1"})
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),  # the provider this test imported
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW_CONN_METASTUDIO_DEFAULT": json.dumps(conn),
    }
    urls = set()
    for seed in ("1", "2", "3"):
        out = subprocess.run(
            [sys.executable, "-c", _PRINT_LIST_URL],
            env={**env, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        urls.add(out.stdout.strip().splitlines()[-1])
    assert len(urls) == 1, urls
    assert "state=PARTIAL_SUCCEED%2CSUCCEED%2CFAILED%2CCANCELED" in urls.pop()


@on_virtual_clock
async def test_refused_authentication_ends_the_waits_only_after_the_patience(monkeypatch):
    service = Service()
    service.add("a")
    service.add("b")
    refused = MetaStudioAuthError("401 APIGW.0301", status=401, error_code="APIGW.0301")
    service.list_error = service.show_error = refused

    async def same_config(conn_id):
        return FakeHook(service, CONFIG)

    monkeypatch.setattr(connections, "_lookup_hook", same_config)
    poller = new_poller(service)
    watches = [poller.watch("a", INTERVAL), poller.watch("b", INTERVAL)]

    async def scenario():
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(outcome(w) for w in watches))
        return results, asyncio.get_running_loop().time() - started

    results, took = await run(poller, scenario())
    assert poller.auth_patience == 300
    # Refused for the whole patience, then ended within a backoff of it.
    assert poller.auth_patience <= took <= poller.auth_patience + poller.backoff_max + INTERVAL
    for final, _ in results:
        assert isinstance(final.error, MetaStudioAuthError)
        assert "patience" in str(final.error) and "'ms'" in str(final.error)


@on_virtual_clock
async def test_a_connection_fixed_meanwhile_is_picked_up(monkeypatch):
    service = Service()
    service.add("a")
    refused = MetaStudioAuthError("401 APIGW.0301", status=401, error_code="APIGW.0301")
    service.list_error = service.show_error = refused
    fixed = replace(CONFIG, sk="FIXED")
    working = Service()
    working.add("a", "SUCCEED", end=1)
    lookups: list[str] = []

    async def lookup(conn_id):
        lookups.append(conn_id)
        return FakeHook(working, fixed)

    monkeypatch.setattr(connections, "_lookup_hook", lookup)
    poller = new_poller(service)
    w = poller.watch("a", INTERVAL)
    loop = asyncio.get_running_loop()
    started = loop.time()
    final, _ = await run(poller, outcome(w))
    assert loop.time() - started < 60  # well within the 5 minutes of patience
    assert final.job is not None and final.job.state == "SUCCEED"
    assert lookups and set(lookups) == {"ms"}
    assert poller.hook.config.sk == "FIXED"


@pytest.mark.parametrize(
    "change",
    [
        {"app_user_id": "user-2"},
        {"security_token": "st-2"},
        {"sk": "other"},
        {"endpoint": "http://127.0.0.1:2"},
    ],
    ids=["app_user_id", "security_token", "secret", "endpoint"],
)
def test_the_tenant_key_covers_what_changes_the_requests(change):
    base = replace(CONFIG, app_user_id="user-1", security_token="st-1")
    assert tenant_key(base) == tenant_key(replace(base))
    assert tenant_key(base) != tenant_key(replace(base, **change))
    assert all(secret not in repr(tenant_key(base)) for secret in ("SK", "st-1"))


@on_virtual_clock
async def test_connections_differing_only_in_app_user_id_get_their_own_poller_and_headers(monkeypatch):
    configs = {"one": replace(CONFIG, app_user_id="user-1"), "two": replace(CONFIG, app_user_id="user-2")}

    async def aget_config(self):  # the connection lookup, without an Airflow database
        self.__dict__["config"] = configs[self.metastudio_conn_id]
        return self.config

    monkeypatch.setattr(MetaStudioHook, "aget_config", aget_config)
    one = await tenant.acquire("one")
    two = await tenant.acquire("two")
    try:
        assert one is not two
        call = show_call(base_url(CONFIG.endpoint, CONFIG.project_id), "job-1")
        assert one.hook.transport.headers(call, None)["X-App-UserId"] == "user-1"
        assert two.hook.transport.headers(call, None)["X-App-UserId"] == "user-2"
        # The poller owns a hook of its own, which retries little and logs retries at DEBUG.
        assert isinstance(one.hook, MetaStudioHook)
        assert one.hook.retry_limit == POLLER_RETRY_LIMIT
        assert one.hook.retry_log_level == logging.DEBUG
    finally:
        await tenant.release(one)
        await tenant.release(two)


@on_virtual_clock
async def test_a_burst_of_finishing_jobs_is_read_in_quick_rounds():
    service = Service()
    for i in range(300):
        service.add(f"j{i}")
    poller = new_poller(service)
    watches = [poller.watch(f"j{i}", 60) for i in range(300)]

    async def scenario():
        await asyncio.sleep(5)  # just after the first round
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(300):  # 3 a second for 100 s: rounds at the 60 s interval would lag up to 60 s
            service.finish(f"j{i}", at=i)
            if i % 3 == 2:
                await asyncio.sleep(1)
        await asyncio.gather(*(outcome(w) for w in watches))
        return loop.time() - started

    took = await run(poller, scenario())
    # Once a round finds jobs done, busy rounds (every 2 s) follow the burst: the last job that ends
    # is reported within two of them, not at the next 60 s round (115 s).
    assert took <= 100 + 2 * 2
