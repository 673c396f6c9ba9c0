"""Validation of the picture-modeling calls' requests, kept apart from the job store.

Each parser returns either the request's values or the service's 400 answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from airflow_provider_metastudio.testing._clock import parse_rfc3339
from airflow_provider_metastudio.testing._config import JOB_STATES, STYLE_IDS
from airflow_provider_metastudio.testing._media import (
    ImageError,
    ImageInfo,
    MultipartError,
    inspect_image,
    parse_multipart,
)
from airflow_provider_metastudio.testing._replies import Reply, error_reply, invalid, is_http_url

if TYPE_CHECKING:
    from airflow_provider_metastudio.testing._config import EmulatorConfig

MAX_NAME_LENGTH = 256
SORT_KEYS = ("create_time", "update_time", "asset_order")


@dataclass(frozen=True)
class ListQuery:
    """The list call's query string, validated."""

    states: frozenset[str]
    sort_key: str
    sort_dir: str
    offset: int
    limit: int
    create_since: float | None
    create_until: float | None


@dataclass(frozen=True)
class CreateRequest:
    """A create call's body, validated (``image`` for an upload, ``picture_url`` by URL)."""

    name: str
    style_id: str
    notify_url: str | None
    picture_url: str | None = None
    image: ImageInfo | None = None
    image_sha256: str | None = None


def parse_list_query(raw_query: str) -> ListQuery | Reply:
    query = parse_qs(raw_query, keep_blank_values=True)

    def single(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    states: set[str] = set()
    for raw in query.get("state", []):
        for state in (s.strip() for s in raw.split(",")):
            if not state:
                continue
            if state not in JOB_STATES:
                return invalid("state", f"{state[:40]!r} is not a job state")
            states.add(state)
    sort_key = single("sort_key") or "create_time"
    if sort_key not in SORT_KEYS:
        return invalid("sort_key", "must be create_time, update_time or asset_order")
    sort_dir = (single("sort_dir") or "asc").lower()
    if sort_dir not in ("asc", "desc"):
        return invalid("sort_dir", "must be asc or desc")
    try:
        offset = int(single("offset") or "0")
    except ValueError:
        return invalid("offset", "must be an integer")
    if not 0 <= offset <= 2147483647:
        return invalid("offset", "must be between 0 and 2147483647")
    try:
        limit = int(single("limit") or "10")
    except ValueError:
        return invalid("limit", "must be an integer")
    if not 1 <= limit <= 100:
        return invalid("limit", "must be between 1 and 100")
    bounds: dict[str, float] = {}
    for name in ("create_since", "create_until"):
        value = single(name)
        if value:
            try:
                bounds[name] = parse_rfc3339(value)
            except ValueError:
                return invalid(name, "must be an RFC 3339 date-time")
    return ListQuery(
        frozenset(states),
        sort_key,
        sort_dir,
        offset,
        limit,
        bounds.get("create_since"),
        bounds.get("create_until"),
    )


def _check_common(style_id: Any, name: Any, notify_url: Any) -> Reply | None:
    if not isinstance(style_id, str) or not style_id:
        return invalid("style_id", "is required")
    if style_id not in STYLE_IDS:
        return invalid("style_id", f"unknown style {style_id[:40]!r}")
    if not isinstance(name, str) or not name.strip():
        return invalid("name", "is required")
    if len(name) > MAX_NAME_LENGTH or any(ord(c) < 0x20 for c in name):
        return invalid("name", f"at most {MAX_NAME_LENGTH} characters, no control characters")
    if notify_url is not None and not is_http_url(notify_url):
        return invalid("notify_url", "must be an http(s) URL")
    return None


def parse_upload(config: EmulatorConfig, content_type: str | None, body: bytes) -> CreateRequest | Reply:
    """The multipart body of ``POST picture-modelings`` (photo, style, name, notify URL)."""
    try:
        parts = parse_multipart(content_type or "", body)
    except MultipartError as e:
        return invalid("file", str(e))
    style_id = parts["style_id"].text() if "style_id" in parts else None
    name = parts["name"].text() if "name" in parts else None
    notify_url = parts["notify_url"].text() if "notify_url" in parts else None
    problem = _check_common(style_id, name, notify_url or None)
    if problem is not None:
        return problem
    file_part = parts.get("file")
    if file_part is None or not file_part.data:
        return invalid("file", "is required")
    try:
        image = inspect_image(file_part.data)
    except ImageError as e:
        return invalid("file", f"{e}; jpg, jpeg and png are accepted")
    long_side, short_side = max(image.width, image.height), min(image.width, image.height)
    max_long = max(config.max_image_width, config.max_image_height)
    max_short = min(config.max_image_width, config.max_image_height)
    if image.width <= 0 or image.height <= 0 or long_side > max_long or short_side > max_short:
        return invalid(
            "file",
            f"image is {image.width}x{image.height}, at most "
            f"{config.max_image_width}x{config.max_image_height} is accepted",
        )
    return CreateRequest(
        name=str(name),
        style_id=str(style_id),
        notify_url=notify_url or None,
        image=image,
        image_sha256=hashlib.sha256(file_part.data).hexdigest(),
    )


def parse_by_url(content_type: str | None, body: bytes) -> CreateRequest | Reply:
    """The JSON body of ``POST picture-modelings-by-url``."""
    if content_type and not content_type.lower().startswith("application/json"):
        return error_reply(400, "MSS.00000002", "Invalid body: Content-Type must be application/json")
    try:
        payload = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        return error_reply(400, "MSS.00000002", "Invalid body: not valid JSON")
    if not isinstance(payload, dict):
        return error_reply(400, "MSS.00000002", "Invalid body: a JSON object is required")
    picture_url = payload.get("picture_url")
    if not isinstance(picture_url, str) or not picture_url:
        return invalid("picture_url", "is required")
    if not is_http_url(picture_url):
        return invalid("picture_url", "must be an http(s) URL")
    problem = _check_common(payload.get("style_id"), payload.get("name"), payload.get("notify_url"))
    if problem is not None:
        return problem
    return CreateRequest(
        name=payload["name"],
        style_id=payload["style_id"],
        notify_url=payload.get("notify_url"),
        picture_url=picture_url,
    )
