"""The tenant client's metrics (``docs/metrics.md``): what it sends, and that a broken metrics
backend never reaches the waits. Airflow's Stats is replaced by a recorder at ``metrics._stats``."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from testsupport.scripted_tenant import INTERVAL, Service, new_poller, outcome, run
from testsupport.virtual_time import on_virtual_clock

from airflow_provider_metastudio import metrics
from airflow_provider_metastudio.exceptions import MetaStudioServerError
from airflow_provider_metastudio.models import PictureModelingJob
from airflow_provider_metastudio.tenant import Watch


class RecordingStats:
    def __init__(self, broken: bool = False) -> None:
        self.sent: list[tuple[str, str, object]] = []
        self.broken = broken

    def _record(self, kind: str, name: str, value: object, tags: dict[str, str] | None = None) -> None:
        if self.broken:
            raise RuntimeError("statsd is down")
        self.sent.append((kind, name, value))

    def incr(self, name, value, tags=None):
        self._record("incr", name, value, tags)

    def gauge(self, name, value, tags=None):
        self._record("gauge", name, value, tags)

    def timing(self, name, value, tags=None):
        self._record("timing", name, value, tags)


async def _outage_then_two_jobs_end(stats: RecordingStats, monkeypatch):
    monkeypatch.setattr(metrics, "_stats", lambda: stats)
    service = Service()
    service.add("a")
    service.add("b")
    service.list_error = MetaStudioServerError("503 gateway", status=503)
    service.show_error = service.list_error
    poller = new_poller(service)
    watches = [poller.watch("a", INTERVAL), poller.watch("b", INTERVAL)]

    async def scenario():
        await asyncio.sleep(30)
        service.list_error = service.show_error = None
        service.finish("a", at=40)
        service.finish("b", at=41)
        return await asyncio.gather(*(outcome(w) for w in watches))

    results = await run(poller, scenario())
    return poller, [final for final, _ in results]


@on_virtual_clock
async def test_rounds_watches_outages_and_detection_lag_are_sent(monkeypatch):
    stats = RecordingStats()
    poller, finals = await _outage_then_two_jobs_end(stats, monkeypatch)
    assert all(f.job is not None and f.job.state == "SUCCEED" for f in finals)
    sent = stats.sent
    assert sum(v for k, n, v in sent if n == "metastudio.poller.list_rounds") == poller.rounds
    assert ("gauge", "metastudio.poller.watches", 2) in sent
    assert sent[-1] == ("gauge", "metastudio.poller.watches", 0)  # the client stopped
    outages = {n: v for k, n, v in sent if n.startswith("metastudio.poller.outage_seconds.")}
    # The list outage ended with an answer; the details loop may not have called again before the
    # waits ended (an outage that never ended is not timed).
    assert "metastudio.poller.outage_seconds.list" in outages
    assert all(timedelta(seconds=20) <= v <= timedelta(seconds=60) for v in outages.values()), outages
    lags = [v for k, n, v in sent if n == "metastudio.poller.detection_lag"]
    assert len(lags) == 2 and all(v >= timedelta(0) for v in lags)


@on_virtual_clock
async def test_a_broken_metrics_backend_never_reaches_the_waits(monkeypatch):
    _, finals = await _outage_then_two_jobs_end(RecordingStats(broken=True), monkeypatch)
    assert all(f.job is not None and f.job.state == "SUCCEED" for f in finals)


@pytest.mark.parametrize("lag", [-30.0, 5.0], ids=["server-clock-ahead", "five-seconds"])
def test_detection_lag_is_clamped_at_zero_when_the_server_clock_is_ahead(monkeypatch, lag):
    stats = RecordingStats()
    monkeypatch.setattr(metrics, "_stats", lambda: stats)
    poller = new_poller(Service())
    poller.watches["a"] = [Watch("a", INTERVAL, poller)]
    poller._resolve(
        PictureModelingJob("a", "SUCCEED", end_time=datetime.now(timezone.utc) - timedelta(seconds=lag))
    )
    (value,) = [v for k, n, v in stats.sent if n == "metastudio.poller.detection_lag"]
    if lag < 0:
        assert value == timedelta(0)
    else:
        assert timedelta(seconds=4) <= value <= timedelta(seconds=6)
