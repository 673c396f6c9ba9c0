"""Answers of the emulated service, gateway, IAM and OBS, and small request-parsing helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_metastudio.testing import _signing

JSON_TYPE = "application/json"
MAX_URL_LENGTH = 2048


@dataclass
class Reply:
    """One HTTP answer, before the transport adds ``X-Request-Id`` and ``Content-Length``."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), JSON_TYPE, dict(headers or {}))


def error_reply(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    return json_reply(status, {"error_code": code, "error_msg": message}, headers)


def invalid(field_name: str, detail: str | None = None) -> Reply:
    message = f"Invalid parameter: {field_name}" + (f" ({detail})" if detail else "")
    return error_reply(400, "MSS.00000003", message)


def gateway_auth_error(message: str) -> Reply:
    return error_reply(401, "APIGW.0301", f"Incorrect IAM authentication information: {message}")


_HTML_TITLES = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


def html_error_page(status: int) -> Reply:
    """An nginx-style error page, as an API gateway in front of the service sends it."""
    title = _HTML_TITLES.get(status, f"{status} Error")
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return Reply(status, page.encode("ascii"), "text/html")


def obs_error(status: int, code: str, message: str, request_id: str) -> Reply:
    """OBS answers in XML, not in the service's JSON shape."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId></Error>"
    )
    return Reply(status, body.encode("utf-8"), "application/xml")


def iam_error(status: int, code: str, message: str) -> Reply:
    """IAM's error shape ``{"error": {...}}``, plus the flat ``error_code``/``error_msg`` pair so a
    client that only knows the service's shape reads it too."""
    titles = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
    return json_reply(
        status,
        {
            "error": {"code": code, "message": message, "title": titles.get(status, "Error")},
            "error_code": code,
            "error_msg": message,
        },
    )


def is_http_url(value: Any) -> bool:
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        return False
    if any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def valid_app_user_id(value: str) -> bool:
    """X-App-UserId must be printable ASCII (the contract forbids Chinese characters)."""
    return all(0x20 <= ord(c) <= 0x7E for c in value)


def first_headers(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased header name -> first value, with the wire bytes' UTF-8 text restored."""
    out: dict[str, str] = {}
    for name, value in items:
        out.setdefault(name.lower(), _signing.wire_text(value))
    return out
