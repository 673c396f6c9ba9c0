"""The MetaStudio answers: raw responses turned into typed results or typed errors.

:func:`parse_response` is shared by both transports; the ``parse_*`` functions read jobs, pages,
assets and tokens out of its data, each with the answer's ``X-Request-Id``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

from airflow_provider_metastudio.assets import AssetFile, DigitalAsset
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
    describe,
)
from airflow_provider_metastudio.models import PictureModelingJob, parse_time

log = logging.getLogger(__name__)

T = TypeVar("T")


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
