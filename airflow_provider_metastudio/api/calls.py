"""The MetaStudio calls as data: each request built and validated from the tenant's base URL.

Every builder returns an :class:`ApiCall` (method, URL with its canonical query, encoded body) and
sends nothing: a transport (``transport.py``) does. Input is validated here, once, before any
request, with errors that name the field.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from airflow_provider_metastudio.assets import ASSET_SORT_KEYS, ASSET_SOURCES, ASSET_TYPES, AssetState
from airflow_provider_metastudio.auth import canonical_query
from airflow_provider_metastudio.exceptions import MetaStudioInvalidResponseError, MetaStudioValidationError
from airflow_provider_metastudio.models import JobState, parse_time
from airflow_provider_metastudio.validation import (
    MAX_PHOTO_BYTES,
    validate_asset_id,
    validate_http_url,
    validate_job_id,
    validate_photo,
    validate_text,
)

STYLIZED_PATH = "digital-human/stylized"
ASSET_PATH = "digital-assets"  # the asset library (issue #14)
SORT_KEYS = ("create_time", "update_time", "asset_order")
SORT_DIRS = ("asc", "desc")
MAX_PAGE_SIZE = 100


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


# -- building calls -----------------------------------------------------------------------------------


def base_url(endpoint: str, project_id: str) -> str:
    """The tenant's base URL, below which every call of the service lives."""
    return f"{endpoint}/v1/{project_id}"


def _url(base: str, path: str, query: Mapping[str, Any] | None = None) -> str:
    # The query in its canonical form: what the signer signs is exactly what is sent.
    q = canonical_query({k: v for k, v in (query or {}).items() if v is not None})
    return f"{base}/{path}?{q}" if q else f"{base}/{path}"


def _check_page(offset: int, limit: int) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise MetaStudioValidationError("page_size", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
    if not isinstance(offset, int) or offset < 0:
        raise MetaStudioValidationError("offset", "must be a non-negative integer")


def show_call(base: str, job_id: str) -> ApiCall:
    """``GET .../picture-modelings/{job_id}``; the job id is validated here, once."""
    return ApiCall("show", "GET", _url(base, f"{STYLIZED_PATH}/picture-modelings/" + validate_job_id(job_id)))


def list_call(
    base: str,
    *,
    offset: int,
    limit: int,
    states: Any = None,
    sort_key: str | None = None,
    sort_dir: str | None = None,
    create_since: datetime | str | None = None,
    create_until: datetime | str | None = None,
) -> ApiCall:
    """``GET .../picture-modelings`` with its filters, validated."""
    _check_page(offset, limit)
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
                raise MetaStudioValidationError("states", f"{value!r} is not a picture-modeling job state")
            names.append(parsed.value)
        state_param = ",".join(names)
    query = {
        "offset": offset,
        "limit": limit,
        "state": state_param,
        "sort_key": sort_key,
        "sort_dir": sort_dir,
        "create_since": rfc3339(create_since, "create_since"),
        "create_until": rfc3339(create_until, "create_until"),
    }
    return ApiCall("list", "GET", _url(base, f"{STYLIZED_PATH}/picture-modelings", query))


def create_call(base: str, *, photo: Any, style_id: str, name: str, notify_url: str | None) -> ApiCall:
    """Multipart ``POST .../picture-modelings`` with the photo (a path, bytes or a binary file)."""
    data, filename = read_photo(photo)
    ext = validate_photo(data)
    fields = {"style_id": validate_text(style_id, "style_id", 64), "name": validate_text(name, "name")}
    if notify_url is not None:
        fields["notify_url"] = validate_http_url(notify_url, "notify_url")
    # The file name goes into a header line: keep only harmless characters.
    if not filename or not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", filename):
        filename = f"photo.{ext}"
    body, content_type = multipart(
        fields, "file", filename, "image/png" if ext == "png" else "image/jpeg", data
    )
    return ApiCall(
        "create",
        "POST",
        _url(base, f"{STYLIZED_PATH}/picture-modelings"),
        body=body,
        content_type=content_type,
        idempotent=False,
    )


def multipart(
    fields: Mapping[str, str], file_field: str, filename: str, mime: str, data: bytes
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of text fields and one file: ``(body, content type)``.

    Made by hand so both transports send the same bytes (and the signer hashes exactly those).
    """
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
        f"Content-Type: {mime}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def create_by_url_call(
    base: str, *, picture_url: str, style_id: str, name: str, notify_url: str | None
) -> ApiCall:
    """JSON ``POST .../picture-modelings-by-url``."""
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
        _url(base, f"{STYLIZED_PATH}/picture-modelings-by-url"),
        body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        content_type="application/json",
        idempotent=False,
    )


def asset_show_call(base: str, asset_id: str) -> ApiCall:
    """``GET /v1/{project_id}/digital-assets/{asset_id}``; the asset id is validated here."""
    return ApiCall("asset_show", "GET", _url(base, f"{ASSET_PATH}/" + validate_asset_id(asset_id)))


def asset_list_call(
    base: str,
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
    """``GET /v1/{project_id}/digital-assets`` with its filters, validated."""
    # Page ranges are not stated for this call; the picture-modeling list's 1-100 are assumed.
    _check_page(offset, limit)
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
        "start_time": rfc3339(created_since, "created_since"),
        "end_time": rfc3339(created_until, "created_until"),
        "sort_key": sort_key,
        "sort_dir": sort_dir,
        "asset_source": asset_source,
    }
    return ApiCall("asset_list", "GET", _url(base, ASSET_PATH, query))


def iam_call(
    iam_endpoint: str | None, *, user: str | None, password: str | None, domain: str | None, project_id: str
) -> ApiCall:
    """The IAM password flow's ``POST /v3/auth/tokens`` for a project-scoped token (unauthenticated)."""
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "password": password, "domain": {"name": domain}}},
            },
            "scope": {"project": {"id": project_id}},
        }
    }
    return ApiCall(
        "iam",
        "POST",
        f"{iam_endpoint}/v3/auth/tokens",
        body=json.dumps(body).encode(),
        content_type="application/json",
        authenticated=False,
    )


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


def rfc3339(value: datetime | str | None, field_name: str) -> str | None:
    """A user's time as the strict RFC 3339 UTC form the service is sent."""
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
    return rfc3339(parsed, field_name)


def read_photo(photo: Any) -> tuple[bytes, str | None]:
    """The photo's bytes and file name, from a path, bytes or a binary file object."""
    if isinstance(photo, (bytes, bytearray, memoryview)):
        return bytes(photo), None
    if isinstance(photo, (str, os.PathLike)):
        path = os.fspath(photo)
        if not os.path.isfile(path):
            raise MetaStudioValidationError("photo", f"{path!r} is not a file")
        size = os.path.getsize(path)
        if size > MAX_PHOTO_BYTES:  # refused before reading: a wrong path may name a huge file
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
