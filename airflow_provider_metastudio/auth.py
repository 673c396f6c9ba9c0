"""Every way a call is authenticated: SDK-HMAC-SHA256 signing (Huawei Cloud AK/SK) and tokens.

The signing steps are small pure functions, as in botocore's ``SigV4Auth``, so each one can be
checked against the vectors produced with the official SDK (``tests/data/aksk_signing_vectors.json``).
:class:`AkSkSigner` joins them; :class:`RequestsAkSkAuth` and :class:`HttpxAkSkAuth` attach it to
``requests`` and ``httpx`` so the sync and async clients sign in exactly one way.

:class:`TokenAuth` supplies the ``X-Auth-Token`` of the two token schemes: a static token from the
connection, or a project-scoped token from the IAM password flow, cached per credentials for the
whole process and renewed before it expires. It does not send the IAM call itself: the transport
passes it a function that does (with its retries), so this module stays free of HTTP plumbing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import httpx

if TYPE_CHECKING:
    import requests

    from airflow_provider_metastudio.config import MetaStudioConnectionConfig

log = logging.getLogger(__name__)

ALGORITHM = "SDK-HMAC-SHA256"
SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
HEADER_DATE = "X-Sdk-Date"
HEADER_CONTENT_SHA256 = "X-Sdk-Content-Sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Headers a transport may add, drop or rewrite after signing (hop-by-hop, compression, length).
# Signing them would make the signature depend on the HTTP library, so they are left out;
# the gateway verifies exactly the headers listed in SignedHeaders.
_UNSIGNED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "keep-alive",
        "content-length",
        "transfer-encoding",
        "accept-encoding",
        "accept",
        "expect",
        "te",
        "upgrade",
        "proxy-authorization",
    }
)

Clock = Callable[[], datetime]
QueryItems = Sequence[tuple[str, Any]]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _quote(value: str) -> str:
    # Only unreserved characters and "~" stay bare: "," -> %2C, ":" -> %3A, " " -> %20 (never "+").
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    """Return the canonical URI: every segment decoded then re-encoded, always ending in ``/``.

    :param path: the request path as it goes on the wire (without the query).
    """
    segments = [_quote(unquote(segment)) for segment in (path or "/").split("/")]
    uri = "/".join(segments)
    return uri if uri.endswith("/") else uri + "/"


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def canonical_query(query: QueryItems | Mapping[str, Any]) -> str:
    """Return the canonical query string, which is also the exact query string to send.

    Pairs are sorted by key; a list value becomes one ``key=value`` per element, sorted;
    booleans are written ``true``/``false``.

    :param query: ``(key, value)`` pairs or a mapping; a value may be a list.
    """
    items = query.items() if isinstance(query, Mapping) else query
    grouped: dict[str, list[str]] = {}
    for key, value in items:
        values = value if isinstance(value, (list, tuple)) else [value]
        grouped.setdefault(str(key), []).extend(_query_value(v) for v in values)
    parts = []
    for key in sorted(grouped):
        for value in sorted(grouped[key]):
            parts.append(f"{_quote(key)}={_quote(value)}")
    return "&".join(parts)


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """Return ``(canonical header block, signed header names)``.

    Every header whose name has no ``_`` is signed: names lower-cased and sorted, values stripped.

    :param headers: the headers to sign, exactly as they will be sent.
    """
    normalized: dict[str, str] = {}
    for name, value in headers.items():
        if "_" in name:
            continue
        normalized[name.strip().lower()] = str(value).strip()
    names = sorted(normalized)
    block = "".join(f"{name}:{normalized[name]}\n" for name in names)
    return block, ";".join(names)


def payload_hash(body: bytes | str | None, content_type: str | None) -> str:
    """Return the hex SHA-256 of the body, or ``UNSIGNED-PAYLOAD`` for non-JSON content types.

    :param body: the request body, if any.
    :param content_type: the request's ``Content-Type`` header, if any.
    """
    if is_unsigned_payload(content_type):
        return UNSIGNED_PAYLOAD
    if not body:
        return EMPTY_SHA256
    data = body.encode("utf-8") if isinstance(body, str) else body
    return hashlib.sha256(data).hexdigest()


def is_unsigned_payload(content_type: str | None) -> bool:
    """Multipart uploads (anything but JSON/BSON) are signed with ``UNSIGNED-PAYLOAD``, as the SDK does."""
    if not content_type:
        return False
    return not content_type.startswith(("application/json", "application/bson"))


def canonical_request(
    method: str, path: str, query: str, headers: Mapping[str, str], body_hash: str
) -> tuple[str, str]:
    """Return ``(canonical request, signed header names)``.

    :param method: HTTP method.
    :param path: request path as sent.
    :param query: the canonical query string (see :func:`canonical_query`).
    :param headers: the headers to sign.
    :param body_hash: the result of :func:`payload_hash`.
    """
    header_block, signed = canonical_headers(headers)
    text = "\n".join([method.upper(), canonical_uri(path), query, header_block, signed, body_hash])
    return text, signed


def string_to_sign(canonical: str, sdk_date: str) -> str:
    """Return the string to sign for a canonical request and its ``X-Sdk-Date`` value."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def sign(to_sign: str, sk: str) -> str:
    """Return the hex HMAC-SHA256 of the string to sign, keyed with the SK's UTF-8 bytes."""
    return hmac.new(sk.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_header(ak: str, signed_headers: str, signature: str) -> str:
    return f"{ALGORITHM} Access={ak}, SignedHeaders={signed_headers}, Signature={signature}"


def host_header(url: str) -> str:
    """``Host`` as the SDK signs it: with ``:port`` only when the port is not the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    if port and not ((parts.scheme == "https" and port == 443) or (parts.scheme == "http" and port == 80)):
        host = f"{host}:{port}"
    return host


def canonicalize_url(url: str) -> str:
    """Rewrite the URL's query into its canonical form, so the server sees the bytes that were signed."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = canonical_query(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class AkSkSigner:
    """Signs requests with an AK/SK pair.

    :param ak: access key id.
    :param sk: secret access key.
    :param project_id: sent as ``X-Project-Id`` (the gateway needs it with AK/SK).
    :param security_token: for temporary credentials, sent (and signed) as ``X-Security-Token``.
    :param clock: returns the current UTC time; injectable for tests and fixed vectors.
    """

    def __init__(
        self,
        ak: str,
        sk: str,
        *,
        project_id: str | None = None,
        security_token: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.ak = ak
        self._sk = sk
        self.project_id = project_id
        self._security_token = security_token
        self.clock = clock

    def __repr__(self) -> str:  # the SK and token never appear in a repr
        return f"AkSkSigner(ak={self.ak!r}, project_id={self.project_id!r})"

    def sign_request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | str | None
    ) -> dict[str, str]:
        """Return the full header set to send: ``headers`` plus date, host, project and ``Authorization``.

        A stale ``Authorization`` or ``X-Sdk-Date`` (from an earlier attempt) is replaced, so
        retried requests are signed afresh.

        :param method: HTTP method.
        :param url: the full URL, whose query must already be canonical (see :func:`canonicalize_url`).
        :param headers: headers that will be sent.
        :param body: the body that will be sent.
        """
        out = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "x-sdk-date")}
        lower = {k.lower(): k for k in out}
        if "host" not in lower:
            out["Host"] = host_header(url)
        if self.project_id and "x-project-id" not in lower:
            out["X-Project-Id"] = self.project_id
        if self._security_token and "x-security-token" not in lower:
            out["X-Security-Token"] = self._security_token
        content_type = out.get(lower.get("content-type", "Content-Type"))
        if is_unsigned_payload(content_type):
            out[HEADER_CONTENT_SHA256] = UNSIGNED_PAYLOAD
        out[HEADER_DATE] = self.clock().astimezone(timezone.utc).strftime(SDK_DATE_FORMAT)
        to_sign = {k: v for k, v in out.items() if k.lower() not in _UNSIGNED_HEADERS}
        parts = urlsplit(url)
        canonical, signed = canonical_request(
            method, parts.path, parts.query, to_sign, payload_hash(body, content_type)
        )
        signature = sign(string_to_sign(canonical, out[HEADER_DATE]), self._sk)
        out["Authorization"] = authorization_header(self.ak, signed, signature)
        return out


class RequestsAkSkAuth:
    """Attach AK/SK signatures to ``requests`` calls; the query is rewritten to its canonical form.

    ``requests`` takes any callable as ``auth``; not deriving from its ``AuthBase`` keeps ``requests``
    out of the import of this module (most of the provider's import time, and triggers never use it).
    """

    def __init__(self, signer: AkSkSigner) -> None:
        self.signer = signer

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.url = canonicalize_url(r.url or "")
        signed = self.signer.sign_request(r.method or "GET", r.url, dict(r.headers), r.body)  # type: ignore[arg-type]
        r.headers.clear()
        r.headers.update(signed)
        return r


class HttpxAkSkAuth(httpx.Auth):
    """Attach AK/SK signatures to ``httpx`` calls (sync or async), with the same signer."""

    requires_request_body = True

    def __init__(self, signer: AkSkSigner) -> None:
        self.signer = signer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url = canonicalize_url(str(request.url))
        request.url = httpx.URL(url)
        headers = {k: v for k, v in request.headers.items()}
        signed = self.signer.sign_request(request.method, url, headers, request.content)
        for name in list(request.headers.keys()):
            if name.lower() in ("authorization", "x-sdk-date"):
                del request.headers[name]
        request.headers.update(signed)
        yield request


# Tokens from the IAM password flow, per credentials, shared by all hooks of the process.
_TOKEN_CACHE: dict[str, tuple[str, datetime, datetime]] = {}
_TOKEN_LOCK = threading.Lock()
# Lifetime assumed for an IAM token whose answer states none (IAM issues them for 24 hours).
DEFAULT_TOKEN_LIFETIME = timedelta(hours=23)

#: Gets a new IAM token: ``(token, expires_at or None)``.
TokenFetch = Callable[[], "tuple[str, datetime | None]"]


class TokenAuth:
    """The ``X-Auth-Token`` of a connection: its static token, or an IAM password-flow token.

    :param config: the connection (``auth_type`` ``token`` or ``password``; others have no token).
    :param clock: UTC clock for token expiry; injectable for tests.
    """

    def __init__(self, config: MetaStudioConnectionConfig, *, clock: Clock = utc_now) -> None:
        self.config = config
        self.clock = clock

    def __repr__(self) -> str:  # the token and password never appear in a repr
        return f"TokenAuth(auth_type={self.config.auth_type!r}, project_id={self.config.project_id!r})"

    def token_key(self) -> str:
        """The cache key: a digest of everything that identifies the token (the password included)."""
        cfg = self.config
        material = "\0".join(
            [cfg.iam_endpoint or "", cfg.domain or "", cfg.user or "", cfg.password or "", cfg.project_id]
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def cached_token(self) -> str | None:
        """The token to send now without asking IAM, or None (no token scheme, none cached, or due)."""
        cfg = self.config
        if cfg.auth_type == "token":
            return cfg.token
        if cfg.auth_type != "password":
            return None
        with _TOKEN_LOCK:
            entry = _TOKEN_CACHE.get(self.token_key())
        if entry is None:
            return None
        token, issued, expires = entry
        # Renew shortly before expiry: 5 minutes, or a tenth of the lifetime for short-lived tokens.
        margin = min(timedelta(minutes=5), (expires - issued) / 10)
        return token if self.clock() < expires - margin else None

    def store_token(self, token: str, expires: datetime | None) -> str:
        """Cache a token IAM just issued, for every hook of the process with these credentials."""
        expires = expires or self.clock() + DEFAULT_TOKEN_LIFETIME
        with _TOKEN_LOCK:
            _TOKEN_CACHE[self.token_key()] = (token, self.clock(), expires)
        log.info("Obtained an IAM token for project %s, valid until %s", self.config.project_id, expires)
        return token

    def invalidate_token(self) -> None:
        """Forget the cached token (a 401 says it was revoked before its time)."""
        with _TOKEN_LOCK:
            _TOKEN_CACHE.pop(self.token_key(), None)

    @property
    def renews(self) -> bool:
        """Whether a refused token can be renewed (the password flow; a static token cannot)."""
        return self.config.auth_type == "password"

    def get_token(self, fetch: TokenFetch) -> str | None:
        """The token to send, from the cache or, when due, from ``fetch`` (the IAM call)."""
        token = self.cached_token()
        if token or not self.renews:
            return token
        return self.store_token(*fetch())

    async def aget_token(self, fetch: Callable[[], Awaitable[tuple[str, datetime | None]]]) -> str | None:
        """Async twin of :meth:`get_token`."""
        token = self.cached_token()
        if token or not self.renews:
            return token
        return self.store_token(*await fetch())
