"""One log line per job state change, and one timeout message, shared by the hook's wait, the sensor
and the trigger."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from airflow_provider_metastudio.models import JobState, PictureModelingJob, redact_url


class JobProgress:
    """Remembers a job's last seen state and logs only when it changes.

    Polls that find nothing new are logged at DEBUG: a sensor that waits an hour at a 30 s interval
    writes a handful of INFO lines, not 120.

    :param job_id: the job being watched.
    :param log: where to write.
    :param started: monotonic start of the wait (elapsed times are measured from it).
    :param clock: monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        job_id: str,
        log: Any,  # a logging.Logger, or the structlog logger Airflow 3 gives tasks and triggers
        *,
        started: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_id = job_id
        self.log = log
        self._clock = clock
        self.started = clock() if started is None else started
        self.last_state: str | None = None
        self.last_seen: float | None = None  # clock time of the last observation
        self._warned_unknown: set[str] = set()

    def elapsed(self) -> float:
        return self._clock() - self.started

    def observe(self, job: PictureModelingJob) -> bool:
        """Log the job's state if it changed (with the ``X-Request-Id`` it was read with); return True
        when it did."""
        request_id = job.request_id
        self.last_seen = self._clock()
        if job.state == self.last_state:
            self.log.debug(
                "Picture modeling job %s still %s (X-Request-Id: %s)", job.job_id, job.state, request_id
            )
            return False
        previous, self.last_state = self.last_state, job.state
        if JobState.parse(job.state) is None and job.state not in self._warned_unknown:
            self._warned_unknown.add(job.state)
            self.log.warning(
                "Picture modeling job %s reports state %r, which this provider does not know; "
                "treating it as not finished (X-Request-Id: %s)",
                job.job_id,
                job.state,
                request_id,
            )
            return True
        detail = ""
        if job.is_failure and job.error_info:
            detail = f" error {job.error_code}: {job.error_msg}"
        elif job.is_terminal:
            detail = f" model_asset_id={job.model_asset_id} cover={redact_url(job.model_cover_url)}"
        self.log.info(
            "Picture modeling job %s: %s -> %s after %.1fs%s (X-Request-Id: %s)",
            job.job_id,
            previous or "(first look)",
            job.state,
            self.elapsed(),
            detail,
            request_id,
        )
        return True

    def timeout_message(self, timeout: float | None) -> str:
        """Why this wait timed out (see :func:`wait_timeout_message`)."""
        ago = None if self.last_seen is None else self._clock() - self.last_seen
        return wait_timeout_message(self.job_id, self.last_state, self.elapsed(), timeout, ago)


def wait_timeout_message(
    job_id: str, state: str | None, elapsed: float, timeout: float | None, last_seen_ago: float | None
) -> str:
    """The one message for a wait that ran out of time, with every duration a user needs to judge it:
    ``Picture modeling job X still PROCESSING after 600 s (timeout 600 s; last seen PROCESSING 12 s ago)``.
    """
    limit = "none" if timeout is None else f"{timeout:.0f} s"
    seen = (
        f"last seen {state} {last_seen_ago:.0f} s ago"
        if state is not None and last_seen_ago is not None
        else "never seen"
    )
    return (
        f"Picture modeling job {job_id} still {state or 'unknown'} after {elapsed:.0f} s "
        f"(timeout {limit}; {seen})"
    )
