"""Operators that create picture-modeling jobs or read one, and hand the model on through XCom."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow_provider_metastudio._compat import BaseOperator, conf, object_storage_path
from airflow_provider_metastudio.exceptions import (
    MetaStudioJobFailedError,
    MetaStudioValidationError,
    MetaStudioWaitTimeout,
)
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.links.picture_modeling import (
    XCOM_CONSOLE_URL_KEY,
    MetaStudioPictureModelingJobLink,
    console_url,
)
from airflow_provider_metastudio.models import PictureModelingJob, redact_url
from airflow_provider_metastudio.triggers.picture_modeling import (
    MetaStudioPictureModelingJobTrigger,
    resolve_event,
)
from airflow_provider_metastudio.validation import validate_job_id

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
        timeout: float = 3600.0,
        accept_partial_success: bool = True,
        cover_destination: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        if model_asset_id:
            context["ti"].xcom_push(
                key=XCOM_CONSOLE_URL_KEY, value=console_url(self.hook.config.region, model_asset_id)
            )

    def _wait(self, context: Any, job_id: str) -> dict[str, Any]:
        """Wait for the job (blocking or deferred) and finish; returns the job dict."""
        if self.deferrable:
            self.defer(
                trigger=MetaStudioPictureModelingJobTrigger(
                    job_id=job_id,
                    end_time=time.time() + self.timeout,
                    metastudio_conn_id=self.metastudio_conn_id,
                    poll_interval=self.poll_interval,
                    accept_partial_success=self.accept_partial_success,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout),
            )
        job = self.hook.wait_for_picture_modeling_job(
            job_id, poll_interval=self.poll_interval, timeout=self.timeout
        )
        if not job.is_success(self.accept_partial_success):
            raise MetaStudioJobFailedError(job.job_id, job.state, job.error_code, job.error_msg)
        return self._finish(context, job)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        # The event's cover URL is redacted: read the finished job once more for a usable one.
        job_id = resolve_event(event, MetaStudioWaitTimeout)["job_id"]
        return self._finish(context, self.hook.get_picture_modeling_job(job_id))

    def _finish(self, context: Any, job: PictureModelingJob) -> dict[str, Any]:
        ti = context["ti"]
        result = job.to_dict()
        for key in RESULT_KEYS:
            # Airflow 3.0's execution API refuses an XCom whose value is None; an absent key
            # reads back as None all the same (PARTIAL_SUCCEED has no cover URL).
            if result[key] is not None:
                ti.xcom_push(key=key, value=result[key])
        self._push_console_url(context, job.model_asset_id)
        if self.cover_destination:
            result["model_cover_path"] = self._copy_cover(job)
            if result["model_cover_path"] is not None:
                ti.xcom_push(key="model_cover_path", value=result["model_cover_path"])
        self.log.info(
            "Picture modeling job %s %s: model_asset_id=%s cover=%s",
            job.job_id,
            job.state,
            job.model_asset_id,
            redact_url(job.model_cover_url),
        )
        return result

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

    template_fields: Sequence[str] = ("job_id", "cover_destination")

    def __init__(self, *, job_id: str, wait_for_completion: bool = False, **kwargs: Any) -> None:
        super().__init__(wait_for_completion=wait_for_completion, **kwargs)
        self.job_id = job_id

    def execute(self, context: Any) -> dict[str, Any]:
        job_id = validate_job_id(self.job_id)
        job, request_id = self.hook.get_picture_modeling_job_with_request_id(job_id)
        self.log.info("Picture modeling job %s is %s (X-Request-Id: %s)", job_id, job.state, request_id)
        if self.wait_for_completion and not job.is_terminal:
            return self._wait(context, job_id)
        if self.wait_for_completion and not job.is_success(self.accept_partial_success):
            raise MetaStudioJobFailedError(job.job_id, job.state, job.error_code, job.error_msg)
        return self._finish(context, job)


class MetaStudioCreatePictureModelingJobOperator(_PictureModelingJobOperator):
    """Create a picture-modeling job from a photo or a photo URL, wait for it, and push the model.

    ``job_id`` and ``model_asset_id`` are pushed to XCom as soon as the job exists; when it is done
    the same keys as :class:`MetaStudioGetPictureModelingJobOperator` follow, plus
    ``model_cover_path`` when ``cover_destination`` is set.

    :param photo: path (or bytes) of a jpg/jpeg/png photo to upload; exclusive with ``picture_url``.
    :param picture_url: http(s) URL of the photo; exclusive with ``photo``.
    :param style_id: e.g. ``system_male_001``.
    :param name: the model's name.
    :param notify_url: optional callback URL.
    :param wait_for_completion: wait until the job ends (default True).
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
    )

    def __init__(
        self,
        *,
        style_id: str,
        name: str,
        photo: Any = None,
        picture_url: str | None = None,
        notify_url: str | None = None,
        wait_for_completion: bool = True,
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

    def execute(self, context: Any) -> dict[str, Any] | str:
        if self.picture_url is not None:
            created = self.hook.create_picture_modeling_job_by_url(
                picture_url=self.picture_url,
                style_id=self.style_id,
                name=self.name,
                notify_url=self.notify_url,
            )
        else:
            created = self.hook.create_picture_modeling_job(
                photo=self.photo, style_id=self.style_id, name=self.name, notify_url=self.notify_url
            )
        ti = context["ti"]
        ti.xcom_push(key="job_id", value=created.job_id)
        ti.xcom_push(key="model_asset_id", value=created.model_asset_id)
        self._push_console_url(context, created.model_asset_id)
        if not self.wait_for_completion:
            return created.job_id
        return self._wait(context, created.job_id)
