"""Input checks made before anything is sent: ids, region, URLs, names, photos and wait settings.

A job or asset id goes into a URL path: ``../x``, ``a/b``, ``a?b`` or ``%2F`` must never turn into a
request to another path, so ids are checked against a strict alphabet (letters, digits, ``-``, ``_``;
at most 128 characters) instead of being escaped. A photo is checked from its own bytes (PNG or JPEG,
at most 10 MB and 3840x2160 either way round), so a wasted upload becomes an error naming the field.
Errors are :class:`MetaStudioValidationError` naming the field, with at most 60 characters of the
value's ``repr``.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_metastudio.exceptions import MetaStudioValidationError

# Job ids look like "f503894a-20e2-4274-ad88-8364f59a93da_SMS"; asset ids are 32 hex digits.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_ID_LENGTH = 128
_PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
# X-App-UserId: printable ASCII only (the contract forbids Chinese; HTTP headers cannot carry it).
_APP_USER_RE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
MAX_NAME_LENGTH = 256
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_WIDTH, MAX_PHOTO_HEIGHT = 3840, 2160


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_id(value: Any, field: str, pattern: re.Pattern[str], max_length: int) -> str:
    if not isinstance(value, str):
        raise MetaStudioValidationError(field, f"expected a string, got {type(value).__name__}")
    if not value:
        raise MetaStudioValidationError(field, "must not be empty")
    if len(value) > max_length:
        raise MetaStudioValidationError(field, f"{len(value)} characters, at most {max_length} allowed")
    if not pattern.fullmatch(value):
        raise MetaStudioValidationError(
            field,
            f"{_excerpt(value)} may contain only letters, digits, '-' and '_' "
            "(no '/', '..', '?', '#', '%' or whitespace)",
        )
    return value


def validate_job_id(job_id: Any, field: str = "job_id") -> str:
    """Return ``job_id`` if it is safe as one URL path segment, else raise naming ``field``."""
    return _check_id(job_id, field, _ID_RE, MAX_ID_LENGTH)


def validate_project_id(project_id: Any) -> str:
    return _check_id(project_id, "project_id", _PROJECT_RE, 64)


def validate_region(region: Any) -> str:
    if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
        raise MetaStudioValidationError(
            "region", f"{_excerpt(region)} is not a Huawei Cloud region id such as 'cn-north-4'"
        )
    return region


def validate_app_user_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 256 or not _APP_USER_RE.fullmatch(value):
        raise MetaStudioValidationError(
            "app_user_id",
            f"{_excerpt(value)} must be 1-256 printable ASCII characters (X-App-UserId allows no Chinese)",
        )
    return value


def validate_http_url(value: Any, field: str, *, allow_http: bool = True) -> str:
    """A URL with an http(s) scheme and a host; ``field`` names it in the error."""
    if not isinstance(value, str) or not value.strip():
        raise MetaStudioValidationError(field, "must be a non-empty URL")
    parts = urlsplit(value.strip())
    schemes = ("http", "https") if allow_http else ("https",)
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise MetaStudioValidationError(
            field, f"{_excerpt(value)} must be an absolute {' or '.join(schemes)} URL with a host"
        )
    if any(c.isspace() for c in value.strip()):
        raise MetaStudioValidationError(field, f"{_excerpt(value)} contains whitespace")
    return value.strip()


def validate_text(value: Any, field: str, max_length: int = MAX_NAME_LENGTH) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MetaStudioValidationError(field, "must be a non-empty string")
    if len(value) > max_length:
        raise MetaStudioValidationError(field, f"{len(value)} characters, at most {max_length} allowed")
    if any(ord(c) < 0x20 for c in value):
        raise MetaStudioValidationError(field, "contains control characters")
    return value


def validate_wait_settings(
    poll_interval: Any, timeout: Any, *, poll_field: str = "poll_interval", allow_no_timeout: bool = True
) -> None:
    """A poll interval must be a positive number of seconds; a timeout too, or None (wait forever).

    Checked when a task is built and again before its first request: ``0`` would poll in a tight
    loop against a metered API, and a negative timeout would end every wait at once.
    """
    if (
        isinstance(poll_interval, bool)
        or not isinstance(poll_interval, (int, float))
        or not 0 < poll_interval < math.inf
    ):
        raise MetaStudioValidationError(
            poll_field, f"{_excerpt(poll_interval)} is not a number of seconds > 0"
        )
    if timeout is None and allow_no_timeout:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        what = "> 0 or None (wait forever)" if allow_no_timeout else "> 0"
        raise MetaStudioValidationError("timeout", f"{_excerpt(timeout)} is not a number of seconds {what}")


def image_type_and_size(data: bytes) -> tuple[str, int, int]:
    """Return ``(extension, width, height)`` of a PNG or JPEG from its bytes, or raise.

    The service takes jpg/jpeg/png only, at most 3840x2160; checking here turns a wasted upload
    (and a 400 after it) into a clear error that names the field.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            length = int.from_bytes(data[i + 2 : i + 4], "big")
            # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height = int.from_bytes(data[i + 5 : i + 7], "big")
                width = int.from_bytes(data[i + 7 : i + 9], "big")
                return "jpg", width, height
            i += 2 + length
        raise MetaStudioValidationError("photo", "JPEG without a frame header")
    raise MetaStudioValidationError("photo", "is not a PNG or JPEG image (jpg, jpeg and png are accepted)")


def validate_photo(data: bytes) -> str:
    """Check a photo's bytes; return its file extension."""
    if not data:
        raise MetaStudioValidationError("photo", "is empty")
    if len(data) > MAX_PHOTO_BYTES:
        raise MetaStudioValidationError("photo", f"{len(data)} bytes, at most {MAX_PHOTO_BYTES} accepted")
    ext, width, height = image_type_and_size(data)
    if width <= 0 or height <= 0:
        raise MetaStudioValidationError("photo", f"has invalid dimensions {width}x{height}")
    if max(width, height) > MAX_PHOTO_WIDTH or min(width, height) > MAX_PHOTO_HEIGHT:
        raise MetaStudioValidationError(
            "photo", f"is {width}x{height}, larger than {MAX_PHOTO_WIDTH}x{MAX_PHOTO_HEIGHT}"
        )
    return ext


# -- digital assets (issue #14) -----------------------------------------------------------------


def validate_asset_id(asset_id: Any) -> str:
    """An asset id (32 hex digits in practice) goes into a URL path like a job id: same rules."""
    return validate_job_id(asset_id, "asset_id")
