"""The MetaStudio API as data: calls built from a base URL, and answers parsed into typed results.

Nothing here sends a request. Each call is first described as an :class:`ApiCall` (validated, URL
built, body encoded) by a builder function taking the tenant's base URL (:func:`base_url`); a
transport (``transport.py``: ``requests`` for sync code, ``httpx`` for triggers) sends it and hands
the raw answer to :func:`parse_response`; the ``parse_*`` functions turn the data into jobs, pages
and assets. Both transports share every function of this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Any, NamedTuple, TypeVar

from airflow_provider_metastudio.assets import (
    ASSET_SORT_KEYS,
    ASSET_SOURCES,
    ASSET_TYPES,
    AssetFile,
    AssetState,
    DigitalAsset,
)
from airflow_provider_metastudio.auth import canonical_query
from airflow_provider_metastudio.exceptions import (
    MetaStudioApiError,
    MetaStudioAuthError,
    MetaStudioBadRequestError,
    MetaStudioChecksumError,
    MetaStudioGatewayError,
    MetaStudioInvalidResponseError,
    MetaStudioNotFoundError,
    MetaStudioServerError,
    MetaStudioThrottledError,
    MetaStudioValidationError,
    describe,
)
from airflow_provider_metastudio.models import JobState, PictureModelingJob, parse_time
from airflow_provider_metastudio.validation import (
    MAX_PHOTO_BYTES,
    validate_asset_id,
    validate_http_url,
    validate_job_id,
    validate_photo,
    validate_text,
)

log = logging.getLogger(__name__)

# Paths below the tenant's base URL (``{endpoint}/v1/{project_id}``).
STYLIZED_PATH = "digital-human/stylized"
ASSET_PATH = "digital-assets"  # the asset library (issue #14)
SORT_KEYS = ("create_time", "update_time", "asset_order")
SORT_DIRS = ("asc", "desc")
MAX_PAGE_SIZE = 100

T = TypeVar("T")


# -- types --------------------------------------------------------------------------------------------


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


# -- answers ------------------------------------------------------------------------------------------

# The key pairs the official SDK reads, in its order (huaweicloudsdkcore DefaultExceptionHandler).
_ERROR_KEYS = (("error_code", "error_msg"), ("errorCode", "errorMsg"), ("code", "message"))


def error_fields(data: Any) -> tuple[str | None, str | None]:
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
            (f for f in map(error_fields, data.values()) if f != (None, None)),
            (None, None),
        )
    code, msg = found
    # Some gateways send a numeric code; errors carry text.
    return (None if code is None else str(code)), (None if msg is None else str(msg))


def invalid(
    call: str, status: int | None, request_id: str | None, problem: str
) -> MetaStudioInvalidResponseError:
    """An answer that breaks the contract, described like every other error (status, request id)."""
    return MetaStudioInvalidResponseError(
        describe(call, status, None, problem, request_id), status=status, request_id=request_id, call=call
    )


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
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
            raise invalid(call, status, request_id, f"the service answered with {what}")
        return ApiResponse(status, data, request_id, headers)
    error_code, error_msg = error_fields(data)
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
        raise MetaStudioThrottledError(message, retry_after=retry_after(headers), **kwargs)
    if status in (401, 403):
        raise MetaStudioAuthError(message, **kwargs)
    if status == 404:
        raise MetaStudioNotFoundError(message, **kwargs)
    if status >= 500:
        raise (MetaStudioServerError if json_ok else MetaStudioGatewayError)(message, **kwargs)
    if 400 <= status < 500:
        raise MetaStudioBadRequestError(message, **kwargs)
    raise MetaStudioApiError(message, **kwargs)


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


# -- parsing answers ----------------------------------------------------------------------------------


def _parse_job(resp: ApiResponse, call: str, data: Any) -> PictureModelingJob:
    try:
        job = PictureModelingJob.from_api(data)
    except MetaStudioInvalidResponseError as e:  # add the status and request id support will ask for
        raise invalid(call, resp.status, resp.request_id, str(e)) from None
    return replace(job, request_id=resp.request_id)


def parse_show(resp: ApiResponse, job_id: str) -> PictureModelingJob:
    """The job of a details answer, with the answer's request id."""
    job = _parse_job(resp, "show", resp.data)
    if job.job_id != job_id:
        # Another job's details (a caching proxy, a gateway mix-up) must never pass for this one's:
        # its state or model would end the wait with the wrong result.
        raise invalid("show", resp.status, resp.request_id, f"the answer is for job {job.job_id!r:.80}")
    return job


def parse_page(resp: ApiResponse, offset: int, limit: int) -> JobPage:
    """One page of the list answer; each job carries the answer's request id."""
    count, items = _parse_listing(resp, "list", "picture_modeling_jobs", offset, limit)
    return JobPage(count, [_parse_job(resp, "list", item) for item in items], resp.request_id)


def parse_created(resp: ApiResponse) -> CreatedJob:
    """The ids of a create answer; an answer without a job id is invalid."""
    data = resp.data if isinstance(resp.data, dict) else {}
    job_id, asset_id = data.get("job_id"), data.get("model_asset_id")
    if not isinstance(job_id, str) or not job_id:
        raise invalid("create", resp.status, resp.request_id, "the answer has no job_id")
    return CreatedJob(job_id, asset_id or "")


def _parse_asset_item(resp: ApiResponse, call: str, data: Any) -> DigitalAsset:
    try:
        asset = DigitalAsset.from_api(data)
    except MetaStudioInvalidResponseError as e:  # add the status and request id support will ask for
        raise invalid(call, resp.status, resp.request_id, str(e)) from None
    return replace(asset, request_id=resp.request_id)


def parse_asset(resp: ApiResponse, asset_id: str) -> DigitalAsset:
    """The asset of an asset-details answer, with the answer's request id."""
    asset = _parse_asset_item(resp, "asset_show", resp.data)
    if asset.asset_id != asset_id:  # another asset's files must never pass for this one's
        raise invalid(
            "asset_show", resp.status, resp.request_id, f"the answer is for asset {asset.asset_id!r:.80}"
        )
    return asset


def parse_asset_page(resp: ApiResponse, offset: int, limit: int) -> AssetPage:
    """One page of the asset list answer."""
    count, items = _parse_listing(resp, "asset_list", "assets", offset, limit)
    return AssetPage(count, [_parse_asset_item(resp, "asset_list", item) for item in items], resp.request_id)


def parse_token(resp: ApiResponse) -> tuple[str, datetime | None]:
    """The IAM answer's token (``X-Subject-Token``) and its ``expires_at`` (None if not given)."""
    token = resp.headers.get("X-Subject-Token")
    if not token:
        raise invalid("iam", resp.status, resp.request_id, "no X-Subject-Token header in the answer")
    expires_raw = (
        (resp.data or {}).get("token", {}).get("expires_at") if isinstance(resp.data, dict) else None
    )
    return token, parse_time(expires_raw, "token.expires_at")


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


def _parse_listing(resp: ApiResponse, call: str, key: str, offset: int, limit: int) -> tuple[int, list[Any]]:
    """``(count, raw items)`` of a list answer ``{count, <key>: [...]}`` (jobs and assets alike)."""

    def bad(problem: str) -> MetaStudioInvalidResponseError:
        return invalid(call, resp.status, resp.request_id, problem)

    data = resp.data
    if not isinstance(data, dict):
        raise bad("the answer is not a JSON object")
    try:
        count = _count(data.get("count"))
    except ValueError:
        raise bad(f"the answer has an invalid count: {data.get('count')!r:.40}") from None
    items = data.get(key)
    if items is None:
        # The SDK reads a missing list as None. Only a count of 0 makes that an empty page: with
        # jobs counted (or no count) it would read as "no jobs" and end a wait.
        if count != 0:
            raise bad(f"the answer has no {key} list")
        items = []
    if not isinstance(items, list):
        raise bad(f"{key} is not a list")
    if count is None:
        # The SDK leaves a missing count as None, which no pager can use. Assume the least that
        # keeps paging right: a short page is the last one, a full page has at least one more job
        # after it (the next request then says), so jobs on later pages are never skipped.
        count = offset + len(items) + (1 if len(items) >= limit else 0)
    return count, items


# -- paging -------------------------------------------------------------------------------------------


def iterate_pages(fetch: Callable[[int], tuple[int, Sequence[T], Any]]) -> Iterator[T]:
    """Every item of an offset-paged list: ``fetch(offset)`` returns a page ``(total, items, ...)``.

    Stops at the total or at an empty page (a count that says more must not loop forever).
    """
    offset = 0
    while True:
        total, items, *_ = fetch(offset)
        yield from items
        offset += len(items)
        if not items or offset >= total:
            return


async def aiterate_pages(fetch: Callable[[int], Awaitable[tuple[int, Sequence[T], Any]]]) -> AsyncIterator[T]:
    """Async twin of :func:`iterate_pages`."""
    offset = 0
    while True:
        total, items, *_ = await fetch(offset)
        for item in items:
            yield item
        offset += len(items)
        if not items or offset >= total:
            return


# -- downloads ----------------------------------------------------------------------------------------


def verify_download(file: AssetFile, got: Downloaded) -> None:
    """Compare what was written with the asset's ``file_size`` and ``file_md5``."""
    if file.size is not None and got.size != file.size:
        raise MetaStudioChecksumError(file.label, f"{got.size} bytes received, {file.size} listed")
    if file.md5_hex is None:
        log.warning("Asset file %s lists no usable MD5 (%r); only its size was checked", file.label, file.md5)
    elif got.md5 != file.md5:
        raise MetaStudioChecksumError(file.label, f"MD5 {got.md5} (base64) received, {file.md5} listed")
