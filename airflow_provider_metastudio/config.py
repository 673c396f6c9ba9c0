"""The ``metastudio`` Airflow connection, parsed and checked once into a frozen settings object."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_provider_metastudio.exceptions import MetaStudioConfigError, MetaStudioValidationError
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
    return url.rstrip("/")


@dataclass(frozen=True)
class MetaStudioConnectionConfig:
    """Everything the hook needs from a connection. Secrets are excluded from ``repr``.

    :param endpoint: service base URL, ``https://metastudio.{region}.myhuaweicloud.com`` by default.
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
        return cls.from_parts(login=conn.login, password=conn.password, extra=extra)

    @classmethod
    def from_parts(
        cls, *, login: str | None, password: str | None, extra: dict[str, Any]
    ) -> MetaStudioConnectionConfig:
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
        endpoint = _endpoint(
            str(extra.get("endpoint") or f"https://metastudio.{region}.myhuaweicloud.com"), "endpoint"
        )
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
                iam_endpoint=_endpoint(
                    str(extra.get("iam_endpoint") or f"https://iam.{region}.myhuaweicloud.com"),
                    "iam_endpoint",
                ),
            )
        return cls(**kwargs)
