"""A scripted MetaStudio tenant for the tenant client's unit tests: list pages and details answers
from an in-memory job table, with errors on demand, behind the two hook methods the client calls.
Runs on the virtual clock (``testsupport.virtual_time``); no HTTP.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_metastudio.api import JobPage
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import MetaStudioError, MetaStudioNotFoundError
from airflow_provider_metastudio.models import PictureModelingJob
from airflow_provider_metastudio.tenant import Observation, TenantPoller, Watch

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
CONFIG = MetaStudioConnectionConfig(
    project_id="p1", endpoint="http://127.0.0.1:1", ak="AK", sk="SK", rate_limits={"show": 200, "list": 200}
)


class Service:
    """A scripted MetaStudio: jobs, what the lists show, and errors per call or per job."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.hidden_from_lists: set[str] = set()
        self.list_error: MetaStudioError | None = None
        self.show_error: MetaStudioError | None = None
        self.show_errors: dict[str, MetaStudioError] = {}
        self.calls: list[tuple[str, Any]] = []

    def add(self, job_id: str, state: str = "PROCESSING", end: int | None = None) -> None:
        self.jobs[job_id] = {"job_id": job_id, "state": state, "end": end}

    def finish(self, job_id: str, state: str = "SUCCEED", at: int = 0) -> None:
        self.jobs[job_id].update(state=state, end=at)

    def job(self, job_id: str) -> PictureModelingJob:
        j = self.jobs[job_id]
        end = None if j["end"] is None else T0 + timedelta(seconds=j["end"])
        return PictureModelingJob(job_id, j["state"], end_time=end, model_asset_id=f"asset-{job_id}")

    def page(self, offset: int, limit: int, states: list[str], sort_key: str) -> JobPage:
        self.calls.append(("list", tuple(states)))
        if self.list_error is not None:
            raise self.list_error
        rows = [
            self.job(j)
            for j, v in self.jobs.items()
            if v["state"] in states and j not in self.hidden_from_lists
        ]
        rows.sort(key=lambda job: job.end_time or T0, reverse=True)
        page = [replace(job, request_id="rid-list") for job in rows[offset : offset + limit]]
        return JobPage(len(rows), page, "rid-list")

    def show(self, job_id: str) -> PictureModelingJob:
        self.calls.append(("show", job_id))
        if self.show_error is not None:
            raise self.show_error
        if job_id in self.show_errors:
            raise self.show_errors[job_id]
        if job_id not in self.jobs:
            raise MetaStudioNotFoundError(f"404 {job_id}", status=404, error_code="MSS.00000003")
        return replace(self.job(job_id), request_id="rid-show")

    def count(self, call: str) -> int:
        return sum(1 for c in self.calls if c[0] == call)


class FakeHook:
    """The two hook methods the poller calls, answered by a :class:`Service`.

    :param list_rate: list calls per second, paced as the real hook's client-side quota paces them
        (None: unpaced).
    """

    def __init__(
        self, service: Service, config: MetaStudioConnectionConfig = CONFIG, list_rate: float | None = None
    ) -> None:
        self.service = service
        self.config = config
        self.closed = False
        self.list_rate = list_rate
        self._list_slot = 0.0

    async def alist_picture_modeling_jobs_page(self, *, offset, limit, states, sort_key, sort_dir):
        if self.list_rate:
            loop = asyncio.get_running_loop()
            slot = self._list_slot = max(loop.time(), self._list_slot + 1.0 / self.list_rate)
            await asyncio.sleep(slot - loop.time())
        await asyncio.sleep(0)
        return self.service.page(offset, limit, states, sort_key)

    async def aget_picture_modeling_job(self, job_id):
        await asyncio.sleep(0)
        return self.service.show(job_id)

    async def aclose(self) -> None:
        self.closed = True


INTERVAL = 10.0  # a sensor's poll interval


def new_poller(service: Service, list_rate: float | None = None) -> TenantPoller:
    hook = FakeHook(service, list_rate=list_rate)
    return TenantPoller("ms", hook, ("http://127.0.0.1:1", "p1"))  # type: ignore[arg-type]


async def outcome(w: Watch) -> tuple[Observation, list[Observation]]:
    """The observation that ended the wait, and every notice before it."""
    notices = []
    while True:
        obs = await w.next()
        if obs.notice is not None:
            notices.append(obs)
        elif obs.error is not None or (obs.job is not None and obs.job.is_terminal):
            return obs, notices


async def run(poller: TenantPoller, coro):
    """Run a scenario (bounded: a lost wait fails the test instead of hanging it), then stop the poller."""
    try:
        return await asyncio.wait_for(coro, 3600)
    finally:
        await poller.close()
