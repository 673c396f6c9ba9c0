"""Typed views of MetaStudio's asset library: the model a picture-modeling job's ``model_asset_id``
points at, and its files.

Taken from the official SDK's ``ShowAssetResponse``/``AssetFileInfo`` (see the reference contract).
Where the contract says nothing, the parsing is tolerant: unknown states and categories are kept as
the raw strings, optional fields may be absent, and only ``asset_id`` and ``asset_state`` are required.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_metastudio._asset_vocabulary import (
    ASSET_FAILURE_STATES,
    ASSET_SORT_KEYS,
    ASSET_SOURCES,
    ASSET_TYPES,
    FILE_CATEGORIES,
    AssetState,
)
from airflow_provider_metastudio.exceptions import MetaStudioInvalidResponseError
from airflow_provider_metastudio.models import cover_url_expiry, parse_time, redact_url

__all__ = [
    "ASSET_FAILURE_STATES",
    "ASSET_SORT_KEYS",
    "ASSET_SOURCES",
    "ASSET_TYPES",
    "FILE_CATEGORIES",
    "AssetFile",
    "AssetState",
    "DigitalAsset",
    "md5_base64_to_hex",
    "signed_url_expiry",
]


def signed_url_expiry(url: str | None) -> datetime | None:
    """When a pre-signed download URL stops working, if its query says so, else None.

    The contract only says "valid for 24 hours". OBS V2 query signing carries ``Expires`` (unix
    seconds, as the cover URLs do); V4-style signing carries ``X-Amz-Date``/``X-Obs-Date`` plus
    ``X-*-Expires`` (seconds). Anything else is not guessed.
    """
    expires = cover_url_expiry(url)
    if expires is not None or not url:
        return expires
    params = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    for prefix in ("x-obs-", "x-amz-"):
        date, ttl = params.get(prefix + "date"), params.get(prefix + "expires")
        if date and ttl:
            try:
                start = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
                return start + timedelta(seconds=int(ttl))
            except (ValueError, OverflowError):
                return None
    return None


def md5_base64_to_hex(value: str | None) -> str | None:
    """The hex digest for a ``file_md5`` that is base64 of 16 bytes (24 characters), else None."""
    if not isinstance(value, str) or len(value) != 24:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _opt_int(data: dict[str, Any], key: str, what: str) -> int | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    # The SDK converts with int(); a string of digits or an integral float counts too.
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise MetaStudioInvalidResponseError(f"MetaStudio returned an invalid {what}: {value!r:.40}")


@dataclass(frozen=True)
class AssetFile:
    """One file of an asset (``AssetFileInfo``).

    ``download_url`` is a pre-signed bearer credential valid for 24 hours: it is left out of
    :meth:`__repr__`, :meth:`to_dict` and every log line (only :func:`redact_url` forms are shown).
    """

    file_id: str | None
    file_name: str | None
    category: str | None
    size: int | None
    md5: str | None  # base64 of the 16-byte MD5 digest, as the service sends it (24 characters)
    download_url: str | None = field(default=None, repr=False)
    download_url_expires_at: datetime | None = None
    file_type: str | None = None
    state: str | None = None

    @classmethod
    def from_api(cls, data: Any) -> AssetFile:
        if not isinstance(data, dict):
            raise MetaStudioInvalidResponseError(
                f"MetaStudio returned an asset file that is not a JSON object: {type(data).__name__}"
            )
        url = _opt_str(data, "download_url")
        return cls(
            file_id=_opt_str(data, "file_id"),
            file_name=_opt_str(data, "file_name"),
            category=_opt_str(data, "asset_file_category"),
            size=_opt_int(data, "file_size", "file_size"),
            md5=_opt_str(data, "file_md5"),
            download_url=url,
            download_url_expires_at=signed_url_expiry(url),
            file_type=_opt_str(data, "file_type"),
            state=_opt_str(data, "state"),
        )

    @property
    def md5_hex(self) -> str | None:
        """The MD5 as hex, when ``md5`` is a well-formed base64 digest."""
        return md5_base64_to_hex(self.md5)

    @property
    def label(self) -> str:
        """How errors and logs name the file: its name, category and id, never its URL."""
        return f"{self.file_name or '?'} ({self.category or 'no category'}, file_id={self.file_id})"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values for XCom and trigger events, without the download URL."""
        return {
            "file_id": self.file_id,
            "file_name": self.file_name,
            "category": self.category,
            "size": self.size,
            "md5": self.md5,
            "file_type": self.file_type,
            "state": self.state,
            "download_url_expires_at": _iso(self.download_url_expires_at),
        }

    def __repr__(self) -> str:
        return (
            f"AssetFile(file_name={self.file_name!r}, category={self.category!r}, size={self.size!r}, "
            f"md5={self.md5!r}, download_url={redact_url(self.download_url)!r})"
        )


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


@dataclass(frozen=True)
class DigitalAsset:
    """One asset of the library (``ShowAssetResponse``, or an item of the list call).

    ``state`` keeps the raw ``asset_state``; :attr:`known_state` is the :class:`AssetState` or None
    for a value the contract does not list, which is never usable and never a failure.
    """

    asset_id: str
    state: str
    asset_type: str | None = None
    asset_name: str | None = None
    project_id: str | None = None
    create_time: datetime | None = None
    update_time: datetime | None = None
    fail_type: str | None = None
    block_reason_code: str | None = None
    reason: str | None = None
    tags: tuple[str, ...] = ()
    files: tuple[AssetFile, ...] = ()
    # The X-Request-Id of the answer this view was read from; not part of the asset's identity.
    request_id: str | None = field(default=None, compare=False)

    @classmethod
    def from_api(cls, data: Any) -> DigitalAsset:
        if not isinstance(data, dict):
            raise MetaStudioInvalidResponseError(
                f"MetaStudio returned an asset that is not a JSON object: {type(data).__name__}"
            )
        for key in ("asset_id", "asset_state"):
            if not isinstance(data.get(key), str) or not data.get(key):
                raise MetaStudioInvalidResponseError(f"MetaStudio returned an asset without an {key}")
        files = data.get("files") or []  # the SDK reads a missing list as None
        if not isinstance(files, list):
            raise MetaStudioInvalidResponseError("MetaStudio returned an asset whose files is not a list")
        tags = data.get("tags") or []
        return cls(
            asset_id=data["asset_id"],
            state=data["asset_state"],
            asset_type=_opt_str(data, "asset_type"),
            asset_name=_opt_str(data, "asset_name"),
            project_id=_opt_str(data, "project_id"),
            create_time=parse_time(data.get("create_time"), "create_time"),
            update_time=parse_time(data.get("update_time"), "update_time"),
            fail_type=_opt_str(data, "fail_type"),
            block_reason_code=_opt_str(data, "block_reason_code"),
            reason=_opt_str(data, "reason"),
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            files=tuple(AssetFile.from_api(f) for f in files),
        )

    @property
    def known_state(self) -> AssetState | None:
        return AssetState.parse(self.state)

    @property
    def is_usable(self) -> bool:
        return self.known_state is AssetState.ACTIVED

    @property
    def is_failure(self) -> bool:
        """FAILED, BLOCK or DELETED: the asset will not become usable by waiting."""
        return self.known_state in ASSET_FAILURE_STATES

    def files_of(self, categories: Iterable[str] | None = None) -> list[AssetFile]:
        """The files of the given categories (all files for None), in the service's order."""
        if categories is None:
            return list(self.files)
        wanted = {c.upper() for c in categories}
        return [f for f in self.files if (f.category or "").upper() in wanted]

    def describe(self) -> str:
        """A log-safe one-line summary (no download URL)."""
        detail = " ".join(
            f"{k}={v}"
            for k, v in (
                ("fail_type", self.fail_type),
                ("block_reason_code", self.block_reason_code),
                ("reason", self.reason),
            )
            if v
        )
        return f"asset {self.asset_id} {self.state}" + (f" ({detail})" if detail else "")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values for XCom and trigger events; download URLs are never included."""
        return {
            "asset_id": self.asset_id,
            "state": self.state,
            "asset_type": self.asset_type,
            "asset_name": self.asset_name,
            "project_id": self.project_id,
            "create_time": _iso(self.create_time),
            "update_time": _iso(self.update_time),
            "fail_type": self.fail_type,
            "block_reason_code": self.block_reason_code,
            "reason": self.reason,
            "tags": list(self.tags),
            "files": [f.to_dict() for f in self.files],
        }
