"""Sending :class:`~airflow_provider_metastudio.api.ApiCall` s: the one sync path and the one async path.

``requests`` (sync code: workers) and ``httpx`` (triggers) share the signer and token
authentication (``auth.py``), the retry policy (``retry.py``), the client-side quota (``ratelimit.py``),
the response size cap, the mapping of transport errors and ``api.parse_response``.
Proxies and CA bundles are resolved once per host for both. Pre-signed URLs (covers, asset files)
are streamed through the same sync path.

``requests`` is imported on first use of the sync transport only: it is most of the import cost,
and the triggerer and DAG parsing never need it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import os
import ssl
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, NamedTuple
from urllib.parse import SplitResult, urlsplit

import httpx
import tenacity

from airflow_provider_metastudio import __version__, logfilter, metrics
from airflow_provider_metastudio._compat import amask_secret, mask_secret
from airflow_provider_metastudio.api import (
    ApiCall,
    ApiResponse,
    Downloaded,
    iam_call,
    invalid,
    parse_response,
    parse_token,
)
from airflow_provider_metastudio.auth import (
    AkSkSigner,
    Clock,
    HttpxAkSkAuth,
    RequestsAkSkAuth,
    TokenAuth,
    utc_now,
)
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import (
    MetaStudioAuthError,
    MetaStudioConnectionError,
    MetaStudioInvalidResponseError,
)
from airflow_provider_metastudio.hostquota import reservation_path
from airflow_provider_metastudio.ratelimit import Limiter, get_limiter
from airflow_provider_metastudio.retry import RetryPolicy, retrying_kwargs
from airflow_provider_metastudio.validation import validate_http_url

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)
logfilter.install()  # the HTTP libraries this module drives log request URLs, signed ones too

# Bodies are read up to this size: a job or a page of 100 jobs is a few kB; anything far larger is
# a broken gateway, not data, and must not be loaded into a worker's memory.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
USER_AGENT = f"airflow-provider-metastudio/{__version__}"


def transport_error(call: ApiCall, exc: Exception) -> MetaStudioConnectionError:
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
    where = f"{parts.hostname}:{port(parts)}"
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


def count_call(name: str, status: int | str) -> None:
    """Count one answer (or ``"error"``: no answer) of a call; 429s also on their own counter."""
    metrics.incr("api.calls", call=name, status=status)
    if status == 429:
        metrics.incr("api.throttled", call=name)


def port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _too_large(call: ApiCall, status: int, headers: Mapping[str, str]) -> MetaStudioInvalidResponseError:
    request_id = headers.get("X-Request-Id")
    return invalid(call.name, status, request_id, f"response body larger than {MAX_RESPONSE_BYTES} bytes")


class Route(NamedTuple):
    """How a URL is reached: through which proxy (None: directly) and with which TLS verification."""

    proxy: str | None
    verify: bool | str


def environment_proxy(parts: SplitResult) -> str | None:
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


def signed_url_call(name: str, url: str, field_name: str) -> ApiCall:
    """An unauthenticated GET of a pre-signed URL (covers, asset files). Its signature is registered
    with the secrets masker before anything can log it: the URL is a credential."""
    url = validate_http_url(url, field_name)
    for signature in logfilter.url_signatures(url):
        mask_secret(signature)
    return ApiCall(name, "GET", url, authenticated=False)


class Transport:
    """Sends calls for one connection: a keep-alive ``requests`` session, one ``httpx`` client per
    route and event loop, retries, the quota, and authentication.

    :param config: the connection, already looked up (and its secrets masked).
    :param retry: the retry policy (the defaults of :class:`RetryPolicy` if None).
    :param clock: UTC clock for signatures and token expiry; injectable for tests.
    """

    def __init__(
        self,
        config: MetaStudioConnectionConfig,
        *,
        retry: RetryPolicy | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self.tokens = TokenAuth(config, clock=clock)
        self.signer: AkSkSigner | None = None
        if config.auth_type == "aksk":
            assert config.ak and config.sk
            self.signer = AkSkSigner(
                config.ak,
                config.sk,
                project_id=config.project_id,
                security_token=config.security_token,
                clock=clock,
            )
        self._host_path = reservation_path(config)
        self._session: requests.Session | None = None
        self._routes: dict[tuple[str, str], Route] = {}
        self._aclients: dict[Route, httpx.AsyncClient] = {}
        self._aclient_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"Transport(endpoint={self.config.endpoint!r}, project_id={self.config.project_id!r})"

    # -- clients ------------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """The keep-alive session (connections are reused across calls)."""
        if self._session is None:
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.verify = self.config.verify
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._session = session
        return self._session

    def _async_client(self, url: str) -> httpx.AsyncClient:
        """The keep-alive client for ``url``'s route (proxy and TLS settings): one per route, as a
        client's proxy is fixed when it is built; most connections have one route."""
        # An AsyncClient belongs to the event loop that created it; dag.test() runs every trigger in
        # its own asyncio.run(), so clients from a previous loop are replaced, not reused.
        loop = asyncio.get_running_loop()
        if self._aclient_loop is not loop:
            self._aclients, self._aclient_loop = {}, loop
        route = self.route(url)
        client = self._aclients.get(route)
        if client is None or client.is_closed:
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
                timeout=httpx.Timeout(self.config.timeout[1], connect=self.config.timeout[0]),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                trust_env=False,
            )
        return client

    async def aclose(self) -> None:
        """Close the async clients."""
        clients, self._aclients = list(self._aclients.values()), {}
        for client in clients:
            await client.aclose()

    def close(self) -> None:
        """Close the session; the next sync call opens a new one and reads the environment again."""
        session, self._session = self._session, None
        if session is not None:
            session.close()
        self._routes = {}

    def route(self, url: str) -> Route:
        """Proxy and TLS verification for ``url``, the same for both transports, once per scheme and
        host (reading the environment costs about half a millisecond a call).

        The connection decides first: its ``proxy`` extra is used for every call, and its ``verify``
        (false, or a CA bundle path) is never overridden. Otherwise ``HTTP(S)_PROXY``/``ALL_PROXY``
        unless ``NO_PROXY`` matches the host, and ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or
        ``SSL_CERT_FILE`` for the CA bundle, as ``requests`` and ``httpx`` read them."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._routes:
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
            self._routes[key] = Route(cfg.proxy or environment_proxy(parts), verify)
        return self._routes[key]

    def environment(self, url: str) -> dict[str, Any]:
        """``proxies``, ``verify`` and ``cert`` for ``Session.send()`` from :meth:`route`."""
        route = self.route(url)
        proxies = {urlsplit(url).scheme: route.proxy} if route.proxy else {}
        return {"proxies": proxies, "verify": route.verify, "cert": None}

    def headers(self, call: ApiCall, token: str | None) -> dict[str, str]:
        headers: dict[str, str] = {"User-Agent": USER_AGENT}
        if call.content_type:
            headers["Content-Type"] = call.content_type
        if call.authenticated:
            if token:
                headers["X-Auth-Token"] = token
            if self.config.app_user_id:
                headers["X-App-UserId"] = self.config.app_user_id
        return headers

    # -- retries and quota --------------------------------------------------------------------------

    def limiter(self, call: ApiCall) -> Limiter | None:
        rates = self.config.rate_limits
        if not rates or call.name not in rates:
            return None
        cfg = self.config
        return get_limiter(cfg.endpoint, cfg.project_id, call.name, rates[call.name], self._host_path)

    def _retrying(self, call: ApiCall, deadline: float | None = None) -> dict[str, Any]:
        return retrying_kwargs(
            call, self.retry, tokens=self.tokens, limiter=self.limiter(call), deadline=deadline
        )

    # -- the sync path ------------------------------------------------------------------------------

    def request(self, call: ApiCall, deadline: float | None = None) -> ApiResponse:
        """Send ``call`` with retries (sync transport); 429s until ``deadline`` when given."""
        for attempt in tenacity.Retrying(**self._retrying(call, deadline)):
            with attempt:
                return self._send(call)
        raise AssertionError("unreachable")  # pragma: no cover

    def token(self) -> str | None:
        """The ``X-Auth-Token`` to send (asks IAM when the password flow's token is due)."""

        def fetch() -> tuple[str, datetime | None]:
            token, expires = parse_token(self.request(self._iam_call()))
            mask_secret(token)
            return token, expires

        return self.tokens.get_token(fetch)

    def _iam_call(self) -> ApiCall:
        cfg = self.config
        return iam_call(
            cfg.iam_endpoint,
            user=cfg.user,
            password=cfg.password,
            domain=cfg.domain,
            project_id=cfg.project_id,
        )

    def _send(self, call: ApiCall) -> ApiResponse:
        limiter = self.limiter(call)
        if limiter is not None:
            self.session()  # built before the slot: a first call's set-up would delay its arrival
            time.sleep(limiter.reserve())
        token = self.token() if call.authenticated else None
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
        path, for API calls and downloads alike. Transport errors become
        :class:`MetaStudioConnectionError`."""
        import requests

        session = self.session()
        auth = RequestsAkSkAuth(self.signer) if call.authenticated and self.signer else None
        try:
            # Prepared here and sent with Session.send(), not Session.request(): request() re-reads
            # the proxy and CA-bundle variables of the whole environment on every call (about half a
            # millisecond in a worker); route() reads them once per host. API calls need no
            # cookies and no redirects.
            request = requests.PreparedRequest()
            headers = self.headers(call, token)
            request.prepare(method=call.method, url=call.url, headers=headers, data=call.body, auth=auth)
            with session.send(
                request,
                stream=True,
                allow_redirects=False,
                timeout=self.config.timeout,
                **self.environment(call.url),
            ) as resp:
                count_call(call.name, resp.status_code)
                yield resp
        except requests.RequestException as e:
            count_call(call.name, "error")
            raise transport_error(call, e) from None

    # -- downloads of pre-signed URLs --------------------------------------------------------------

    def download(self, call: ApiCall, out: IO[bytes], refused: str) -> Downloaded:
        """Stream a pre-signed URL (see :func:`signed_url_call`) into ``out`` with the read retries;
        ``refused`` explains a 401/403."""
        for attempt in tenacity.Retrying(**self._retrying(call)):
            with attempt:
                return self._download_once(call, out, refused)
        raise AssertionError("unreachable")  # pragma: no cover

    def _download_once(self, call: ApiCall, out: IO[bytes], refused: str) -> Downloaded:
        with self._open(call, None) as resp:
            if resp.status_code != 200:
                body = resp.raw.read(65536, decode_content=True) or b""
                try:
                    parse_response(call.name, resp.status_code, resp.headers, body)
                except MetaStudioAuthError as e:
                    raise e.with_advice(refused, call=call.name) from None
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

    # -- the async path ---------------------------------------------------------------------------

    async def arequest(self, call: ApiCall, deadline: float | None = None) -> ApiResponse:
        """Send ``call`` with retries (async transport); 429s until ``deadline`` when given."""
        async for attempt in tenacity.AsyncRetrying(**self._retrying(call, deadline)):
            with attempt:
                return await self._asend(call)
        raise AssertionError("unreachable")  # pragma: no cover

    async def atoken(self) -> str | None:
        """Async twin of :meth:`token`."""

        async def fetch() -> tuple[str, datetime | None]:
            token, expires = parse_token(await self.arequest(self._iam_call()))
            await amask_secret(token)
            return token, expires

        return await self.tokens.aget_token(fetch)

    async def _asend(self, call: ApiCall) -> ApiResponse:
        limiter = self.limiter(call)
        if limiter is not None:
            await asyncio.sleep(limiter.reserve())
        token = await self.atoken() if call.authenticated else None
        auth = HttpxAkSkAuth(self.signer) if call.authenticated and self.signer else None
        try:
            async with self._async_client(call.url).stream(
                call.method, call.url, content=call.body, headers=self.headers(call, token), auth=auth
            ) as resp:
                count_call(call.name, resp.status_code)
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise _too_large(call, resp.status_code, resp.headers)
                return parse_response(call.name, resp.status_code, resp.headers, bytes(body))
        except httpx.HTTPError as e:
            count_call(call.name, "error")
            raise transport_error(call, e) from None
        finally:
            if limiter is not None:
                limiter.settle()
