"""The provider's metrics reach a real StatsD listener through Airflow's own ``Stats``, configured as
users configure it (``[metrics] statsd_on``), and they count what the emulator saw."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_metastudio import metrics

# A fresh interpreter, as a worker is: Stats reads [metrics] from its environment. On Airflow 3.3 a
# task's process initialises the task SDK's Stats (task_runner.main does); this does the same.
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    try:
        from airflow.sdk._shared.observability.metrics import stats
        from airflow.sdk.observability.metrics import stats_utils
        stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    except ImportError:
        pass  # Airflow 2.11 to 3.2: Stats configures itself on first use
    from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook

    job_id = sys.argv[1]
    hook = MetaStudioHook("metastudio_default", retry_delay=0.01)
    hook.get_picture_modeling_job(job_id)  # sync path: a 429 first, then the job
    hook.list_picture_modeling_jobs_page(limit=1)
    async def read():
        try:
            return await hook.aget_picture_modeling_job(job_id)  # async path
        finally:
            await hook.aclose()
    asyncio.run(read())
    """
)


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    return sock


def _counters(sock: socket.socket) -> Counter[str]:
    """Every ``name:value|c`` line received until the socket is quiet (one metric a packet or
    several, newline-separated, depending on the client)."""
    seen: Counter[str] = Counter()
    while True:
        try:
            data = sock.recv(65536).decode()
        except TimeoutError:
            return seen
        for line in data.splitlines():
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if kind.startswith("c"):
                seen[name] += int(float(value))


def test_stat_names_carry_their_dimensions_in_order_and_only_safe_characters():
    assert metrics.stat_name("api.calls", {"call": "show", "status": 200}) == "metastudio.api.calls.show.200"
    assert metrics.stat_name("watcher.events", {"watcher": "new models/α"}) == (
        "metastudio.watcher.events.new_models__"
    )


def test_a_broken_backend_never_breaks_the_caller(monkeypatch):
    class Broken:
        def incr(self, *args, **kwargs):
            raise OSError("statsd host unreachable")

    monkeypatch.setattr(metrics, "_stats", lambda: Broken())
    metrics.incr("api.calls", call="show", status=200)  # no exception


def test_calls_429s_and_retries_reach_statsd_and_match_the_emulators_counts(metastudio_emulator, tmp_path):
    job = metastudio_emulator.jobs.create("metrics", outcome="SUCCEED")
    metastudio_emulator.faults.inject("show", "429", retry_after=0)
    sock = _listen()
    port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__METRICS__STATSD_ON="True",
        AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
        AIRFLOW__METRICS__STATSD_PORT=str(port),
        AIRFLOW__METRICS__STATSD_PREFIX="airflow",
        AIRFLOW_CONN_METASTUDIO_DEFAULT=metastudio_emulator.connection_json(),
        NO_PROXY="127.0.0.1,localhost",
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, job["job_id"]],
            env=env,
            cwd=Path(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        seen = _counters(sock)
    finally:
        sock.close()
    rec = metastudio_emulator.recorder
    expected = {
        "airflow.metastudio.api.calls.show.200": rec.count("show", 200),
        "airflow.metastudio.api.calls.show.429": rec.count("show", 429),
        "airflow.metastudio.api.calls.list.200": rec.count("list", 200),
        "airflow.metastudio.api.throttled.show": rec.count("show", 429),
        "airflow.metastudio.api.retries.show": rec.count("show", 429),
    }
    assert expected == {
        "airflow.metastudio.api.calls.show.200": 2,
        "airflow.metastudio.api.calls.show.429": 1,
        "airflow.metastudio.api.calls.list.200": 1,
        "airflow.metastudio.api.throttled.show": 1,
        "airflow.metastudio.api.retries.show": 1,
    }, json.dumps(rec.counters(), default=str)
    got = {name: seen[name] for name in expected}
    assert got == expected, f"StatsD received {dict(seen)}"


@pytest.mark.parametrize("kind", ["incr", "gauge", "timing"])
def test_each_kind_goes_to_the_stats_backend_with_the_same_dimensions_as_tags(monkeypatch, kind):
    sent = []

    class Recorder:
        def __getattr__(self, name):
            return lambda stat, value, tags=None: sent.append((name, stat, value, tags))

    monkeypatch.setattr(metrics, "_stats", lambda: Recorder())
    getattr(metrics, kind)("poller.x", 3, call="list")
    assert len(sent) == 1
    name, stat, _, tags = sent[0]
    assert (name, stat, tags) == (kind, "metastudio.poller.x.list", {"call": "list"})
