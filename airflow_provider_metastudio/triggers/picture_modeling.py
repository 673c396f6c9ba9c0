"""Trigger that waits in the triggerer until a picture-modeling job reaches a terminal state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_metastudio.exceptions import MetaStudioError
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.models import PictureModelingJob, redact_url
from airflow_provider_metastudio.progress import JobProgress
from airflow_provider_metastudio.tenant import CreateRequest, Watch, create_by_url, watch_job
from airflow_provider_metastudio.validation import validate_job_id

# The final status read at the deadline may take this long (the hook's retries included); Airflow's
# defer timeout leaves room for it.
FINAL_READ_TIMEOUT = 120.0
# Airflow's own defer timeout fires this long after the trigger's deadline, so the trigger's final
# status read and its event (with the real state and durations) always decide, not the scheduler.
DEFER_TIMEOUT_MARGIN = 300.0


def defer_timeout(timeout: float | None) -> timedelta | None:
    """The ``timeout`` to give ``defer()`` for a wait of ``timeout`` seconds (None: wait forever)."""
    return None if timeout is None else timedelta(seconds=timeout + DEFER_TIMEOUT_MARGIN)


def job_event(job: PictureModelingJob, accept_partial_success: bool) -> dict[str, Any]:
    """The event payload for a terminal job: ``success`` or ``failed``.

    Only what the task needs to decide: the job id, its state and the model, plus the error for a
    failure. Airflow logs events whole and stores them in its database, so no cover URL (a signed
    credential) travels here; the task reads the finished job once more for a fresh one.
    """
    message = f"Picture modeling job {job.job_id} ended {job.state}"
    if job.is_success(accept_partial_success):
        return {
            "status": "success",
            "job_id": job.job_id,
            "state": job.state,
            "model_asset_id": job.model_asset_id,
            "message": message,
        }
    return {
        "status": "failed",
        "job_id": job.job_id,
        "state": job.state,
        "error_code": job.error_code,
        "error_msg": job.error_msg,
        "message": message + (f": {job.error_code} {job.error_msg}" if job.error_info else ""),
    }


class MetaStudioPictureModelingJobTrigger(BaseTrigger):
    """Poll a picture-modeling job until it ends, then fire exactly one event.

    Events (``status``): ``success`` (``job_id``, ``state``, ``model_asset_id``), ``failed``
    (FAILED, CANCELED, or PARTIAL_SUCCEED when not accepted; with ``error_code``/``error_msg``),
    ``timeout`` (past ``end_time``) or ``error`` (an exception retries did not cure; with its
    status, code and request id).

    :param job_id: the job to watch.
    :param metastudio_conn_id: the ``metastudio`` connection.
    :param poll_interval: seconds between polls.
    :param end_time: absolute deadline, ``time.time()`` seconds.
    :param accept_partial_success: whether PARTIAL_SUCCEED (model made, cover missing) is success.
    """

    def __init__(
        self,
        job_id: str,
        end_time: float | None = None,
        metastudio_conn_id: str = MetaStudioHook.default_conn_name,
        poll_interval: float = 30.0,
        accept_partial_success: bool = True,
        last_state: str | None = None,
        wait_started: float | None = None,
        timeout: float | None = None,
        last_seen: float | None = None,
        try_number: int | None = None,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.end_time = None if end_time is None else float(end_time)
        self.metastudio_conn_id = metastudio_conn_id
        self.poll_interval = float(poll_interval)
        self.accept_partial_success = bool(accept_partial_success)
        # The state the deferring task last logged: the trigger logs only what changes after it.
        self.last_state = last_state
        # When the whole wait began (the sensor's first poke, the operator's create) and the
        # configured timeout, so a timeout message states the whole wait, not the trigger's share.
        self.wait_started = time.time() if wait_started is None else float(wait_started)
        self.timeout = None if timeout is None else float(timeout)
        self.last_seen = last_seen  # time.time() of the observation that gave last_state
        # The deferring try, echoed in every event: Airflow 3.0 resumes a *retry* with the failed
        # try's event (it keeps next_method/next_kwargs), and the task must be able to tell.
        self.try_number = try_number

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # Plain values only: the triggerer stores these in its database. No client, no secret.
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "end_time": self.end_time,
                "metastudio_conn_id": self.metastudio_conn_id,
                "poll_interval": self.poll_interval,
                "accept_partial_success": self.accept_partial_success,
                "last_state": self.last_state,
                "wait_started": self.wait_started,
                "timeout": self.timeout,
                "last_seen": self.last_seen,
                "try_number": self.try_number,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async for event in self._events():
            if self.try_number is not None:
                event.payload["try_number"] = self.try_number
            yield event

    async def _events(self) -> AsyncIterator[TriggerEvent]:
        # All triggers of a tenant in this event loop share one poller (see the tenant package); it
        # hands this trigger what it sees, and the trigger logs it here, in its own task's log.
        progress = self._progress()
        try:
            validate_job_id(self.job_id)
            async with watch_job(self.metastudio_conn_id, self.job_id, self.poll_interval) as watch:
                while True:
                    remaining = None if self.end_time is None else self.end_time - time.time()
                    if remaining is not None and remaining <= 0:
                        break
                    try:
                        obs = await asyncio.wait_for(watch.next(), timeout=remaining)
                    except asyncio.TimeoutError:
                        break
                    if obs.notice is not None:
                        self.log.log(obs.level, "%s", obs.notice)
                    elif obs.error is not None:
                        raise obs.error
                    elif obs.job is not None:
                        progress.observe(obs.job)
                        if obs.job.is_terminal:
                            yield TriggerEvent(job_event(obs.job, self.accept_partial_success))
                            return
                # The deadline: one last look, so a job that ended since the last poll (or long
                # before a triggerer restart rebuilt this trigger) is reported as what it is.
                yield TriggerEvent(await self._final_event(watch, progress))
        except MetaStudioError as e:
            yield TriggerEvent({"status": "error", "job_id": self.job_id, **_error_fields(e)})
        except Exception as e:  # any other failure must still end the wait with an event
            self.log.exception("Unexpected error while waiting for picture modeling job %s", self.job_id)
            yield TriggerEvent(
                {
                    "status": "error",
                    "job_id": self.job_id,
                    "message": f"{type(e).__name__}: {e}",
                    "error_type": type(e).__name__,
                }
            )

    def _progress(self) -> JobProgress:
        """Progress of the whole wait, resumed from what the deferring task saw (wall clock to monotonic)."""
        now, mono = time.time(), time.monotonic()
        progress = JobProgress(self.job_id, self.log, started=mono - max(now - self.wait_started, 0.0))
        progress.last_state = self.last_state
        if self.last_seen is not None:
            progress.last_seen = mono - max(now - self.last_seen, 0.0)
        return progress

    async def _final_event(self, watch: Watch, progress: JobProgress) -> dict[str, Any]:
        note = ""
        try:
            job = await asyncio.wait_for(watch.read(), FINAL_READ_TIMEOUT)
        except (MetaStudioError, asyncio.TimeoutError) as e:
            note = f"; the final status read failed: {e or type(e).__name__}"
        else:
            progress.observe(job)
            if job.is_terminal:
                return job_event(job, self.accept_partial_success)
        return {
            "status": "timeout",
            "job_id": self.job_id,
            "last_state": progress.last_state,
            "message": progress.timeout_message(self.timeout) + note,
        }


class MetaStudioCreatePictureModelingJobTrigger(BaseTrigger):
    """Create a picture-modeling job by URL in the triggerer, through the tenant's create queue
    (first come first served, at the create quota; see ``tenant/creates.py``), then fire one event.

    A job of the same ``name`` and style created since ``created_since`` that is running or
    succeeded (an earlier run of this trigger: a triggerer restart, an HA copy) is adopted instead.
    Events (``status``): ``created`` (``job_id``, ``model_asset_id``, ``adopted_state``: the state of
    an adopted job or None, ``queued_seconds``, ``wait_started``), ``timeout`` (not created before
    ``end_time``) or ``error`` (with status, code and request id). The task then pushes the ids and
    defers again with :class:`MetaStudioPictureModelingJobTrigger` for the wait.

    :param picture_url: http(s) URL of the photo (may be pre-signed: redacted in this trigger's repr).
    :param created_since: ISO 8601 lower bound of the name lookup (the deferral, less a margin).
    """

    def __init__(
        self,
        picture_url: str,
        style_id: str,
        name: str,
        created_since: str,
        end_time: float | None = None,
        metastudio_conn_id: str = MetaStudioHook.default_conn_name,
        notify_url: str | None = None,
        accept_partial_success: bool = True,
        wait_started: float | None = None,
        timeout: float | None = None,
        try_number: int | None = None,
    ) -> None:
        super().__init__()
        self.picture_url = picture_url
        self.style_id = style_id
        self.name = name
        self.created_since = created_since
        self.end_time = None if end_time is None else float(end_time)
        self.metastudio_conn_id = metastudio_conn_id
        self.notify_url = notify_url
        self.accept_partial_success = bool(accept_partial_success)
        self.wait_started = time.time() if wait_started is None else float(wait_started)
        self.timeout = None if timeout is None else float(timeout)
        self.try_number = try_number

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "picture_url": self.picture_url,
                "style_id": self.style_id,
                "name": self.name,
                "created_since": self.created_since,
                "end_time": self.end_time,
                "metastudio_conn_id": self.metastudio_conn_id,
                "notify_url": self.notify_url,
                "accept_partial_success": self.accept_partial_success,
                "wait_started": self.wait_started,
                "timeout": self.timeout,
                "try_number": self.try_number,
            },
        )

    def __repr__(self) -> str:
        # Airflow logs a trigger's repr: a pre-signed photo URL's signature must not be in it.
        classpath, kwargs = self.serialize()
        kwargs["picture_url"] = redact_url(self.picture_url)
        # The shape of Airflow 3's BaseTrigger.repr, which Airflow 2.11 does not have.
        return f"<{classpath} {', '.join(f'{k}={v}' for k, v in kwargs.items())}>"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        event = await self._event()
        if self.try_number is not None:
            event["try_number"] = self.try_number
        yield TriggerEvent(event)

    async def _event(self) -> dict[str, Any]:
        request = CreateRequest(
            picture_url=self.picture_url,
            style_id=self.style_id,
            name=self.name,
            created_since=datetime.fromisoformat(self.created_since),
            notify_url=self.notify_url,
            deadline=self.end_time,
            accept_partial_success=self.accept_partial_success,
        )
        remaining = None if self.end_time is None else max(self.end_time - time.time(), 0.0)
        try:
            outcome = await asyncio.wait_for(create_by_url(self.metastudio_conn_id, request), remaining)
        except asyncio.TimeoutError:
            return {
                "status": "timeout",
                "message": f"Picture modeling job {self.name!r} was not created within the task's "
                f"timeout ({self.timeout or 0:.0f}s): it waited its turn in the tenant's create queue",
            }
        except MetaStudioError as e:
            return {"status": "error", **_error_fields(e)}
        except Exception as e:  # any failure must still end the wait with an event
            self.log.exception("Unexpected error while creating picture modeling job %r", self.name)
            return {"status": "error", "message": f"{type(e).__name__}: {e}", "error_type": type(e).__name__}
        adopted = outcome.adopted
        if adopted is not None:
            self.log.info(
                "Adopting picture modeling job %s (%s) named %r: an earlier run of this trigger created it",
                outcome.job_id,
                adopted.state,
                self.name,
            )
        else:
            self.log.info(
                "Created picture modeling job %s (model_asset_id=%s) after %.1fs in the create queue",
                outcome.job_id,
                outcome.model_asset_id,
                outcome.queued_seconds,
            )
        return {
            "status": "created",
            "job_id": outcome.job_id,
            "model_asset_id": outcome.model_asset_id,
            "adopted_state": None if adopted is None else adopted.state,
            "queued_seconds": outcome.queued_seconds,
            "wait_started": self.wait_started,
        }


def _error_fields(e: MetaStudioError) -> dict[str, Any]:
    d = e.to_dict()
    return {
        "message": d["message"],
        "error_type": d["type"],
        "status_code": d["status"],
        "error_code": d["error_code"],
        "error_msg": d["error_msg"],
        "request_id": d["request_id"],
    }


def try_number_of(context: Any) -> int | None:
    """The running try's number, or None where the context has none (unit tests' bare contexts)."""
    number = getattr(context.get("ti"), "try_number", None)
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def is_stale_event(event: dict[str, Any] | None, context: Any) -> bool:
    """Whether ``event`` was fired for an earlier try of this task (Airflow 3.0 replays it on retry)."""
    fired_for = (event or {}).get("try_number")
    current = try_number_of(context)
    return isinstance(fired_for, int) and current is not None and fired_for != current


def resolve_event(event: dict[str, Any] | None, timeout_exc: type[Exception]) -> str:
    """Turn a trigger event into the finished job's id (success) or the matching exception.

    Shared by the sensor and the operators so a deferred wait ends exactly like a blocking one.

    :param timeout_exc: what a ``timeout`` event raises (``AirflowSensorTimeout`` for the sensor, so
        ``soft_fail`` applies).
    """
    from airflow_provider_metastudio.exceptions import MetaStudioJobFailedError

    if not event or "status" not in event:
        raise MetaStudioError(f"Malformed trigger event: {event!r:.200}")
    status = event["status"]
    if status == "success":
        return str(event["job_id"])
    if status == "failed":
        raise MetaStudioJobFailedError(
            event["job_id"], event["state"], event.get("error_code"), event.get("error_msg")
        )
    if status == "timeout":
        raise timeout_exc(event["message"])
    raise MetaStudioError(
        event.get("message", "unknown error"),
        status=event.get("status_code"),
        error_code=event.get("error_code"),
        error_msg=event.get("error_msg"),
        request_id=event.get("request_id"),
    )
