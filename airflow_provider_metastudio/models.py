"""Typed views of the service's answers: job states, the picture-modeling job and its error, and the
helpers they need (lenient RFC 3339 times, a cover URL's expiry, URL signatures redacted for logs).
Digital assets have their own models in :mod:`airflow_provider_metastudio.assets`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_metastudio.exceptions import MetaStudioInvalidResponseError


class JobState(str, Enum):
    """Lifecycle of a picture-modeling job, as documented for the job-details call."""

    WAITING = "WAITING"
    PROCESSING = "PROCESSING"
    PARTIAL_SUCCEED = "PARTIAL_SUCCEED"  # model generated, cover screenshot failed
    SUCCEED = "SUCCEED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @classmethod
    def parse(cls, value: str | None) -> JobState | None:
        """The known state for a raw value, or None for anything the contract does not list."""
        try:
            return cls(value)
        except ValueError:
            return None

    @classmethod
    def is_terminal(cls, value: str | JobState | None) -> bool:
        return cls.parse(value) in TERMINAL_STATES  # type: ignore[arg-type]

    @classmethod
    def is_failure(cls, value: str | JobState | None) -> bool:
        return cls.parse(value) in FAILURE_STATES  # type: ignore[arg-type]

    @classmethod
    def is_success(cls, value: str | JobState | None, *, accept_partial_success: bool = True) -> bool:
        """SUCCEED, and PARTIAL_SUCCEED when accepted; an unknown state is never success."""
        state = cls.parse(value)  # type: ignore[arg-type]
        return state is cls.SUCCEED or (accept_partial_success and state is cls.PARTIAL_SUCCEED)


TERMINAL_STATES = frozenset({JobState.SUCCEED, JobState.PARTIAL_SUCCEED, JobState.FAILED, JobState.CANCELED})
FAILURE_STATES = frozenset({JobState.FAILED, JobState.CANCELED})

_SIGNATURE_RE = re.compile(r"(?i)(?<=[?&])(signature|x-amz-signature|x-obs-signature)=[^&#\s]*")


def redact_url(url: str | None) -> str | None:
    """The URL with the value of its ``Signature`` (or ``X-Amz-Signature``, ``X-Obs-Signature``) query
    parameter replaced, for log lines.

    A pre-signed cover URL is a bearer credential: XCom carries it whole, logs never do.
    """
    if not url:
        return url
    return _SIGNATURE_RE.sub(lambda m: f"{m.group(1)}=***", url)


# RFC 3339 and what lenient writers send (the official SDK hands these strings over unparsed):
# "t" or a space for "T", a fraction of any length (cut to microseconds), "z", an offset with or
# without its colon or hours only, no offset (UTC), no seconds or no time. Python 3.10's
# datetime.fromisoformat rejects several of these, so the package parses them itself.
_TIME_RE = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[Tt ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?)?"
    r"\s*(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<off_hours>\d{2})(?::?(?P<off_minutes>\d{2}))?)?",
    re.ASCII,
)


def _datetime(match: re.Match[str]) -> datetime:
    g = match.groupdict()
    tz = timezone.utc
    if g["sign"]:
        offset = timedelta(hours=int(g["off_hours"]), minutes=int(g["off_minutes"] or 0))
        tz = timezone(-offset if g["sign"] == "-" else offset)
    second = int(g["second"] or 0)
    parsed = datetime(
        int(g["year"]),
        int(g["month"]),
        int(g["day"]),
        int(g["hour"] or 0),
        int(g["minute"] or 0),
        min(second, 59),
        int((g["fraction"] or "")[:6].ljust(6, "0")),
        tzinfo=tz,
    )
    return parsed + timedelta(seconds=1) if second == 60 else parsed  # a leap second


def parse_time(value: Any, field: str) -> datetime | None:
    """Parse an RFC 3339 time (``2022-11-07T11:43:08Z``, with or without fraction/offset) to an aware
    datetime that keeps the given offset; a time without an offset is UTC."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise MetaStudioInvalidResponseError(f"MetaStudio returned a non-string {field}: {value!r:.80}")
    match = _TIME_RE.fullmatch(value.strip())
    try:
        if match is None:
            raise ValueError(value)
        return _datetime(match)
    except (ValueError, OverflowError):  # also a valid shape with an impossible value (month 13)
        raise MetaStudioInvalidResponseError(
            f"MetaStudio returned an unparseable {field}: {value!r:.80}"
        ) from None


def cover_url_expiry(url: str | None) -> datetime | None:
    """When a pre-signed cover URL stops working, from its ``Expires`` (unix seconds) parameter."""
    if not url:
        return None
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key.lower() == "expires":
            try:
                return datetime.fromtimestamp(int(value), tz=timezone.utc)
            except (ValueError, OverflowError, OSError):
                return None
    return None


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


@dataclass(frozen=True)
class ErrorInfo:
    error_code: str | None
    error_msg: str | None


@dataclass(frozen=True)
class PictureModelingJob:
    """One picture-modeling job as the job-details (or list) call describes it.

    ``state`` keeps the raw string the service sent, so a state the contract does not know stays
    visible; :attr:`known_state` is the :class:`JobState` or None.
    """

    job_id: str
    state: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    error_info: ErrorInfo | None = None
    model_asset_id: str | None = None
    name: str | None = None
    style_id: str | None = None
    model_cover_url: str | None = None
    model_cover_url_expires_at: datetime | None = None
    # The X-Request-Id of the answer this view was read from (for logs and support); not part of the
    # job's identity, so two reads of the same job stay equal.
    request_id: str | None = field(default=None, compare=False)

    @classmethod
    def from_api(cls, data: Any) -> PictureModelingJob:
        """Build from a PictureModelingInfo object; missing required fields raise a clear error."""
        if not isinstance(data, dict):
            raise MetaStudioInvalidResponseError(
                f"MetaStudio returned a job that is not a JSON object: {type(data).__name__}"
            )
        for key in ("job_id", "state"):
            if not isinstance(data.get(key), str) or not data.get(key):
                raise MetaStudioInvalidResponseError(f"MetaStudio returned a job without a {key}")
        raw_error = data.get("error_info")
        error_info = None
        if isinstance(raw_error, dict) and (raw_error.get("error_code") or raw_error.get("error_msg")):
            error_info = ErrorInfo(raw_error.get("error_code"), raw_error.get("error_msg"))
        cover = data.get("model_cover_url") or None
        return cls(
            job_id=data["job_id"],
            state=data["state"],
            start_time=parse_time(data.get("start_time"), "start_time"),
            end_time=parse_time(data.get("end_time"), "end_time"),
            error_info=error_info,
            model_asset_id=data.get("model_asset_id") or None,
            name=data.get("name"),
            style_id=data.get("style_id"),
            model_cover_url=cover,
            model_cover_url_expires_at=cover_url_expiry(cover),
        )

    @property
    def known_state(self) -> JobState | None:
        return JobState.parse(self.state)

    @property
    def is_terminal(self) -> bool:
        return JobState.is_terminal(self.state)

    @property
    def is_failure(self) -> bool:
        return JobState.is_failure(self.state)

    def is_success(self, accept_partial_success: bool = True) -> bool:
        return JobState.is_success(self.state, accept_partial_success=accept_partial_success)

    @property
    def error_code(self) -> str | None:
        return self.error_info.error_code if self.error_info else None

    @property
    def error_msg(self) -> str | None:
        return self.error_info.error_msg if self.error_info else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (times as RFC 3339 strings), for XCom; ``request_id`` is left out."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "error_info": (
                {"error_code": self.error_code, "error_msg": self.error_msg} if self.error_info else None
            ),
            "model_asset_id": self.model_asset_id,
            "name": self.name,
            "style_id": self.style_id,
            "model_cover_url": self.model_cover_url,
            "model_cover_url_expires_at": _iso(self.model_cover_url_expires_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PictureModelingJob:
        """Inverse of :meth:`to_dict` (a job pulled from XCom back into a job)."""
        return cls.from_api(data)

    def describe(self) -> str:
        """A log-safe one-line summary: the cover URL's signature is redacted."""
        return (
            f"job {self.job_id} {self.state} asset={self.model_asset_id} "
            f"cover={redact_url(self.model_cover_url)}"
        )

    def __repr__(self) -> str:  # a repr can end up in a log: never the cover URL's signature
        return (
            f"PictureModelingJob(job_id={self.job_id!r}, state={self.state!r}, "
            f"model_asset_id={self.model_asset_id!r}, model_cover_url={redact_url(self.model_cover_url)!r})"
        )
