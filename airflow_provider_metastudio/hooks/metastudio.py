"""MetaStudioHook: authenticated calls to Huawei Cloud MetaStudio stylized picture modeling.

Every call is first described as an :class:`ApiCall` (validated, URL built, body encoded), then sent
by exactly one of two transports - ``requests`` for sync code, ``httpx`` for triggers - which share
the signer, the retry policy, the client-side quota and :func:`parse_response`.

``requests`` is imported on first use of the sync transport only: it is most of this module's import
cost, and the triggerer and DAG parsing never need it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import ipaddress
import json
import logging
import os
import random
import re
import ssl
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, NamedTuple
from urllib.parse import SplitResult, urlsplit

import httpx
import tenacity

from airflow_provider_metastudio import __version__, logfilter
from airflow_provider_metastudio._compat import BaseHook, aget_connection, amask_secret, mask_secret
from airflow_provider_metastudio.assets import (
    ASSET_SORT_KEYS,
    ASSET_SOURCES,
    ASSET_TYPES,
    AssetFile,
    AssetState,
    DigitalAsset,
)
from airflow_provider_metastudio.auth import (
    AkSkSigner,
    HttpxAkSkAuth,
    RequestsAkSkAuth,
    canonical_query,
    utc_now,
)
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import (
    MetaStudioApiError,
    MetaStudioAuthError,
    MetaStudioBadRequestError,
    MetaStudioChecksumError,
    MetaStudioConnectionError,
    MetaStudioError,
    MetaStudioGatewayError,
    MetaStudioInvalidResponseError,
    MetaStudioNotFoundError,
    MetaStudioServerError,
    MetaStudioThrottledError,
    MetaStudioValidationError,
    MetaStudioWaitTimeout,
    describe,
)
from airflow_provider_metastudio.models import JobState, PictureModelingJob, cover_url_expiry, parse_time
from airflow_provider_metastudio.progress import JobProgress, wait_timeout_message
from airflow_provider_metastudio.ratelimit import RateLimiter, get_limiter
from airflow_provider_metastudio.validation import (
    validate_asset_id,
    validate_http_url,
    validate_job_id,
    validate_photo,
    validate_text,
    validate_wait_settings,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)
logfilter.install()  # the HTTP libraries this module drives log request URLs, signed ones too

API_PREFIX = "/v1/{project_id}/digital-human/stylized"
ASSET_PREFIX_ROOT = "/v1/{project_id}"  # the asset library (issue #14): .../digital-assets[/{id}]
SORT_KEYS = ("create_time", "update_time", "asset_order")
SORT_DIRS = ("asc", "desc")
MAX_PAGE_SIZE = 100
# Bodies are read up to this size: a job or a page of 100 jobs is a few kB; anything far larger is
# a broken gateway, not data, and must not be loaded into a worker's memory.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
USER_AGENT = f"airflow-provider-metastudio/{__version__}"
# test_connection(): (connect, read) seconds, and the bound of the whole test.
TEST_TIMEOUT = (3.0, 4.0)
TEST_BUDGET = 5.0


class JobPage(NamedTuple):
    """One page of the list call."""

    total: int  # all jobs matching the filters, not just this page
    jobs: list[PictureModelingJob]
    request_id: str | None


class AssetPage(NamedTuple):
    """One page of the asset list call."""

    total: int  # all assets matching the filters, not just this page
    assets: list[DigitalAsset]
    request_id: str | None


class Downloaded(NamedTuple):
    """What a streamed download wrote."""

    size: int
    md5: str  # base64 of the 16-byte MD5 digest, the form the asset library lists


class CreatedJob(NamedTuple):
    """What a create call returns: the model asset id is known at once."""

    job_id: str
    model_asset_id: str


@dataclass(frozen=True)
class ApiCall:
    """One request, fully built and validated, independent of the transport that sends it.

    :param name: quota and log name of the call (``show``, ``list``, ``create``, ``create_by_url``, ``iam``).
    :param idempotent: whether a retry after an ambiguous failure is harmless; a create is not.
    """

    name: str
    method: str
    url: str
    body: bytes | None = field(default=None, repr=False)  # the IAM call's body holds the password
    content_type: str | None = None
    idempotent: bool = True
    authenticated: bool = True


@dataclass(frozen=True)
class ApiResponse:
    status: int
    data: Any
    request_id: str | None
    headers: Mapping[str, str] = field(repr=False)


# The key pairs the official SDK reads, in its order (huaweicloudsdkcore DefaultExceptionHandler).
_ERROR_KEYS = (("error_code", "error_msg"), ("errorCode", "errorMsg"), ("code", "message"))


def _error_fields(data: Any) -> tuple[str | None, str | None]:
    """``(error_code, error_msg)`` of an error body, read like the official SDK: the first pair that
    is complete, else the first with either half, else the same inside a nested object (IAM's
    ``{"error": {"code", "message"}}``)."""
    if not isinstance(data, dict):
        return None, None
    pairs = [(data.get(code), data.get(msg)) for code, msg in _ERROR_KEYS]
    found = next((p for p in pairs if None not in p), None) or next(
        (p for p in pairs if p != (None, None)), None
    )
    if found is None:
        found = next(
            (f for f in map(_error_fields, data.values()) if f != (None, None)),
            (None, None),
        )
    code, msg = found
    # Some gateways send a numeric code; errors carry text.
    return (None if code is None else str(code)), (None if msg is None else str(msg))


def _invalid(
    call: str, status: int | None, request_id: str | None, problem: str
) -> MetaStudioInvalidResponseError:
    """An answer that breaks the contract, described like every other error (status, request id)."""
    return MetaStudioInvalidResponseError(
        describe(call, status, None, problem, request_id), status=status, request_id=request_id, call=call
    )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:  # delta-seconds; the emulator's time-scaled mode sends fractions
        return max(0.0, float(value))
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            return None


def parse_response(call: str, status: int, headers: Mapping[str, str], body: bytes) -> ApiResponse:
    """Turn a raw answer into data or a typed :class:`MetaStudioError`. Shared by both transports."""
    request_id = headers.get("X-Request-Id") or headers.get("x-request-id")
    content_type = headers.get("Content-Type", "")
    data: Any = None
    json_ok = False
    if body:
        try:
            data = json.loads(body)
            json_ok = True
        except (ValueError, UnicodeDecodeError):
            pass
    if 200 <= status < 300:
        if call == "iam" and json_ok:
            return ApiResponse(status, data, request_id, headers)
        if not json_ok:
            what = (
                "an empty body"
                if not body
                else f"a non-JSON body ({content_type or 'no content type'}, {len(body)} bytes)"
            )
            raise _invalid(call, status, request_id, f"the service answered with {what}")
        return ApiResponse(status, data, request_id, headers)
    error_code, error_msg = _error_fields(data)
    if error_code is None and error_msg is None:
        what = "JSON error body without a code or message" if json_ok else "non-JSON error body"
        error_msg = f"{what} ({content_type or 'no content type'}, {len(body)} bytes)"
    hint = None
    if status in (401, 403) and error_code == "APIGW.0301":
        hint = (
            "check the AK/SK (or token) and the project id, and that this machine's clock is within "
            "15 minutes of the real time (signatures expire)"
        )
    message = describe(call, status, error_code, error_msg, request_id, hint)
    kwargs: dict[str, Any] = {
        "status": status,
        "error_code": error_code,
        "error_msg": error_msg,
        "request_id": request_id,
        "call": call,
    }
    if status == 429:
        raise MetaStudioThrottledError(message, retry_after=_retry_after(headers), **kwargs)
    if status in (401, 403):
        raise MetaStudioAuthError(message, **kwargs)
    if status == 404:
        raise MetaStudioNotFoundError(message, **kwargs)
    if status >= 500:
        raise (MetaStudioServerError if json_ok else MetaStudioGatewayError)(message, **kwargs)
    if 400 <= status < 500:
        raise MetaStudioBadRequestError(message, **kwargs)
    raise MetaStudioApiError(message, **kwargs)


def _transport_error(call: ApiCall, exc: Exception) -> MetaStudioConnectionError:
    """Map a transport exception; ``sent`` is False only when the service provably never saw the request."""
    import requests  # already loaded: only the sync transport raises its exceptions

    not_sent: tuple[type[BaseException], ...] = (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        requests.exceptions.ConnectTimeout,
    )
    sent = not isinstance(exc, not_sent)
    if isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(
        exc, requests.exceptions.ReadTimeout
    ):
        # urllib3 wraps "connection refused" / DNS failures in NewConnectionError.
        import urllib3.exceptions

        reason = exc.args[0] if exc.args else None
        inner = getattr(reason, "reason", reason)
        if isinstance(inner, urllib3.exceptions.NewConnectionError) or isinstance(
            reason, urllib3.exceptions.NewConnectionError
        ):
            sent = False
    parts = urlsplit(call.url)
    where = f"{parts.hostname}:{_port(parts)}"
    if isinstance(exc, (httpx.ConnectTimeout, requests.exceptions.ConnectTimeout)):
        what = f"timed out connecting to {where}"
    elif isinstance(exc, (httpx.ReadTimeout, requests.exceptions.ReadTimeout)):
        what = f"timed out waiting for the answer after the request was sent to {where}"
    elif not sent:
        what = f"could not connect to {where}"
    else:
        what = f"connection failed after the request was sent to {where}"
    return MetaStudioConnectionError(
        f"MetaStudio {call.name} failed: {what} ({type(exc).__name__})", sent=sent, call=call.name
    )


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _is_retryable(call: ApiCall, exc: BaseException) -> bool:
    """Reads retry on 429, 5xx, broken bodies and connection errors. A create is retried only
    when the service provably did not take it (429, or a connection that never opened): a
    duplicate picture-modeling job costs the user money."""
    if isinstance(exc, MetaStudioThrottledError):
        return True
    if isinstance(exc, MetaStudioConnectionError):
        return call.idempotent or not exc.sent
    if not call.idempotent:
        return False
    return isinstance(exc, (MetaStudioServerError, MetaStudioInvalidResponseError))


class _Route(NamedTuple):
    """How a URL is reached: through which proxy (None: directly) and with which TLS verification."""

    proxy: str | None
    verify: bool | str


def _environment_proxy(parts: SplitResult) -> str | None:
    """The ``HTTP(S)_PROXY``/``ALL_PROXY`` variable for this scheme, unless ``NO_PROXY`` names the
    host (a domain suffix, ``host:port``, ``*``, or an IP network such as ``10.0.0.0/8``)."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    no_proxy = proxies.get("no", "")
    host = parts.hostname or ""
    # The matcher urllib.request.getproxies() users rely on; undocumented, hence not in typeshed.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(parts.netloc.rpartition("@")[2], proxies):
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return proxy
    for entry in (e.strip() for e in no_proxy.split(",")):
        try:
            if "/" in entry and address in ipaddress.ip_network(entry, strict=False):
                return None
        except ValueError:
            continue
    return proxy


# Tokens from the IAM password flow, per credentials, shared by all hooks of the process.
_TOKEN_CACHE: dict[str, tuple[str, datetime, datetime]] = {}
_TOKEN_LOCK = threading.Lock()


class MetaStudioHook(BaseHook):
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
        self._aclients: dict[_Route, httpx.AsyncClient] = {}
        self._aclient_loop: asyncio.AbstractEventLoop | None = None

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

    def adopt_config(self, config: MetaStudioConnectionConfig) -> None:
        """Use a config another hook of this process already looked up (and so already masked)."""
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

    @cached_property
    def signer(self) -> AkSkSigner | None:
        cfg = self.config
        if cfg.auth_type != "aksk":
            return None
        assert cfg.ak and cfg.sk
        return AkSkSigner(
            cfg.ak, cfg.sk, project_id=cfg.project_id, security_token=cfg.security_token, clock=self.clock
        )

    def get_conn(self) -> requests.Session:
        """The hook's keep-alive session (one per hook; connections are reused across calls)."""
        if "_session" not in self.__dict__:
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.verify = self.config.verify
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self.__dict__["_session"] = session
        return self.__dict__["_session"]

    def _async_client(self, url: str) -> httpx.AsyncClient:
        """The keep-alive client for ``url``'s route (proxy and TLS settings): one per route, as a
        client's proxy is fixed when it is built; most hooks have one route."""
        # An AsyncClient belongs to the event loop that created it; dag.test() runs every trigger in
        # its own asyncio.run(), so clients from a previous loop are replaced, not reused.
        loop = asyncio.get_running_loop()
        if self._aclient_loop is not loop:
            self._aclients, self._aclient_loop = {}, loop
        route = self._route(url)
        client = self._aclients.get(route)
        if client is None or client.is_closed:
            cfg = self.config
            verify: bool | ssl.SSLContext = (
                route.verify
                if isinstance(route.verify, bool)
                else ssl.create_default_context(cafile=route.verify)
            )
            # trust_env=False: the route already applied the environment, with the connection's
            # verify and proxy first; httpx's own reading would let SSL_CERT_FILE override them.
            client = self._aclients[route] = httpx.AsyncClient(
                headers={"User-Agent": USER_AGENT},
                verify=verify,
                proxy=route.proxy,
                timeout=httpx.Timeout(cfg.timeout[1], connect=cfg.timeout[0]),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                trust_env=False,
            )
        return client

    async def aclose(self) -> None:
        """Close the async clients (triggers call this when they finish)."""
        clients, self._aclients = list(self._aclients.values()), {}
        for client in clients:
            await client.aclose()

    def close(self) -> None:
        session = self.__dict__.pop("_session", None)
        if session is not None:
            session.close()
        self.__dict__.pop("_routes", None)

    # -- building calls -------------------------------------------------------------------------

    def _url(self, path: str, query: Mapping[str, Any] | None = None, *, prefix: str = API_PREFIX) -> str:
        base = self.config.endpoint + prefix.format(project_id=self.config.project_id) + "/" + path
        q = canonical_query({k: v for k, v in (query or {}).items() if v is not None})
        return f"{base}?{q}" if q else base

    def _show_call(self, job_id: str) -> ApiCall:
        return ApiCall("show", "GET", self._url("picture-modelings/" + validate_job_id(job_id)))

    def _list_call(
        self,
        *,
        offset: int,
        limit: int,
        states: Any = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        create_since: datetime | str | None = None,
        create_until: datetime | str | None = None,
    ) -> ApiCall:
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise MetaStudioValidationError("page_size", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
        if not isinstance(offset, int) or offset < 0:
            raise MetaStudioValidationError("offset", "must be a non-negative integer")
        if sort_key is not None and sort_key not in SORT_KEYS:
            raise MetaStudioValidationError("sort_key", f"{sort_key!r} is not one of {', '.join(SORT_KEYS)}")
        if sort_dir is not None and sort_dir not in SORT_DIRS:
            raise MetaStudioValidationError("sort_dir", f"{sort_dir!r} is not one of asc, desc")
        state_param = None
        if states:
            values = [states] if isinstance(states, (str, JobState)) else list(states)
            names = []
            for value in values:
                parsed = JobState.parse(value.value if isinstance(value, JobState) else value)
                if parsed is None:
                    raise MetaStudioValidationError(
                        "states", f"{value!r} is not a picture-modeling job state"
                    )
                names.append(parsed.value)
            state_param = ",".join(names)
        query = {
            "offset": offset,
            "limit": limit,
            "state": state_param,
            "sort_key": sort_key,
            "sort_dir": sort_dir,
            "create_since": _rfc3339(create_since, "create_since"),
            "create_until": _rfc3339(create_until, "create_until"),
        }
        return ApiCall("list", "GET", self._url("picture-modelings", query))

    def _create_call(self, *, photo: Any, style_id: str, name: str, notify_url: str | None) -> ApiCall:
        data, filename = _read_photo(photo)
        ext = validate_photo(data)
        fields = {"style_id": validate_text(style_id, "style_id", 64), "name": validate_text(name, "name")}
        if notify_url is not None:
            fields["notify_url"] = validate_http_url(notify_url, "notify_url")
        boundary = uuid.uuid4().hex
        parts: list[bytes] = []
        for key, value in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
            )
        # The file name goes into a header line: keep only harmless characters.
        if not filename or not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", filename):
            filename = f"photo.{ext}"
        mime = "image/png" if ext == "png" else "image/jpeg"
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {mime}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        return ApiCall(
            "create",
            "POST",
            self._url("picture-modelings"),
            body=b"".join(parts),
            content_type=f"multipart/form-data; boundary={boundary}",
            idempotent=False,
        )

    def _create_by_url_call(
        self, *, picture_url: str, style_id: str, name: str, notify_url: str | None
    ) -> ApiCall:
        body: dict[str, str] = {
            "picture_url": validate_http_url(picture_url, "picture_url"),
            "style_id": validate_text(style_id, "style_id", 64),
            "name": validate_text(name, "name"),
        }
        if notify_url is not None:
            body["notify_url"] = validate_http_url(notify_url, "notify_url")
        return ApiCall(
            "create_by_url",
            "POST",
            self._url("picture-modelings-by-url"),
            body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            content_type="application/json",
            idempotent=False,
        )

    def _iam_call(self) -> ApiCall:
        cfg = self.config
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": cfg.user, "password": cfg.password, "domain": {"name": cfg.domain}}
                    },
                },
                "scope": {"project": {"id": cfg.project_id}},
            }
        }
        return ApiCall(
            "iam",
            "POST",
            f"{cfg.iam_endpoint}/v3/auth/tokens",
            body=json.dumps(body).encode(),
            content_type="application/json",
            authenticated=False,
        )

    def _headers(self, call: ApiCall, token: str | None) -> dict[str, str]:
        headers: dict[str, str] = {"User-Agent": USER_AGENT}
        if call.content_type:
            headers["Content-Type"] = call.content_type
        if call.authenticated:
            if token:
                headers["X-Auth-Token"] = token
            if self.config.app_user_id:
                headers["X-App-UserId"] = self.config.app_user_id
        return headers

    # -- the two transports ---------------------------------------------------------------------

    def _limiter(self, call: ApiCall) -> RateLimiter | None:
        rates = self.config.rate_limits
        if not rates or call.name not in rates:
            return None
        return get_limiter(self.config.endpoint, self.config.project_id, call.name, rates[call.name])

    def _retrying_kwargs(self, call: ApiCall) -> dict[str, Any]:
        """tenacity settings shared by the sync and async loops."""
        refreshed = False
        throttled = 0  # 429s so far: they have their own limit, other failures count the rest

        def retry(state: tenacity.RetryCallState) -> bool:
            nonlocal refreshed, throttled
            exc = state.outcome.exception() if state.outcome else None
            if exc is None:
                return False
            if isinstance(exc, MetaStudioThrottledError):
                throttled += 1  # counted here: tenacity asks retry, then wait, then stop
            if isinstance(exc, MetaStudioError) and exc.call == "iam" and call.name != "iam":
                # The token request already had its retries; IAM locks accounts after failed logins.
                return False
            if (
                isinstance(exc, MetaStudioAuthError)
                and exc.status == 401
                and self.config.auth_type == "password"
                and call.authenticated
                and not refreshed
            ):
                refreshed = True  # a cached token may have been revoked early: renew it once
                self._invalidate_token()
                return True
            return _is_retryable(call, exc)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, MetaStudioAuthError):
                return 0.0
            if isinstance(exc, MetaStudioThrottledError) and exc.retry_after is not None:
                limiter = self._limiter(call)
                if limiter is not None:  # every caller of this tenant in this process holds back
                    limiter.backoff(min(exc.retry_after, self.retry_max_delay))
                # Full jitter on top of Retry-After: processes throttled in the same second (the
                # gateway tells them all the same time) would otherwise come back in lockstep and
                # collide again. Capped: a gateway answering "in an hour" must not hold a worker
                # slot for an hour.
                spread = min(self.retry_delay * 2 ** (throttled - 1), self.retry_max_delay)
                return min(exc.retry_after + random.uniform(0.0, spread), self.retry_max_delay)
            return float(self._backoff(state))

        def stop(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, MetaStudioThrottledError):
                return throttled > self.throttle_retry_limit
            return state.attempt_number - throttled > self.retry_limit

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            # The most attempts if failures of this kind go on (429s and others have own limits).
            if isinstance(exc, MetaStudioThrottledError):
                most = self.throttle_retry_limit + state.attempt_number - throttled + 1
            else:
                most = self.retry_limit + throttled + 1
            log.log(
                self.retry_log_level,
                "%s; retrying in %.1fs (attempt %d of %d)",
                exc,
                state.next_action.sleep if state.next_action else 0.0,
                state.attempt_number + 1,
                most,
            )

        return {
            "retry": retry,
            "wait": wait,
            "stop": stop,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    @cached_property
    def _backoff(self) -> tenacity.wait.wait_base:
        return tenacity.wait_random_exponential(multiplier=self.retry_delay, max=self.retry_max_delay)

    def _request(self, call: ApiCall) -> ApiResponse:
        """Send ``call`` with retries (sync transport)."""
        for attempt in tenacity.Retrying(**self._retrying_kwargs(call)):
            with attempt:
                return self._send(call)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _arequest(self, call: ApiCall) -> ApiResponse:
        """Send ``call`` with retries (async transport)."""
        async for attempt in tenacity.AsyncRetrying(**self._retrying_kwargs(call)):
            with attempt:
                return await self._asend(call)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, call: ApiCall) -> ApiResponse:
        limiter = self._limiter(call)
        if limiter is not None:
            time.sleep(limiter.reserve())
        token = self._get_token() if call.authenticated else None
        try:
            with self._open(call, token) as resp:
                body = bytearray()
                for chunk in resp.iter_content(65536):
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise _too_large(call, resp.status_code, resp.headers)
                return parse_response(call.name, resp.status_code, resp.headers, bytes(body))
        finally:
            if limiter is not None:
                limiter.settle()

    @contextmanager
    def _open(self, call: ApiCall, token: str | None) -> Iterator[requests.Response]:
        """Send ``call`` on the keep-alive session and yield the streamed response: the one sync HTTP
        path, for API calls and cover copies alike. Transport errors become
        :class:`MetaStudioConnectionError`."""
        import requests

        session = self.get_conn()
        auth = RequestsAkSkAuth(self.signer) if call.authenticated and self.signer else None
        try:
            # Prepared here and sent with Session.send(), not Session.request(): request() re-reads
            # the proxy and CA-bundle variables of the whole environment on every call (about half a
            # millisecond in a worker); _environment() reads them once per host. API calls need no
            # cookies and no redirects.
            request = requests.PreparedRequest()
            headers = self._headers(call, token)
            request.prepare(method=call.method, url=call.url, headers=headers, data=call.body, auth=auth)
            with session.send(
                request,
                stream=True,
                allow_redirects=False,
                timeout=self.config.timeout,
                **self._environment(call.url),
            ) as resp:
                yield resp
        except requests.RequestException as e:
            raise _transport_error(call, e) from None

    def _environment(self, url: str) -> dict[str, Any]:
        """``proxies``, ``verify`` and ``cert`` for ``Session.send()`` from :meth:`_route`."""
        route = self._route(url)
        proxies = {urlsplit(url).scheme: route.proxy} if route.proxy else {}
        return {"proxies": proxies, "verify": route.verify, "cert": None}

    def _route(self, url: str) -> _Route:
        """Proxy and TLS verification for ``url``, the same for both transports, once per scheme and
        host for the hook's life (reading the environment costs about half a millisecond a call).

        The connection decides first: its ``proxy`` extra is used for every call, and its ``verify``
        (false, or a CA bundle path) is never overridden. Otherwise ``HTTP(S)_PROXY``/``ALL_PROXY``
        unless ``NO_PROXY`` matches the host, and ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or
        ``SSL_CERT_FILE`` for the CA bundle, as ``requests`` and ``httpx`` read them."""
        routes: dict[tuple[str, str], _Route] = self.__dict__.setdefault("_routes", {})
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in routes:
            cfg = self.config
            verify: bool | str = cfg.verify
            if verify is True:
                # Not merged from the session: psf/requests#3829 turns verify=False back on that way.
                env = os.environ
                verify = (
                    env.get("REQUESTS_CA_BUNDLE")
                    or env.get("CURL_CA_BUNDLE")
                    or env.get("SSL_CERT_FILE")
                    or True
                )
            routes[key] = _Route(cfg.proxy or _environment_proxy(parts), verify)
        return routes[key]

    async def _asend(self, call: ApiCall) -> ApiResponse:
        await self.aget_config()
        limiter = self._limiter(call)
        if limiter is not None:
            await asyncio.sleep(limiter.reserve())
        token = await self._aget_token() if call.authenticated else None
        auth = HttpxAkSkAuth(self.signer) if call.authenticated and self.signer else None
        try:
            async with self._async_client(call.url).stream(
                call.method, call.url, content=call.body, headers=self._headers(call, token), auth=auth
            ) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise _too_large(call, resp.status_code, resp.headers)
                return parse_response(call.name, resp.status_code, resp.headers, bytes(body))
        except httpx.HTTPError as e:
            raise _transport_error(call, e) from None
        finally:
            if limiter is not None:
                limiter.settle()

    # -- IAM tokens -----------------------------------------------------------------------------

    def _token_key(self) -> str:
        cfg = self.config
        material = "\0".join(
            [cfg.iam_endpoint or "", cfg.domain or "", cfg.user or "", cfg.password or "", cfg.project_id]
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def _cached_token(self) -> str | None:
        cfg = self.config
        if cfg.auth_type == "token":
            return cfg.token
        if cfg.auth_type != "password":
            return None
        with _TOKEN_LOCK:
            entry = _TOKEN_CACHE.get(self._token_key())
        if entry is None:
            return None
        token, issued, expires = entry
        # Renew shortly before expiry: 5 minutes, or a tenth of the lifetime for short-lived tokens.
        margin = min(timedelta(minutes=5), (expires - issued) / 10)
        return token if self.clock() < expires - margin else None

    def _store_token(self, resp: ApiResponse) -> str:
        token = resp.headers.get("X-Subject-Token")
        if not token:
            raise _invalid("iam", resp.status, resp.request_id, "no X-Subject-Token header in the answer")
        expires_raw = (
            (resp.data or {}).get("token", {}).get("expires_at") if isinstance(resp.data, dict) else None
        )
        expires = parse_time(expires_raw, "token.expires_at") or self.clock() + timedelta(hours=23)
        with _TOKEN_LOCK:
            _TOKEN_CACHE[self._token_key()] = (token, self.clock(), expires)
        log.info("Obtained an IAM token for project %s, valid until %s", self.config.project_id, expires)
        return token

    def _invalidate_token(self) -> None:
        with _TOKEN_LOCK:
            _TOKEN_CACHE.pop(self._token_key(), None)

    def _get_token(self) -> str | None:
        token = self._cached_token()
        if token or self.config.auth_type != "password":
            return token
        token = self._store_token(self._request(self._iam_call()))
        mask_secret(token)
        return token

    async def _aget_token(self) -> str | None:
        token = self._cached_token()
        if token or self.config.auth_type != "password":
            return token
        token = self._store_token(await self._arequest(self._iam_call()))
        await amask_secret(token)
        return token

    # -- public API -----------------------------------------------------------------------------

    def get_picture_modeling_job(self, job_id: str) -> PictureModelingJob:
        """Return a job's details (``GET .../picture-modelings/{job_id}``).

        :param job_id: the job id returned by a create call.
        """
        return self.get_picture_modeling_job_with_request_id(job_id)[0]

    async def aget_picture_modeling_job(self, job_id: str) -> PictureModelingJob:
        """Async twin of :meth:`get_picture_modeling_job` for triggers."""
        job, _ = await self.aget_picture_modeling_job_with_request_id(job_id)
        return job

    def get_picture_modeling_job_with_request_id(self, job_id: str) -> tuple[PictureModelingJob, str | None]:
        """Like :meth:`get_picture_modeling_job`, also returning the answer's ``X-Request-Id`` for logs."""
        resp = self._request(self._show_call(job_id))
        return _parse_show(resp, job_id), resp.request_id

    async def aget_picture_modeling_job_with_request_id(
        self, job_id: str
    ) -> tuple[PictureModelingJob, str | None]:
        await self.aget_config()
        resp = await self._arequest(self._show_call(job_id))
        return _parse_show(resp, job_id), resp.request_id

    def list_picture_modeling_jobs_page(
        self, *, offset: int = 0, limit: int = MAX_PAGE_SIZE, **filters: Any
    ) -> JobPage:
        """One page of the list call: count of all matches, the jobs on this page, request id.

        :param filters: ``states``, ``sort_key``, ``sort_dir``, ``create_since``, ``create_until``.
        """
        return _parse_page(
            self._request(self._list_call(offset=offset, limit=limit, **filters)), offset, limit
        )

    async def alist_picture_modeling_jobs_page(
        self, *, offset: int = 0, limit: int = MAX_PAGE_SIZE, **filters: Any
    ) -> JobPage:
        await self.aget_config()
        resp = await self._arequest(self._list_call(offset=offset, limit=limit, **filters))
        return _parse_page(resp, offset, limit)

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
        self._list_call(offset=0, limit=page_size, **filters)  # validate before the first yield
        offset = 0
        while True:
            count, jobs, _ = self.list_picture_modeling_jobs_page(offset=offset, limit=page_size, **filters)
            yield from jobs
            offset += len(jobs)
            if not jobs or offset >= count:
                return

    async def alist_picture_modeling_jobs(
        self,
        *,
        states: Any = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        create_since: datetime | str | None = None,
        create_until: datetime | str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[PictureModelingJob]:
        """Async twin of :meth:`list_picture_modeling_jobs`."""
        filters = dict(
            states=states,
            sort_key=sort_key,
            sort_dir=sort_dir,
            create_since=create_since,
            create_until=create_until,
        )
        offset = 0
        while True:
            count, jobs, _ = await self.alist_picture_modeling_jobs_page(
                offset=offset, limit=page_size, **filters
            )
            for job in jobs:
                yield job
            offset += len(jobs)
            if not jobs or offset >= count:
                return

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
    ) -> CreatedJob:
        """Create a job from a photo upload (multipart ``POST .../picture-modelings``).

        :param photo: a path, the bytes, or a binary file object of a jpg/jpeg/png photo.
        :param style_id: e.g. ``system_male_001``.
        :param name: the model's name.
        :param notify_url: optional callback URL for the service.
        """
        call = self._create_call(photo=photo, style_id=style_id, name=name, notify_url=notify_url)
        return self._created(self._request(call))

    def create_picture_modeling_job_by_url(
        self, *, picture_url: str, style_id: str, name: str, notify_url: str | None = None
    ) -> CreatedJob:
        """Create a job from a photo URL (``POST .../picture-modelings-by-url``).

        :param picture_url: http(s) URL of a jpg/jpeg/png photo the service can download.
        :param style_id: e.g. ``system_male_001``.
        :param name: the model's name.
        :param notify_url: optional callback URL for the service.
        """
        call = self._create_by_url_call(
            picture_url=picture_url, style_id=style_id, name=name, notify_url=notify_url
        )
        return self._created(self._request(call))

    def _created(self, resp: ApiResponse) -> CreatedJob:
        data = resp.data if isinstance(resp.data, dict) else {}
        job_id, asset_id = data.get("job_id"), data.get("model_asset_id")
        if not isinstance(job_id, str) or not job_id:
            raise _invalid("create", resp.status, resp.request_id, "the answer has no job_id")
        log.info(
            "Created picture modeling job %s (model_asset_id=%s, X-Request-Id: %s)",
            job_id,
            asset_id,
            resp.request_id,
        )
        return CreatedJob(job_id, asset_id or "")

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
        validate_job_id(job_id)
        validate_wait_settings(poll_interval, timeout)
        progress = JobProgress(job_id, log, clock=monotonic)
        deadline = None if timeout is None else progress.started + timeout
        while True:
            job, request_id = self.get_picture_modeling_job_with_request_id(job_id)
            seen = monotonic()
            progress.observe(job, request_id)
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
        call = self._signed_url_call("cover", cover_url, "model_cover_url")
        refused = (
            f"the cover URL is refused; it expires at {cover_url_expiry(call.url)}, copy covers "
            "soon after the job ends"
        )
        return self._download(call, out, refused).size

    def _download(self, call: ApiCall, out: IO[bytes], refused: str) -> Downloaded:
        """Stream a pre-signed URL into ``out`` with the read retries; ``refused`` explains a 401/403."""
        for attempt in tenacity.Retrying(**self._retrying_kwargs(call)):
            with attempt:
                return self._download_once(call, out, refused)
        raise AssertionError("unreachable")  # pragma: no cover

    def _signed_url_call(self, name: str, url: str, field_name: str) -> ApiCall:
        """An unauthenticated GET of a pre-signed URL (covers; asset files later). Its signature is
        registered with the secrets masker before anything can log it: the URL is a credential."""
        url = validate_http_url(url, field_name)
        for signature in logfilter.url_signatures(url):
            mask_secret(signature)
        return ApiCall(name, "GET", url, authenticated=False)

    def _download_once(self, call: ApiCall, out: IO[bytes], refused: str) -> Downloaded:
        with self._open(call, None) as resp:
            if resp.status_code != 200:
                body = resp.raw.read(65536, decode_content=True) or b""
                try:
                    parse_response(call.name, resp.status_code, resp.headers, body)
                except MetaStudioAuthError as e:
                    raise MetaStudioAuthError(
                        f"{e} - {refused}",
                        status=e.status,
                        error_code=e.error_code,
                        error_msg=e.error_msg,
                        request_id=e.request_id,
                        call=call.name,
                    ) from None
            if hasattr(out, "seekable") and out.seekable():  # a retry starts the file over
                out.seek(0)
                out.truncate()
            size = 0
            digest = hashlib.md5(usedforsecurity=False)  # integrity check against file_md5, not security
            for chunk in resp.iter_content(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            return Downloaded(size, base64.b64encode(digest.digest()).decode("ascii"))

    # -- digital assets (issue #14) -------------------------------------------------------------

    def _asset_show_call(self, asset_id: str) -> ApiCall:
        path = "digital-assets/" + validate_asset_id(asset_id)
        return ApiCall("asset_show", "GET", self._url(path, prefix=ASSET_PREFIX_ROOT))

    def _asset_list_call(
        self,
        *,
        offset: int,
        limit: int,
        states: Any = None,
        asset_types: Any = None,
        style_id: str | None = None,
        name: str | None = None,
        created_since: datetime | str | None = None,
        created_until: datetime | str | None = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        asset_source: str | None = None,
    ) -> ApiCall:
        # Page ranges are not stated for this call; the picture-modeling list's 1-100 are assumed.
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise MetaStudioValidationError("page_size", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
        if not isinstance(offset, int) or offset < 0:
            raise MetaStudioValidationError("offset", "must be a non-negative integer")
        if sort_key is not None and sort_key not in ASSET_SORT_KEYS:
            raise MetaStudioValidationError(
                "sort_key", f"{sort_key!r:.40} is not one of {', '.join(ASSET_SORT_KEYS)}"
            )
        if sort_dir is not None and sort_dir not in SORT_DIRS:
            raise MetaStudioValidationError("sort_dir", f"{sort_dir!r:.40} is not one of asc, desc")
        if asset_source is not None and asset_source not in ASSET_SOURCES:
            raise MetaStudioValidationError(
                "asset_source", f"{asset_source!r:.40} is not one of {', '.join(ASSET_SOURCES)}"
            )
        query = {
            "offset": offset,
            "limit": limit,
            "asset_state": _csv(states, "states", [s.value for s in AssetState]),
            "asset_type": _csv(asset_types, "asset_types", ASSET_TYPES),
            "style_id": None if style_id is None else validate_job_id(style_id, "style_id"),
            "name": None if name is None else validate_text(name, "name"),
            # The contract names these start_time/end_time without saying which time they bound;
            # the creation time is assumed (the only time an asset has besides update_time).
            "start_time": _rfc3339(created_since, "created_since"),
            "end_time": _rfc3339(created_until, "created_until"),
            "sort_key": sort_key,
            "sort_dir": sort_dir,
            "asset_source": asset_source,
        }
        return ApiCall("asset_list", "GET", self._url("digital-assets", query, prefix=ASSET_PREFIX_ROOT))

    def get_asset(self, asset_id: str) -> DigitalAsset:
        """Return one asset of the library (``GET /v1/{project_id}/digital-assets/{asset_id}``).

        :param asset_id: e.g. a picture-modeling job's ``model_asset_id``.
        """
        return _parse_asset(self._request(self._asset_show_call(asset_id)), asset_id)

    async def aget_asset(self, asset_id: str) -> DigitalAsset:
        """Async twin of :meth:`get_asset` for triggers."""
        await self.aget_config()
        return _parse_asset(await self._arequest(self._asset_show_call(asset_id)), asset_id)

    def list_assets_page(self, *, offset: int = 0, limit: int = MAX_PAGE_SIZE, **filters: Any) -> AssetPage:
        """One page of the asset list call; ``filters`` as :meth:`list_assets`."""
        resp = self._request(self._asset_list_call(offset=offset, limit=limit, **filters))
        count, items = _parse_listing(resp, "asset_list", "assets", offset, limit)
        return AssetPage(
            count, [_parse_asset_item(resp, "asset_list", item) for item in items], resp.request_id
        )

    def list_assets(
        self,
        *,
        states: Any = None,
        asset_types: Any = None,
        style_id: str | None = None,
        name: str | None = None,
        created_since: datetime | str | None = None,
        created_until: datetime | str | None = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        asset_source: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[DigitalAsset]:
        """Yield every asset matching the filters, following offset paging to the end.

        :param states: one ``asset_state`` or several (``AssetState`` or strings).
        :param asset_types: one ``asset_type`` or several, e.g. ``HUMAN_MODEL``.
        :param style_id: assets related to this stylization id, e.g. ``system_female_001``.
        :param name: fuzzy match on the asset name.
        :param created_since: lower time bound (``start_time``; RFC 3339 string or aware datetime).
        :param created_until: upper time bound (``end_time``).
        :param sort_key: ``create_time``, ``update_time`` or ``asset_order``.
        :param sort_dir: ``asc`` or ``desc``.
        :param asset_source: ``SYSTEM``, ``CUSTOMIZATION`` (the service's default) or ``ALL``.
        :param page_size: assets per request, 1-100.
        """
        filters = dict(
            states=states,
            asset_types=asset_types,
            style_id=style_id,
            name=name,
            created_since=created_since,
            created_until=created_until,
            sort_key=sort_key,
            sort_dir=sort_dir,
            asset_source=asset_source,
        )
        self._asset_list_call(offset=0, limit=page_size, **filters)  # validate before the first yield
        offset = 0
        while True:
            count, assets, _ = self.list_assets_page(offset=offset, limit=page_size, **filters)
            yield from assets
            offset += len(assets)
            if not assets or offset >= count:
                return

    def download_asset_file(self, file: AssetFile, out: IO[bytes]) -> Downloaded:
        """Stream one asset file through its pre-signed URL into ``out``, verifying size and MD5.

        The URL is a bearer credential valid for 24 hours: it is never logged or put in an error.
        A file without ``file_size`` or a well-formed ``file_md5`` (base64, 24 characters) is
        checked on what it has; the contract promises both.

        :param file: an :class:`AssetFile` of an asset just read with :meth:`get_asset`.
        :param out: a binary file object (a local file or an ``ObjectStoragePath`` opened ``wb``).
        :raises MetaStudioChecksumError: the bytes do not match; the message names the file.
        """
        if not file.download_url:
            raise MetaStudioInvalidResponseError(
                f"Asset file {file.label} has no download_url", call="asset_file"
            )
        try:
            call = self._signed_url_call("asset_file", file.download_url, "download_url")
        except MetaStudioValidationError:  # its message would quote part of the signed URL
            raise MetaStudioInvalidResponseError(
                f"Asset file {file.label} has a download_url that is not an http(s) URL", call="asset_file"
            ) from None
        refused = (
            f"the download URL of {file.label} is refused; it expires at {file.download_url_expires_at} "
            "(read the asset again for a fresh URL)"
        )
        got = self._download(call, out, refused)
        verify_download(file, got)
        return got

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call (list, one job), answered within :data:`TEST_BUDGET` seconds:
        the UI's Test button must not hang on a wrong endpoint, so no retries and short timeouts.
        Never raises."""
        try:
            cfg = self.config
            probe = MetaStudioHook(
                self.metastudio_conn_id, retry_limit=0, throttle_retry_limit=0, clock=self.clock
            )
            connect, read = TEST_TIMEOUT
            probe.adopt_config(
                dataclasses.replace(cfg, timeout=(min(cfg.timeout[0], connect), min(cfg.timeout[1], read)))
            )

            # A thread bounds the whole test, not each socket operation: the password flow makes two
            # calls, and a server may trickle bytes. A late call ends on its own timeouts, unwatched.
            def list_one() -> JobPage:
                try:
                    return probe.list_picture_modeling_jobs_page(offset=0, limit=1)
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
                f"MetaStudio test timed out: no answer from {parts.hostname}:{_port(parts)} "
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


def verify_download(file: AssetFile, got: Downloaded) -> None:
    """Compare what was written with the asset's ``file_size`` and ``file_md5``."""
    if file.size is not None and got.size != file.size:
        raise MetaStudioChecksumError(file.label, f"{got.size} bytes received, {file.size} listed")
    if file.md5_hex is None:
        log.warning("Asset file %s lists no usable MD5 (%r); only its size was checked", file.label, file.md5)
    elif got.md5 != file.md5:
        raise MetaStudioChecksumError(file.label, f"MD5 {got.md5} (base64) received, {file.md5} listed")


def _csv(values: Any, field_name: str, allowed: Any) -> str | None:
    """One value or several, checked against ``allowed``, as the comma-separated list the call takes."""
    if not values:
        return None
    items = [values] if isinstance(values, (str, Enum)) else list(values)
    names = []
    for value in items:
        text = value.value if isinstance(value, Enum) else value
        if text not in allowed:
            raise MetaStudioValidationError(field_name, f"{value!r:.40} is not one of {', '.join(allowed)}")
        names.append(text)
    return ",".join(names)


def _parse_asset_item(resp: ApiResponse, call: str, data: Any) -> DigitalAsset:
    try:
        return DigitalAsset.from_api(data)
    except MetaStudioInvalidResponseError as e:  # add the status and request id support will ask for
        raise _invalid(call, resp.status, resp.request_id, str(e)) from None


def _parse_asset(resp: ApiResponse, asset_id: str) -> DigitalAsset:
    asset = _parse_asset_item(resp, "asset_show", resp.data)
    if asset.asset_id != asset_id:  # another asset's files must never pass for this one's
        raise _invalid(
            "asset_show", resp.status, resp.request_id, f"the answer is for asset {asset.asset_id!r:.80}"
        )
    return asset


def _parse_job(resp: ApiResponse, call: str, data: Any) -> PictureModelingJob:
    try:
        return PictureModelingJob.from_api(data)
    except MetaStudioInvalidResponseError as e:  # add the status and request id support will ask for
        raise _invalid(call, resp.status, resp.request_id, str(e)) from None


def _parse_show(resp: ApiResponse, job_id: str) -> PictureModelingJob:
    job = _parse_job(resp, "show", resp.data)
    if job.job_id != job_id:
        # Another job's details (a caching proxy, a gateway mix-up) must never pass for this one's:
        # its state or model would end the wait with the wrong result.
        raise _invalid("show", resp.status, resp.request_id, f"the answer is for job {job.job_id!r:.80}")
    return job


def _count(value: Any) -> int | None:
    """The list's ``count``: None when absent; the SDK converts it with ``int()``, so a string of
    digits or an integral float counts too."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


def _parse_page(resp: ApiResponse, offset: int, limit: int) -> JobPage:
    count, items = _parse_listing(resp, "list", "picture_modeling_jobs", offset, limit)
    jobs = [_parse_job(resp, "list", item) for item in items]
    return JobPage(count, jobs, resp.request_id)


def _parse_listing(resp: ApiResponse, call: str, key: str, offset: int, limit: int) -> tuple[int, list[Any]]:
    """``(count, raw items)`` of a list answer ``{count, <key>: [...]}`` (jobs and assets alike)."""

    def invalid(problem: str) -> MetaStudioInvalidResponseError:
        return _invalid(call, resp.status, resp.request_id, problem)

    data = resp.data
    if not isinstance(data, dict):
        raise invalid("the answer is not a JSON object")
    try:
        count = _count(data.get("count"))
    except ValueError:
        raise invalid(f"the answer has an invalid count: {data.get('count')!r:.40}") from None
    items = data.get(key)
    if items is None:
        # The SDK reads a missing list as None. Only a count of 0 makes that an empty page: with
        # jobs counted (or no count) it would read as "no jobs" and end a wait.
        if count != 0:
            raise invalid(f"the answer has no {key} list")
        items = []
    if not isinstance(items, list):
        raise invalid(f"{key} is not a list")
    if count is None:
        # The SDK leaves a missing count as None, which no pager can use. Assume the least that
        # keeps paging right: a short page is the last one, a full page has at least one more job
        # after it (the next request then says), so jobs on later pages are never skipped.
        count = offset + len(items) + (1 if len(items) >= limit else 0)
    return count, items


def _too_large(call: ApiCall, status: int, headers: Mapping[str, str]) -> MetaStudioInvalidResponseError:
    request_id = headers.get("X-Request-Id")
    return _invalid(call.name, status, request_id, f"response body larger than {MAX_RESPONSE_BYTES} bytes")


def _rfc3339(value: datetime | str | None, field_name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise MetaStudioValidationError(field_name, "must be timezone-aware")
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        parsed = parse_time(value, field_name)
    except MetaStudioInvalidResponseError:  # parse_time speaks of the service's answers; this is user input
        raise MetaStudioValidationError(field_name, f"{value!r:.40} is not an RFC 3339 time") from None
    if parsed is None:
        return None
    # parse_time accepts lenient forms; the service is sent the strict one.
    return _rfc3339(parsed, field_name)


def _read_photo(photo: Any) -> tuple[bytes, str | None]:
    if isinstance(photo, (bytes, bytearray, memoryview)):
        return bytes(photo), None
    if isinstance(photo, (str, os.PathLike)):
        path = os.fspath(photo)
        if not os.path.isfile(path):
            raise MetaStudioValidationError("photo", f"{path!r} is not a file")
        size = os.path.getsize(path)
        from airflow_provider_metastudio.validation import MAX_PHOTO_BYTES

        if size > MAX_PHOTO_BYTES:
            raise MetaStudioValidationError("photo", f"{size} bytes, at most {MAX_PHOTO_BYTES} accepted")
        with open(path, "rb") as f:
            return f.read(), os.path.basename(path)
    if hasattr(photo, "read"):
        data = photo.read()
        if not isinstance(data, (bytes, bytearray)):
            raise MetaStudioValidationError("photo", "file object must be opened in binary mode")
        name = getattr(photo, "name", None)
        return bytes(data), os.path.basename(name) if isinstance(name, str) else None
    raise MetaStudioValidationError(
        "photo", f"expected a path, bytes or a binary file object, got {type(photo).__name__}"
    )
