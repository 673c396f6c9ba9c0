"""Operators that create picture-modeling jobs or read one, and hand the model on through XCom."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any

from airflow_provider_metastudio._compat import BaseOperator, conf, object_storage_path
from airflow_provider_metastudio.api import base_url, create_by_url_call
from airflow_provider_metastudio.asset_events import emit_outlet_events
from airflow_provider_metastudio.exceptions import (
    MetaStudioError,
    MetaStudioJobFailedError,
    MetaStudioValidationError,
    MetaStudioWaitTimeout,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.lineage import model_dataset, operator_lineage, path_dataset
from airflow_provider_metastudio.links.picture_modeling import (
    XCOM_CONSOLE_URL_KEY,
    MetaStudioPictureModelingJobLink,
    push_console_url,
)
from airflow_provider_metastudio.models import JobState, PictureModelingJob, redact_url
from airflow_provider_metastudio.triggers.picture_modeling import (
    MetaStudioCreatePictureModelingJobTrigger,
    MetaStudioPictureModelingJobTrigger,
    defer_timeout,
    is_stale_event,
    resolve_event,
    try_number_of,
)
from airflow_provider_metastudio.validation import (
    MAX_NAME_LENGTH,
    validate_wait_settings,
)

#: XCom keys pushed when a job is done (the return value is the whole job as a dict).
RESULT_KEYS = ("job_id", "state", "model_asset_id", "model_cover_url", "model_cover_url_expires_at")


class _PictureModelingJobOperator(BaseOperator):
    """Waiting, XCom and cover copying shared by the create and get operators."""

    operator_extra_links = (MetaStudioPictureModelingJobLink(),)
    ui_color = "#c7000b"

    def __init__(
        self,
        *,
        metastudio_conn_id: str = MetaStudioHook.default_conn_name,
        wait_for_completion: bool,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        timeout: float | None = 3600.0,
        accept_partial_success: bool = True,
        cover_destination: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        validate_wait_settings(poll_interval, timeout)
        self.metastudio_conn_id = metastudio_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.accept_partial_success = accept_partial_success
        self.cover_destination = cover_destination

    @cached_property
    def hook(self) -> MetaStudioHook:
        return MetaStudioHook(self.metastudio_conn_id)

    def _push_console_url(self, context: Any, model_asset_id: str | None) -> None:
        push_console_url(context, self.hook.config.region, model_asset_id)

    def _wait(
        self,
        context: Any,
        job_id: str,
        *,
        wait_started: float,
        last_state: str | None = None,
        last_seen: float | None = None,
    ) -> dict[str, Any]:
        """Wait for the job (blocking or deferred) and finish; returns the job dict.

        :param wait_started: ``time.time()`` when the wait began (the create, or the first read).
        :param last_state: the state this try last saw, and ``last_seen`` when (``time.time()``).
        """
        if self.deferrable:
            self.defer(
                trigger=MetaStudioPictureModelingJobTrigger(
                    job_id=job_id,
                    end_time=None if self.timeout is None else wait_started + self.timeout,
                    metastudio_conn_id=self.metastudio_conn_id,
                    poll_interval=self.poll_interval,
                    accept_partial_success=self.accept_partial_success,
                    last_state=last_state,
                    wait_started=wait_started,
                    timeout=self.timeout,
                    last_seen=last_seen,
                    try_number=try_number_of(context),
                ),
                method_name="execute_complete",
                timeout=defer_timeout(self.timeout),
            )
        # The blocking wait's clock starts now: the time already spent is a create call or one read.
        job = self.hook.wait_for_picture_modeling_job(
            job_id, poll_interval=self.poll_interval, timeout=self.timeout
        )
        return self._end(context, job)

    def _end(self, context: Any, job: PictureModelingJob) -> dict[str, Any]:
        """A terminal job: fail the task unless it succeeded, else finish."""
        if not job.is_success(self.accept_partial_success):
            raise MetaStudioJobFailedError(job.job_id, job.state, job.error_code, job.error_msg)
        return self._finish(context, job)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        if is_stale_event(event, context):
            self.log.warning("Airflow resumed this try with an earlier try's event; starting the try over")
            return self.execute(context)
        # The event carries no cover URL (a signed credential): read the finished job for a fresh one.
        job_id = resolve_event(event, MetaStudioWaitTimeout)
        return self._finish(context, self.hook.get_picture_modeling_job(job_id))

    #: XCom keys this operator pushed before the wait (each key is pushed once per try).
    _pushed_before_wait: Collection[str] = ()

    def _finish(self, context: Any, job: PictureModelingJob) -> dict[str, Any]:
        ti = context["ti"]
        result = job.to_dict()
        for key in RESULT_KEYS:
            # Airflow 3.0's execution API refuses an XCom whose value is None; an absent key
            # reads back as None all the same (PARTIAL_SUCCEED has no cover URL).
            if result[key] is not None and key not in self._pushed_before_wait:
                ti.xcom_push(key=key, value=result[key])
        if XCOM_CONSOLE_URL_KEY not in self._pushed_before_wait:
            self._push_console_url(context, job.model_asset_id)
        if self.cover_destination:
            result["model_cover_path"] = self._copy_cover(job)
            if result["model_cover_path"] is not None:
                ti.xcom_push(key="model_cover_path", value=result["model_cover_path"])
        cover_path = result.get("model_cover_path")
        self._lineage_outputs = (
            [model_dataset(self.hook.config.project_id, job.model_asset_id)] if job.model_asset_id else []
        )
        if cover_path:
            self._lineage_outputs.append(path_dataset(cover_path))
        emit_outlet_events(
            self,
            context,
            model_asset_id=job.model_asset_id,
            job_id=job.job_id,
            state=job.state,
            paths=[cover_path] if cover_path else None,
        )
        self.log.info(
            "Picture modeling job %s %s: model_asset_id=%s cover=%s",
            job.job_id,
            job.state,
            job.model_asset_id,
            redact_url(job.model_cover_url),
        )
        return result

    #: OpenLineage outputs of this try: the model asset and the copied cover (set by _finish).
    _lineage_outputs: list[tuple[str, str]] | None = None

    def _lineage_inputs(self) -> list[tuple[str, str]]:
        """OpenLineage inputs: none for a job that is only read (the create operator names its photo)."""
        return []

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The photo as input, the model asset (and the copied cover) as outputs; None without the
        OpenLineage provider or before a model exists."""
        if not self._lineage_outputs:
            return None
        return operator_lineage(self._lineage_inputs(), self._lineage_outputs)

    def _copy_cover(self, job: PictureModelingJob) -> str | None:
        """Copy the cover to ``cover_destination`` while its signed URL still works."""
        if not job.model_cover_url:
            # PARTIAL_SUCCEED: the model exists, the cover screenshot failed.
            self.log.warning(
                "Picture modeling job %s has no cover picture to copy (%s)", job.job_id, job.state
            )
            return None
        dest = object_storage_path(self.cover_destination)
        if str(self.cover_destination).endswith("/") or dest.is_dir():
            dest = dest / f"{job.model_asset_id or job.job_id}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as f:
            size = self.hook.download_cover(job.model_cover_url, f)
        self.log.info("Copied the cover of job %s (%d bytes) to %s", job.job_id, size, dest)
        return str(dest)


class MetaStudioGetPictureModelingJobOperator(_PictureModelingJobOperator):
    """Read a picture-modeling job (the job-details call) and push its results to XCom.

    Pushes ``job_id``, ``state``, ``model_asset_id``, ``model_cover_url`` and
    ``model_cover_url_expires_at``; the return value is the whole job. With
    ``wait_for_completion`` it first waits like the sensor does.

    :param job_id: the job (templated).
    :param wait_for_completion: wait until the job ends (FAILED/CANCELED fail the task).
    :param cover_destination: optional file or object-store path/URI to copy the cover to.
    """

    template_fields: Sequence[str] = ("job_id", "cover_destination", "metastudio_conn_id")

    def __init__(self, *, job_id: str, wait_for_completion: bool = False, **kwargs: Any) -> None:
        super().__init__(wait_for_completion=wait_for_completion, **kwargs)
        self.job_id = job_id

    def execute(self, context: Any) -> dict[str, Any]:
        validate_wait_settings(self.poll_interval, self.timeout)
        started = time.time()
        job = self.hook.get_picture_modeling_job(self.job_id)  # the hook validates the id first
        job_id = job.job_id
        self.log.info("Picture modeling job %s is %s (X-Request-Id: %s)", job_id, job.state, job.request_id)
        if not self.wait_for_completion:
            return self._finish(context, job)
        if not job.is_terminal:
            return self._wait(
                context, job_id, wait_started=started, last_state=job.state, last_seen=time.time()
            )
        return self._end(context, job)


class MetaStudioCreatePictureModelingJobOperator(_PictureModelingJobOperator):
    """Create a picture-modeling job from a photo or a photo URL, wait for it, and push the model.

    ``job_id`` and ``model_asset_id`` are pushed to XCom as soon as the job exists; when it is done
    the same keys as :class:`MetaStudioGetPictureModelingJobOperator` follow (each key once), plus
    ``model_cover_path`` when ``cover_destination`` is set.

    **One job per task run, across retries.** A create whose answer was lost (connection dropped
    after sending, an empty 200), or a try that failed later (the wait errored or timed out), leaves
    a job running that the service bills. So a *retry* (a try after the first of this run; the first
    try after a clear is not a retry) first looks for the job an earlier try created: jobs created
    since the DAG run started (minus :data:`CLOCK_SKEW_MARGIN`), with the same ``name`` and
    ``style_id``, newest first. The newest one still WAITING or PROCESSING, or that succeeded
    (SUCCEED; PARTIAL_SUCCEED when ``accept_partial_success``), is adopted: its ids are pushed and
    the task waits for it instead of creating another. FAILED or CANCELED ones are left alone and a
    new job is created. This needs a ``name`` unique per task run: the default is one
    (:func:`default_job_name`); a name you give must be unique per run too (e.g. contain
    ``{{ run_id }}``), else a retry may adopt another run's job. ``reuse_earlier_job=False`` turns the
    lookup off (each try creates a job).

    :param photo: path (or bytes) of a jpg/jpeg/png photo to upload; exclusive with ``picture_url``.
    :param picture_url: http(s) URL of the photo; exclusive with ``photo``.
    :param style_id: e.g. ``system_male_001``.
    :param name: the model's name (templated); default: unique per task run, see above.
    :param notify_url: optional callback URL.
    :param wait_for_completion: wait until the job ends (default True).
    :param poll_interval: seconds between status reads (> 0).
    :param timeout: seconds to wait (> 0), None to wait forever; each try waits at most this long.
    :param reuse_earlier_job: on a retry, adopt the job an earlier try of this run created.
    :param cover_destination: file or object-store path/URI (``file:///data/covers/``, ``s3://...``)
        where the cover is copied before its signed URL expires; a trailing ``/`` means a folder.
    """

    template_fields: Sequence[str] = (
        "photo",
        "picture_url",
        "style_id",
        "name",
        "notify_url",
        "cover_destination",
        "metastudio_conn_id",
    )
    # Pushed when the job is created or adopted: _finish does not push them again.
    _pushed_before_wait = ("job_id", "model_asset_id", XCOM_CONSOLE_URL_KEY)

    def __init__(
        self,
        *,
        style_id: str,
        name: str | None = None,
        photo: Any = None,
        picture_url: str | None = None,
        notify_url: str | None = None,
        wait_for_completion: bool = True,
        reuse_earlier_job: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(wait_for_completion=wait_for_completion, **kwargs)
        if (photo is None) == (picture_url is None):
            raise MetaStudioValidationError("photo", "give exactly one of photo and picture_url")
        self.photo = photo
        self.picture_url = picture_url
        self.style_id = style_id
        self.name = name
        self.notify_url = notify_url
        self.reuse_earlier_job = reuse_earlier_job

    def execute(self, context: Any) -> dict[str, Any] | str:
        validate_wait_settings(self.poll_interval, self.timeout)
        name = self.name or default_job_name(context)
        started = time.time()
        earlier = self._earlier_job(context, name) if self.reuse_earlier_job and is_retry(context) else None
        if earlier is None and self.deferrable and self.picture_url is not None:
            self._defer_create(context, name, started)  # the triggerer creates at the tenant's pace
        if earlier is not None:
            job_id, asset_id = earlier.job_id, earlier.model_asset_id or ""
        else:
            created = self._create(name, self._deadline(started))
            job_id, asset_id = created.job_id, created.model_asset_id
        return self._created(context, job_id, asset_id, earlier, started)

    def execute_created(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any] | str:
        """Resume after the triggerer created (or adopted) the job: push its ids, then wait."""
        if is_stale_event(event, context):
            self.log.warning("Airflow resumed this try with an earlier try's event; starting the try over")
            return self.execute(context)
        if not event or event.get("status") != "created":
            resolve_event(event, MetaStudioWaitTimeout)  # raises: timeout, error, malformed
            raise MetaStudioError(f"Unexpected create event: {event!r:.200}")
        job_id, asset_id = str(event["job_id"]), str(event.get("model_asset_id") or "")
        # An adopted job may have ended already: read it (a fresh cover URL, the real state).
        earlier = self.hook.get_picture_modeling_job(job_id) if event.get("adopted_state") else None
        return self._created(context, job_id, asset_id, earlier, float(event["wait_started"]))

    def _defer_create(self, context: Any, name: str, started: float) -> None:
        create_by_url_call(  # bad input fails here, in the task, naming the field
            base_url(self.hook.config.endpoint, self.hook.config.project_id),
            picture_url=str(self.picture_url),
            style_id=self.style_id,
            name=name,
            notify_url=self.notify_url,
        )
        self.defer(
            trigger=MetaStudioCreatePictureModelingJobTrigger(
                picture_url=str(self.picture_url),
                style_id=self.style_id,
                name=name,
                created_since=(datetime.now(timezone.utc) - CLOCK_SKEW_MARGIN).isoformat(),
                end_time=self._deadline(started),
                metastudio_conn_id=self.metastudio_conn_id,
                notify_url=self.notify_url,
                accept_partial_success=self.accept_partial_success,
                wait_started=started,
                timeout=self.timeout,
                try_number=try_number_of(context),
            ),
            method_name="execute_created",
            timeout=defer_timeout(self.timeout),
        )

    def _deadline(self, started: float) -> float | None:
        """``time.time()`` by which this try must be done (its ``timeout``, its ``execution_timeout``):
        a throttled create keeps trying until then."""
        limits = [self.timeout] if self.timeout is not None else []
        if self.execution_timeout is not None:
            limits.append(self.execution_timeout.total_seconds())
        return started + min(limits) if limits else None

    def _created(
        self,
        context: Any,
        job_id: str,
        asset_id: str,
        earlier: PictureModelingJob | None,
        started: float,
    ) -> dict[str, Any] | str:
        """The job exists (created, or adopted by name): push its ids, then wait for it."""
        ti = context["ti"]
        ti.xcom_push(key="job_id", value=job_id)
        if asset_id:  # the contract promises it in the create answer; None is refused by Airflow 3.0
            ti.xcom_push(key="model_asset_id", value=asset_id)
        self._push_console_url(context, asset_id)
        if asset_id:  # lineage without waiting too (wait_for_completion=False); _finish adds the cover
            self._lineage_outputs = [model_dataset(self.hook.config.project_id, asset_id)]
        # Outlet assets learn the model at once (Airflow emits the event only if the task succeeds).
        emit_outlet_events(self, context, model_asset_id=asset_id or None, job_id=job_id)
        if not self.wait_for_completion:
            return job_id
        if earlier is None:
            return self._wait(context, job_id, wait_started=started)
        if earlier.is_terminal:  # it succeeded: the list answer carries the model and a signed cover URL
            return self._end(context, earlier)
        return self._wait(
            context, job_id, wait_started=started, last_state=earlier.state, last_seen=time.time()
        )

    def _lineage_inputs(self) -> list[tuple[str, str]]:
        # The URL without its query (no signature), or the uploaded file; bytes or a file object
        # have no name.
        if self.picture_url is not None:
            return [path_dataset(self.picture_url)]
        if isinstance(self.photo, (str, os.PathLike)):
            return [path_dataset(os.fspath(self.photo))]
        return []

    def _create(self, name: str, deadline: float | None) -> Any:
        if self.picture_url is not None:
            return self.hook.create_picture_modeling_job_by_url(
                picture_url=self.picture_url,
                style_id=self.style_id,
                name=name,
                notify_url=self.notify_url,
                deadline=deadline,
            )
        return self.hook.create_picture_modeling_job(
            photo=self.photo, style_id=self.style_id, name=name, notify_url=self.notify_url, deadline=deadline
        )

    def _earlier_job(self, context: Any, name: str) -> PictureModelingJob | None:
        """The job an earlier try of this task run created and that is still worth waiting for."""
        states = [JobState.WAITING, JobState.PROCESSING, JobState.SUCCEED]
        if self.accept_partial_success:
            states.append(JobState.PARTIAL_SUCCEED)
        since = run_started(context)
        jobs = self.hook.find_picture_modeling_jobs(
            name=name,
            style_id=self.style_id,
            created_since=None if since is None else since - CLOCK_SKEW_MARGIN,
            states=states,
        )
        job = next(iter(jobs), None)
        if job is None:
            self.log.info(
                "Retry %s: no running or successful job named %r from an earlier try; creating one",
                context["ti"].try_number,
                name,
            )
            return None
        self.log.info(
            "Adopting picture modeling job %s (%s, model_asset_id=%s), created by an earlier try of this "
            "task run, instead of creating another",
            job.job_id,
            job.state,
            job.model_asset_id,
        )
        return job


#: How far before the DAG run's start the retry lookup searches: the service's clock and the
#: scheduler's may disagree. The name is unique per run, so a wider window finds nothing wrong.
CLOCK_SKEW_MARGIN = timedelta(minutes=5)


def default_job_name(context: Any) -> str:
    """A model name unique per task run: ``<dag_id>.<task_id>.<run_id>[.<map_index>]``.

    Longer than the service's 256 characters, it keeps the start and ends with a hash of the whole.
    """
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    name = f"{ti.dag_id}.{ti.task_id}.{ti.run_id}"
    if isinstance(map_index, int) and map_index >= 0:
        name += f".{map_index}"
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name[: MAX_NAME_LENGTH - len(digest) - 1]}~{digest}"
    return name


def is_retry(context: Any) -> bool:
    """Whether this try follows a failed try of the same task run.

    ``try_number`` counts every try of a task instance, across clears; a clear raises ``max_tries``
    to ``try_number + retries``, so the first try of the current series is ``max_tries - retries + 1``
    (Airflow's sensors compute it the same way). A cleared task therefore creates a new job.
    """
    ti = context["ti"]
    try_number = getattr(ti, "try_number", None)
    if not isinstance(try_number, int):
        return False
    max_tries = getattr(ti, "max_tries", None)
    retries = getattr(getattr(ti, "task", None), "retries", None)
    first = 1
    if isinstance(max_tries, int) and isinstance(retries, int):
        first = max(1, max_tries - retries + 1)
    return try_number > first


def run_started(context: Any) -> datetime | None:
    """When the DAG run started (its start date; the time it was queued if it has none)."""
    dag_run = context.get("dag_run")
    for attr in ("start_date", "queued_at"):
        value = getattr(dag_run, attr, None)
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value
    return None
