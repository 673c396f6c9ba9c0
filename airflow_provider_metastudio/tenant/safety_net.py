"""The details loop: a details call per watch, round-robin, as a safety net for what lists miss.

The list semantics are not confirmed by the contract (sort by ``update_time``, that it equals the
end time, immediate visibility, stable offset paging), so the finished scan (:mod:`.stream`) is only
an optimisation: every watch also gets a details call of its own, round-robin, at least every
:attr:`net_rounds` of its poll intervals (60 s at least), paced to :attr:`net_share` of the details
quota so sync pokes of workers keep the rest. A job the lists miss (vanished, listed late with an
old ``update_time``, listed out of order, skipped by paging) is therefore resolved within about
``max(net_rounds * poll_interval, 60 s, watches / (net_share * details quota))`` - at the defaults
and 1/s, ``max(6 * poll_interval, 60 s, 2 s * watches)``. New watches that a full pass of the
running list did not find, and jobs in a state the contract does not list, get theirs first.
"""

from __future__ import annotations

import asyncio

from airflow_provider_metastudio.exceptions import MetaStudioBadRequestError, MetaStudioNotFoundError
from airflow_provider_metastudio.tenant._core import Observation, Watch, now
from airflow_provider_metastudio.tenant.health import Health


class SafetyNet(Health):
    """The details loop of the tenant client."""

    def _check_every(self, w: Watch) -> float:
        if w.unknown_state:
            return w.interval
        return max(self.net_rounds * w.interval, self.net_min_period)

    def _next_details(self, t: float) -> tuple[str | None, float]:
        """The job to ask about next and whether it is paced by the net: (job id, wait seconds)."""
        best: tuple[float, str] | None = None
        for job_id, ws in self.watches.items():
            for w in ws:
                if w.priority:  # first in line, but still paced: the rest of the quota is the workers'
                    wait = max(self._net_next - t, 0.0)
                    return (job_id if wait <= 0 else None), wait
                if w.last_verified is None:
                    due = -1.0 if not w.confirmed else t  # new watches before the round-robin
                else:
                    due = w.last_verified + self._check_every(w)
                if best is None or due < best[0]:
                    best = (due, job_id)
        if best is None:
            return None, 3600.0
        wait = max(best[0] - t, self._net_next - t, 0.0)
        return (best[1] if wait <= 0 else None), wait

    async def _details_loop(self) -> None:
        failures = 0
        while not self._closed:
            t = now()
            job_id, wait = self._next_details(t)
            if job_id is None:
                self._details_wake.clear()
                await self._sleep(self._details_wake, wait)
                continue
            ws = self.watches.get(job_id, [])
            rate = (self.hook.config.rate_limits or {}).get("show") or 1.0
            self._net_next = t + 1.0 / (rate * self.net_share)
            try:
                self.details_calls += 1
                job = await self.hook.aget_picture_modeling_job(job_id)
            except asyncio.CancelledError:
                raise
            except (MetaStudioNotFoundError, MetaStudioBadRequestError) as e:
                self._recovered("details")
                self._end(job_id, e)
                continue
            except Exception as e:
                failures += 1
                for w in ws:  # asked about, even if unanswered: the round-robin moves on
                    w.last_verified = now()
                    w.priority = False
                await self._failed("details", e)
                await asyncio.sleep(self._backoff(failures))
                continue
            failures = 0
            self._recovered("details")
            if job.is_terminal:
                self._resolve(job)
                continue
            for w in self.watches.get(job_id, []):
                w.last_verified = now()
                w.confirmed, w.priority = True, False
                w.unknown_state = job.known_state is None
                w._put(Observation(job))
