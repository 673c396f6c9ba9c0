"""MetaStudioHook: the public API of Huawei Cloud MetaStudio stylized picture modeling for Airflow.

The hook looks the connection up (masking its secrets), describes the UI's connection form, and
offers the typed methods tasks and triggers call. The layers below it have rooms of their own:

* ``api/``: each call built from the tenant's base URL (``calls.py``) and each answer parsed into
  typed results or errors (``answers.py``);
* ``transport.py``: the one sync path (``requests``) and the one async path (``httpx``), with
  retries, the client-side quota, proxies and the size cap;
* ``auth.py``: AK/SK signing and token authentication (static or IAM password flow).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from datetime import datetime
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_metastudio._compat import BaseHook, aget_connection, amask_secret, mask_secret
from airflow_provider_metastudio.api import (
    MAX_PAGE_SIZE,
    ApiResponse,
    CreatedJob,
    JobPage,
    base_url,
    create_by_url_call,
    create_call,
    iterate_pages,
    list_call,
    parse_created,
    parse_page,
    parse_show,
    show_call,
)
from airflow_provider_metastudio.auth import AkSkSigner, utc_now
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import (
    MetaStudioError,
    MetaStudioWaitTimeout,
)
from airflow_provider_metastudio.hooks._assets import DigitalAssetCalls
from airflow_provider_metastudio.models import PictureModelingJob, cover_url_expiry
from airflow_provider_metastudio.progress import JobProgress, wait_timeout_message
from airflow_provider_metastudio.transport import (
    RetryPolicy,
    Transport,
    port,
    signed_url_call,
)
from airflow_provider_metastudio.validation import validate_text, validate_wait_settings

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

# test_connection(): (connect, read) seconds, and the bound of the whole test.
TEST_TIMEOUT = (3.0, 4.0)
TEST_BUDGET = 5.0


class MetaStudioHook(DigitalAssetCalls, BaseHook):
    """Interact with Huawei Cloud MetaStudio stylized picture modeling.

    :param metastudio_conn_id: the ``metastudio`` connection (AK/SK, token or IAM password).
    :param retry_limit: how many times a retryable failure other than 429 is retried.
    :param throttle_retry_limit: how many times a 429 is retried. Separate and larger than
        ``retry_limit``: processes that do not share a rate limiter (workers, several triggerers)
        collide on the tenant's quota, and each must keep its turn in the queue rather than fail.
    :param retry_delay: base of the exponential backoff, in seconds.
    :param retry_max_delay: cap of one backoff, in seconds.
    :param config: settings to use instead of looking a connection up (emulator, benchmarks).
    :param clock: UTC clock for signatures and token expiry; injectable for tests.
    :param retry_log_level: level of the line logged before each retry (the shared poller logs an
        outage once itself and passes ``logging.DEBUG``).
    """

    conn_name_attr = "metastudio_conn_id"
    default_conn_name = "metastudio_default"
    conn_type = "metastudio"
    hook_name = "Huawei Cloud MetaStudio"

    def __init__(
        self,
        metastudio_conn_id: str = default_conn_name,
        *,
        retry_limit: int = 5,
        throttle_retry_limit: int = 12,
        retry_delay: float = 1.0,
        retry_max_delay: float = 60.0,
        config: MetaStudioConnectionConfig | None = None,
        clock: Callable[[], datetime] = utc_now,
        retry_log_level: int = logging.WARNING,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.retry_log_level = retry_log_level
        self.metastudio_conn_id = metastudio_conn_id
        self.retry_limit = retry_limit
        self.throttle_retry_limit = throttle_retry_limit
        self.retry_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.clock = clock
        if config is not None:
            self._set_config(config)

    # -- connection ---------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_metastudio.get_provider_info import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form (Airflow 2.x and 3.0/3.1 UIs; 3.2+ reads ``conn-fields``)."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import PasswordField, StringField

        from airflow_provider_metastudio.get_provider_info import CONN_FIELDS

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            secret = spec["schema"].get("format") == "password"
            field_cls = PasswordField if secret else StringField
            widget = BS3PasswordFieldWidget() if secret else BS3TextFieldWidget()
            widgets[name] = field_cls(
                lazy_gettext(spec["label"]),
                widget=widget,
                description=spec["description"],
                default=spec["schema"].get("default"),
            )
        return widgets

    def _set_config(self, config: MetaStudioConnectionConfig) -> None:
        for secret in config.secrets:
            mask_secret(secret)
        self.__dict__["config"] = config

    async def _aset_config(self, config: MetaStudioConnectionConfig) -> None:
        for secret in config.secrets:
            await amask_secret(secret)
        self.__dict__["config"] = config

    @cached_property
    def config(self) -> MetaStudioConnectionConfig:
        """The connection, looked up once per hook and validated."""
        conn = self.get_connection(self.metastudio_conn_id)
        if conn.password:  # mask before anything can fail and print it
            mask_secret(conn.password)
        config = MetaStudioConnectionConfig.from_connection(conn)
        self._set_config(config)
        return config

    async def aget_config(self) -> MetaStudioConnectionConfig:
        """The connection, looked up without blocking the event loop (for triggers)."""
        if "config" not in self.__dict__:
            conn = await aget_connection(self.metastudio_conn_id)
            if conn.password:
                await amask_secret(conn.password)
            await self._aset_config(MetaStudioConnectionConfig.from_connection(conn))
        return self.config

    @property
    def signer(self) -> AkSkSigner | None:
        """The AK/SK signer of the connection (None for token and password authentication)."""
        return self.transport.signer

    @cached_property
    def transport(self) -> Transport:
        """Sends this hook's calls; made on first use, from the connection and the retry settings."""
        retry = RetryPolicy(
            self.retry_limit,
            self.throttle_retry_limit,
            self.retry_delay,
            self.retry_max_delay,
            self.retry_log_level,
        )
        return Transport(self.config, retry=retry, clock=self.clock)

    async def _atransport(self) -> Transport:
        await self.aget_config()  # the connection is looked up without blocking the event loop
        return self.transport

    @property
    def _base(self) -> str:
        return base_url(self.config.endpoint, self.config.project_id)

    def get_conn(self) -> requests.Session:
        """The hook's keep-alive session (one per hook; connections are reused across calls)."""
        return self.transport.session()

    async def aclose(self) -> None:
        """Close the async clients (triggers call this when they finish)."""
        if "transport" in self.__dict__:
            await self.transport.aclose()

    def close(self) -> None:
        if "transport" in self.__dict__:
            self.transport.close()

    # -- picture-modeling jobs ----------------------------------------------------------------------

    def get_picture_modeling_job(self, job_id: str) -> PictureModelingJob:
        """Return a job's details (``GET .../picture-modelings/{job_id}``), with the answer's
        ``X-Request-Id`` as its ``request_id``.

        :param job_id: the job id returned by a create call.
        """
        return parse_show(self.transport.request(show_call(self._base, job_id)), job_id)

    async def aget_picture_modeling_job(self, job_id: str) -> PictureModelingJob:
        """Async twin of :meth:`get_picture_modeling_job` for triggers."""
        transport = await self._atransport()
        return parse_show(await transport.arequest(show_call(self._base, job_id)), job_id)

    def list_picture_modeling_jobs_page(
        self, *, offset: int = 0, limit: int = MAX_PAGE_SIZE, **filters: Any
    ) -> JobPage:
        """One page of the list call: count of all matches, the jobs on this page, request id.

        :param filters: ``states``, ``sort_key``, ``sort_dir``, ``create_since``, ``create_until``.
        """
        call = list_call(self._base, offset=offset, limit=limit, **filters)
        return parse_page(self.transport.request(call), offset, limit)

    async def alist_picture_modeling_jobs_page(
        self, *, offset: int = 0, limit: int = MAX_PAGE_SIZE, **filters: Any
    ) -> JobPage:
        """Async twin of :meth:`list_picture_modeling_jobs_page` (the shared poller's list call)."""
        transport = await self._atransport()
        call = list_call(self._base, offset=offset, limit=limit, **filters)
        return parse_page(await transport.arequest(call), offset, limit)

    def list_picture_modeling_jobs(
        self,
        *,
        states: Any = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        create_since: datetime | str | None = None,
        create_until: datetime | str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[PictureModelingJob]:
        """Yield every job matching the filters, following offset paging to the end.

        :param states: one state or several (``JobState`` or strings).
        :param sort_key: ``create_time``, ``update_time`` or ``asset_order``.
        :param sort_dir: ``asc`` or ``desc``.
        :param create_since: only jobs created at or after this time (RFC 3339 string or aware datetime).
        :param create_until: only jobs created at or before this time.
        :param page_size: jobs per request, 1-100.
        """
        filters = dict(
            states=states,
            sort_key=sort_key,
            sort_dir=sort_dir,
            create_since=create_since,
            create_until=create_until,
        )
        list_call(self._base, offset=0, limit=page_size, **filters)  # validate before the first request
        yield from iterate_pages(
            lambda offset: self.list_picture_modeling_jobs_page(offset=offset, limit=page_size, **filters)
        )

    def find_picture_modeling_jobs(
        self,
        *,
        name: str,
        style_id: str | None = None,
        created_since: datetime | str | None,
        states: Any = None,
    ) -> Iterator[PictureModelingJob]:
        """Yield the jobs named ``name`` (and of ``style_id``) created at or after ``created_since``,
        newest first.

        The list call filters by time and state but not by name, so the name is matched here, page
        by page; the iterator can be left after the first match.

        :param name: the exact model name.
        :param style_id: the exact style id; None matches any.
        :param created_since: lower bound of the creation time (aware datetime or RFC 3339); the
            service compares whole seconds.
        :param states: only jobs in these states (as :meth:`list_picture_modeling_jobs`).
        """
        validate_text(name, "name")
        jobs = self.list_picture_modeling_jobs(
            states=states, sort_key="create_time", sort_dir="desc", create_since=created_since
        )
        for job in jobs:
            if job.name == name and (style_id is None or job.style_id == style_id):
                yield job

    def create_picture_modeling_job(
        self,
        *,
        photo: str | os.PathLike[str] | bytes | IO[bytes],
        style_id: str,
        name: str,
        notify_url: str | None = None,
        deadline: float | None = None,
    ) -> CreatedJob:
        """Create a job from a photo upload (multipart ``POST .../picture-modelings``).

        :param photo: a path, the bytes, or a binary file object of a jpg/jpeg/png photo.
        :param style_id: e.g. ``system_male_001``.
        :param name: the model's name.
        :param notify_url: optional callback URL for the service.
        :param deadline: ``time.time()`` until which a throttled (429) create keeps trying; None:
            ``throttle_retry_limit`` tries.
        """
        call = create_call(self._base, photo=photo, style_id=style_id, name=name, notify_url=notify_url)
        return self._created(self.transport.request(call, deadline))

    def create_picture_modeling_job_by_url(
        self,
        *,
        picture_url: str,
        style_id: str,
        name: str,
        notify_url: str | None = None,
        deadline: float | None = None,
    ) -> CreatedJob:
        """Create a job from a photo URL (``POST .../picture-modelings-by-url``).

        :param picture_url: http(s) URL of a jpg/jpeg/png photo the service can download.
        :param style_id: e.g. ``system_male_001``.
        :param name: the model's name.
        :param notify_url: optional callback URL for the service.
        :param deadline: as for :meth:`create_picture_modeling_job`.
        """
        call = create_by_url_call(
            self._base, picture_url=picture_url, style_id=style_id, name=name, notify_url=notify_url
        )
        return self._created(self.transport.request(call, deadline))

    async def acreate_picture_modeling_job_by_url(
        self,
        *,
        picture_url: str,
        style_id: str,
        name: str,
        notify_url: str | None = None,
        deadline: float | None = None,
    ) -> CreatedJob:
        """Async twin of :meth:`create_picture_modeling_job_by_url` (the tenant's create queue)."""
        transport = await self._atransport()
        call = create_by_url_call(
            self._base, picture_url=picture_url, style_id=style_id, name=name, notify_url=notify_url
        )
        return self._created(await transport.arequest(call, deadline))

    def _created(self, resp: ApiResponse) -> CreatedJob:
        created = parse_created(resp)
        log.info(
            "Created picture modeling job %s (model_asset_id=%s, X-Request-Id: %s)",
            created.job_id,
            created.model_asset_id or None,
            resp.request_id,
        )
        return created

    def wait_for_picture_modeling_job(
        self,
        job_id: str,
        *,
        poll_interval: float = 30.0,
        timeout: float | None = 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> PictureModelingJob:
        """Block until the job reaches a terminal state and return it (whatever that state is).

        The wait never gives up early: it sleeps at most until the deadline and reads the job once
        more there, so a job that ended in the last interval is reported as it ended.

        :param poll_interval: seconds between polls (> 0).
        :param timeout: seconds before :class:`MetaStudioWaitTimeout` (> 0); None waits forever.
        :raises MetaStudioWaitTimeout: only when the job is still running at the deadline.
        """
        call = show_call(self._base, job_id)  # the job id is checked before anything else
        validate_wait_settings(poll_interval, timeout)
        progress = JobProgress(job_id, log, clock=monotonic)
        deadline = None if timeout is None else progress.started + timeout
        while True:
            job = parse_show(self.transport.request(call), job_id)
            seen = monotonic()
            progress.observe(job)
            if job.is_terminal:
                return job
            if deadline is None:
                sleep(poll_interval)
                continue
            left = deadline - monotonic()
            if left <= 0:  # this was the read at (or after) the deadline
                raise MetaStudioWaitTimeout(
                    wait_timeout_message(job_id, job.state, progress.elapsed(), timeout, monotonic() - seen),
                    call="show",
                )
            sleep(min(poll_interval, left))

    def download_cover(self, cover_url: str, out: IO[bytes]) -> int:
        """Stream a job's pre-signed cover picture into ``out``; return the number of bytes.

        The URL is a bearer credential that expires (its ``Expires``); it is never logged whole.

        :param cover_url: the job's ``model_cover_url``.
        :param out: a binary file object (a local file or an ``ObjectStoragePath`` opened ``wb``).
        """
        call = signed_url_call("cover", cover_url, "model_cover_url")
        refused = (
            f"the cover URL is refused; it expires at {cover_url_expiry(call.url)}, copy covers "
            "soon after the job ends"
        )
        return self.transport.download(call, out, refused).size

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call (list, one job), answered within :data:`TEST_BUDGET` seconds:
        the UI's Test button must not hang on a wrong endpoint, so no retries and short timeouts.
        Never raises."""
        try:
            cfg = self.config
            connect, read = TEST_TIMEOUT
            probe = Transport(
                dataclasses.replace(cfg, timeout=(min(cfg.timeout[0], connect), min(cfg.timeout[1], read))),
                retry=RetryPolicy(retry_limit=0, throttle_retry_limit=0),
                clock=self.clock,
            )
            call = list_call(self._base, offset=0, limit=1)

            # A thread bounds the whole test, not each socket operation: the password flow makes two
            # calls, and a server may trickle bytes. A late call ends on its own timeouts, unwatched.
            def list_one() -> JobPage:
                try:
                    return parse_page(probe.request(call), 0, 1)
                finally:
                    probe.close()

            pool = ThreadPoolExecutor(1, thread_name_prefix="metastudio-test")
            try:
                total = pool.submit(list_one).result(timeout=TEST_BUDGET).total
            finally:
                pool.shutdown(wait=False)
        except FuturesTimeout:
            parts = urlsplit(self.config.endpoint)
            return False, (
                f"MetaStudio test timed out: no answer from {parts.hostname}:{port(parts)} "
                f"within {TEST_BUDGET:g} s"
            )
        except MetaStudioError as e:
            return False, str(e)
        except Exception as e:  # the UI shows the message; no secret is part of it
            return False, f"{type(e).__name__}: {e}"
        return (
            True,
            f"Connection successfully tested: project {self.config.project_id}, {total} modeling jobs",
        )
