"""The ``metastudio`` Airflow connection, parsed and checked once into a frozen settings object."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_provider_metastudio.exceptions import MetaStudioConfigError, MetaStudioValidationError
from airflow_provider_metastudio.hostquota import parse_host_quota
from airflow_provider_metastudio.ratelimit import parse_rate_limits
from airflow_provider_metastudio.validation import (
    validate_app_user_id,
    validate_http_url,
    validate_project_id,
    validate_region,
)

DEFAULT_REGION = "cn-north-4"
AUTH_TYPES = ("aksk", "token", "password")
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0


def _as_bool_or_path(value: Any) -> bool | str:
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    if not os.path.exists(text):
        raise MetaStudioValidationError("verify", f"CA bundle {text!r} does not exist")
    return text


def _as_timeout(value: Any) -> tuple[float, float]:
    if value in (None, ""):
        return DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
    try:
        if isinstance(value, str) and value.strip().startswith(("{", "[")):
            value = json.loads(value)  # connection forms and Airflow 2 URIs keep JSON extras as text
        if isinstance(value, dict):
            timeout = (
                float(value.get("connect", DEFAULT_CONNECT_TIMEOUT)),
                float(value.get("read", DEFAULT_READ_TIMEOUT)),
            )
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            timeout = float(value[0]), float(value[1])
        else:
            timeout = float(value), float(value)
        if not min(timeout) > 0:  # requests would only refuse it at the first call
            raise ValueError("not positive")
    except (TypeError, ValueError):
        raise MetaStudioValidationError(
            "timeout", 'must be positive seconds, [connect, read] or {"connect": s, "read": s}'
        ) from None
    return timeout


def _proxy(value: Any) -> str:
    """An http(s) proxy URL. It may hold credentials, so errors never quote it."""
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text):
        raise MetaStudioValidationError("proxy", "must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise MetaStudioValidationError("proxy", "has an invalid port") from None
    return text


def _endpoint(value: str, field_name: str) -> str:
    url = validate_http_url(value, field_name)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise MetaStudioValidationError(field_name, "must not carry a query or fragment")
    try:
        parts.port  # noqa: B018  (urlsplit checks the port only when asked)
    except ValueError:
        raise MetaStudioValidationError(field_name, "has a port out of range") from None
    return url.rstrip("/")


# Where secrets may go. Airflow 3's connection test (POST /api/v2/connections/test) re-uses a stored
# connection's password and secret extras ("***" in the request) as long as the request keeps the
# stored *host* and *port*; every other field, extras included, is the caller's choice. So a
# destination read from extras would let anyone allowed to test connections send the stored SK,
# token or password to a server of their own. The destination therefore lives in host/port/schema,
# which Airflow guards; extras may only name Huawei Cloud's own hosts or repeat the host's origin.
HUAWEI_CLOUD_DOMAIN = "myhuaweicloud.com"


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _is_huawei_cloud(url: str) -> bool:
    scheme, hostname, _ = _origin(url)
    return scheme == "https" and hostname.endswith("." + HUAWEI_CLOUD_DOMAIN)


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _endpoint_from_host(host: str, port: Any, schema: str | None) -> str:
    """The service base URL from the connection's Host (optionally ``scheme://host:port``), Port and
    Schema (the URL scheme, ``https`` by default, as Airflow's HTTP connection uses it)."""
    text = host.strip()
    scheme = (schema or "").strip().lower()
    if "://" in text:
        in_host = urlsplit(text).scheme.lower()
        if scheme and scheme != in_host:
            raise MetaStudioValidationError("schema", f"{scheme!r} disagrees with the scheme in Host")
        url = text
    else:
        if text.count(":") > 1 and not text.startswith("["):  # a bare IPv6 address
            text = f"[{text}]"
        url = f"{scheme or 'https'}://{text}"
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise MetaStudioValidationError("schema", "must be https (or http for a loopback host)")
    url = _endpoint(url, "host")
    parts = urlsplit(url)
    if parts.username is not None or parts.path not in ("", "/"):
        raise MetaStudioValidationError("host", "must be a host name or scheme://host:port, nothing more")
    if port not in (None, ""):
        try:
            port_number = int(port)
        except (TypeError, ValueError):
            raise MetaStudioValidationError("port", "must be a number") from None
        if not 0 < port_number < 65536 or parts.port is not None:
            raise MetaStudioValidationError("port", "must be 1-65535, and not also in Host")
        url = f"{parts.scheme}://{parts.netloc}:{port_number}"
    scheme, hostname, _ = _origin(url)
    if scheme == "http" and not _is_loopback(hostname):
        # Tokens and passwords would cross the network in clear; a stored https connection could
        # be tested as http against its own host.
        raise MetaStudioValidationError("schema", "http is allowed for loopback hosts only; use https")
    return url


def _service_endpoint(host: str | None, port: Any, schema: str | None, endpoint: Any, region: str) -> str:
    if host and host.strip():
        base = _endpoint_from_host(host, port, schema)
        if not endpoint:
            return base
        url = _endpoint(str(endpoint), "endpoint")
        if _origin(url) != _origin(base):
            raise MetaStudioValidationError(
                "endpoint", "disagrees with the connection's Host/Port/Schema; leave it empty"
            )
        return url  # it may add a path prefix to the same server
    if port not in (None, "") or (schema or "").strip():
        raise MetaStudioValidationError("host", "is required when Port or Schema is set")
    if not endpoint:
        return f"https://metastudio.{region}.myhuaweicloud.com"
    url = _endpoint(str(endpoint), "endpoint")
    if not _is_huawei_cloud(url):
        raise MetaStudioValidationError(
            "endpoint",
            f"an endpoint outside https://*.{HUAWEI_CLOUD_DOMAIN} goes in the connection's Host "
            "(and Port, Schema), not in the extras (stored secrets only go where Host says)",
        )
    return url


def _iam_endpoint(value: Any, service: str, region: str) -> str:
    if not value:
        return f"https://iam.{region}.myhuaweicloud.com"
    url = _endpoint(str(value), "iam_endpoint")
    if not (_is_huawei_cloud(url) or _origin(url) == _origin(service)):
        raise MetaStudioValidationError(
            "iam_endpoint",
            f"must be https://*.{HUAWEI_CLOUD_DOMAIN} or the scheme, host and port of the service "
            "endpoint (the IAM password only goes where the connection's Host says)",
        )
    return url


@dataclass(frozen=True)
class MetaStudioConnectionConfig:
    """Everything the hook needs from a connection. Secrets are excluded from ``repr``.

    :param endpoint: service base URL: the connection's Host (Port, Schema), else
        ``https://metastudio.{region}.myhuaweicloud.com``.
    :param iam_endpoint: IAM base URL for the password flow.
    """

    project_id: str
    endpoint: str
    auth_type: str = "aksk"
    region: str = DEFAULT_REGION
    ak: str | None = None
    sk: str | None = field(default=None, repr=False)
    security_token: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    domain: str | None = None
    iam_endpoint: str | None = None
    app_user_id: str | None = None
    verify: bool | str = True
    timeout: tuple[float, float] = (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
    rate_limits: dict[str, float] | None = None
    # Directory of the host-wide quota file shared by this host's processes (None: off).
    host_quota: str | None = None
    # Used for every call of the connection, before HTTP(S)_PROXY; may carry user:password.
    proxy: str | None = field(default=None, repr=False)

    @property
    def secrets(self) -> list[str]:
        """Values that must be registered with the secrets masker."""
        proxy_secrets: list[str | None] = []
        if self.proxy:
            parts = urlsplit(self.proxy)
            if parts.password:  # the whole URL too: its user name is no secret on its own
                proxy_secrets = [self.proxy, parts.password, unquote(parts.password)]
        return [s for s in (self.sk, self.security_token, self.token, self.password, *proxy_secrets) if s]

    @classmethod
    def from_connection(cls, conn: Any) -> MetaStudioConnectionConfig:
        """Build from an Airflow ``Connection`` (URI, JSON or UI form alike)."""
        extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else json.loads(conn.extra or "{}")
        return cls.from_parts(
            login=conn.login,
            password=conn.password,
            extra=extra,
            host=getattr(conn, "host", None),
            port=getattr(conn, "port", None),
            schema=getattr(conn, "schema", None),
        )

    @classmethod
    def from_parts(
        cls,
        *,
        login: str | None,
        password: str | None,
        extra: dict[str, Any],
        host: str | None = None,
        port: Any = None,
        schema: str | None = None,
    ) -> MetaStudioConnectionConfig:
        """Build from the connection's fields; ``host``/``port``/``schema`` name the service endpoint."""
        extra = {k: v for k, v in (extra or {}).items() if v not in (None, "")}
        auth_type = str(extra.get("auth_type", "aksk")).strip().lower()
        if auth_type not in AUTH_TYPES:
            raise MetaStudioValidationError(
                "auth_type", f"{auth_type!r} is not one of {', '.join(AUTH_TYPES)}"
            )
        if "project_id" not in extra:
            raise MetaStudioValidationError("project_id", "is required in the connection's extras")
        project_id = validate_project_id(str(extra["project_id"]).strip())
        region = validate_region(str(extra.get("region", DEFAULT_REGION)).strip())
        endpoint = _service_endpoint(host, port, schema, extra.get("endpoint"), region)
        kwargs: dict[str, Any] = {
            "project_id": project_id,
            "endpoint": endpoint,
            "auth_type": auth_type,
            "region": region,
            "app_user_id": validate_app_user_id(extra["app_user_id"]) if "app_user_id" in extra else None,
            "verify": _as_bool_or_path(extra.get("verify")),
            "timeout": _as_timeout(extra.get("timeout")),
            "proxy": _proxy(extra["proxy"]) if "proxy" in extra else None,
        }
        kwargs["host_quota"] = parse_host_quota(extra.get("host_quota"))
        try:
            kwargs["rate_limits"] = parse_rate_limits(extra.get("rate_limits"))
        except ValueError as e:
            raise MetaStudioValidationError("rate_limits", str(e)) from None
        if auth_type == "aksk":
            ak, sk = login or None, password or None
            if not ak and not sk:  # as the official SDK's examples do
                ak, sk = os.environ.get("CLOUD_SDK_AK") or None, os.environ.get("CLOUD_SDK_SK") or None
            if not ak or not sk:
                raise MetaStudioConfigError(
                    "MetaStudio connection: AK/SK authentication needs the AK in 'login' and the SK in "
                    "'password' (or CLOUD_SDK_AK and CLOUD_SDK_SK in the environment)"
                )
            kwargs.update(ak=ak.strip(), sk=sk.strip(), security_token=extra.get("security_token"))
        elif auth_type == "token":
            if not password:
                raise MetaStudioConfigError(
                    "MetaStudio connection: auth_type 'token' needs the IAM token in 'password'"
                )
            kwargs["token"] = password.strip()
        else:
            if not login or not password or not extra.get("domain"):
                raise MetaStudioConfigError(
                    "MetaStudio connection: auth_type 'password' needs the IAM user in 'login', its "
                    "password in 'password' and the account name in the 'domain' extra"
                )
            kwargs.update(
                user=login,
                password=password,
                domain=str(extra["domain"]),
                iam_endpoint=_iam_endpoint(extra.get("iam_endpoint"), endpoint, region),
            )
        return cls(**kwargs)
