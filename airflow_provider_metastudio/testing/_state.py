"""The emulated service's state and rules, kept apart from HTTP plumbing.

One :class:`EmulatorState` holds jobs, IAM tokens, quota buckets, fault plans and counters
behind a single lock. Job states are never advanced by a background thread: each is computed
from the emulated clock when it is read, so ``clock.advance()`` moves every job at once and a
test never waits for a scheduler.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from airflow_provider_metastudio.testing import _signing
from airflow_provider_metastudio.testing._config import (
    ASSET_CALLS,
    CALL_COVER,
    CALL_CREATE,
    CALL_CREATE_BY_URL,
    CALL_IAM,
    DEFAULT_GLOBAL_RATES,
    DEFAULT_RATES,
    FAULT_KINDS,
    JOB_STATES,
    SERVICE_CALLS,
    STYLE_IDS,
    TERMINAL_STATES,
    Credentials,
    EmulatorConfig,
    FaultKind,
)
from airflow_provider_metastudio.testing._media import (
    ImageError,
    ImageInfo,
    MultipartError,
    cover_png,
    inspect_image,
    parse_multipart,
)

JSON_TYPE = "application/json"
MAX_NAME_LENGTH = 256
MAX_URL_LENGTH = 2048
OBS_ACCESS_KEY = "EMULATOROBSACCESSKEY"

# No published MetaStudio error code for "this picture-modeling job does not exist" could be found:
# the service's error table lists MSS.10001001 "Asset not found" for assets only. Following the
# project's contract notes, an unknown job is 404 with the generic invalid-parameter code.
NOT_FOUND_CODE = "MSS.00000003"
NOT_FOUND_MSG = "Job not found"

_STATE_WORD = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

# The clocks have a datetime() method; annotations inside them use this alias.
DateTime = datetime
# (state, start_time, end_time, update_time) of a job, in emulated unix seconds.
Timeline = tuple[str, float | None, float | None, float]


# --------------------------------------------------------------------------------------------
# time
# --------------------------------------------------------------------------------------------


def _epoch(value: datetime | float | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value)


def rfc3339(seconds: float | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds), as the service writes job times."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(math.floor(seconds), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(seconds: float) -> str:
    """IAM's form: ``2026-11-26T22:00:00.000000Z``."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(value: str) -> float:
    """Parse an RFC 3339 date-time (``Z`` or offset, optional fraction) to unix seconds."""
    text = value.strip()
    if len(text) < 20 or text[10] not in "Tt":
        raise ValueError(value)
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(value)
    return parsed.timestamp()


class EmulatorClock:
    """Emulated time: starts at real now (or ``start``) and runs ``time_scale`` times faster.

    Job lifecycles, quota windows, ``Retry-After``, cover URL expiry and token expiry all use it.

    :param time_scale: emulated seconds per real second.
    :param start: emulated time at creation (datetime or unix seconds).
    """

    def __init__(self, time_scale: float = 1.0, start: DateTime | float | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = float(time_scale)
        self._lock = threading.Lock()
        self._real0 = time.monotonic()
        self._start = _epoch(start, time.time())
        self._offset = 0.0

    def now(self) -> float:
        """Emulated unix seconds."""
        with self._lock:
            return self._start + (time.monotonic() - self._real0) * self.time_scale + self._offset

    def datetime(self) -> DateTime:
        """Emulated now as an aware UTC datetime."""
        return DateTime.fromtimestamp(self.now(), timezone.utc)

    def advance(self, seconds: float) -> float:
        """Jump forward by ``seconds`` of emulated time; return the new emulated now.

        :param seconds: how far to jump (must not be negative: jobs never go back in time).
        """
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += float(seconds)
        return self.now()

    def to_real(self, emulated_seconds: float) -> float:
        """How many real seconds ``emulated_seconds`` last."""
        return emulated_seconds / self.time_scale


class AuthClock:
    """The gateway's clock for ``X-Sdk-Date`` checks: real wall time plus an offset, or fixed.

    It is not the scaled job clock: a client signs with its real clock, so a time-scaled
    emulator would otherwise reject every signature.
    """

    def __init__(self, start: DateTime | float | None = None) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._fixed: float | None = None
        if start is not None:
            self.set(start)

    def now(self) -> float:
        with self._lock:
            return self._fixed if self._fixed is not None else time.time() + self._offset

    def datetime(self) -> DateTime:
        return DateTime.fromtimestamp(self.now(), timezone.utc)

    def set(self, when: DateTime | float, *, frozen: bool = False) -> None:
        """Make the auth clock read ``when`` now; it keeps ticking unless ``frozen``.

        :param when: the time to show (aware datetime or unix seconds).
        :param frozen: stop the clock at ``when``.
        """
        target = _epoch(when, time.time())
        with self._lock:
            if frozen:
                self._fixed = target
            else:
                self._fixed = None
                self._offset = target - time.time()

    def shift(self, seconds: float) -> None:
        """Move the auth clock by ``seconds`` (either direction)."""
        with self._lock:
            if self._fixed is not None:
                self._fixed += seconds
            else:
                self._offset += seconds

    def reset(self) -> None:
        """Back to real wall time."""
        with self._lock:
            self._fixed = None
            self._offset = 0.0

    @property
    def offset(self) -> float:
        with self._lock:
            return (self._fixed - time.time()) if self._fixed is not None else self._offset


def format_retry_after(wait_emulated: float, time_scale: float) -> str:
    """``Retry-After`` in REAL seconds: an integer (ceil, at least 1) at scale 1, a decimal string
    such as ``"0.017"`` when time is scaled (a whole second would be far too long to wait)."""
    real = max(wait_emulated, 0.0) / time_scale
    if time_scale == 1.0:
        return str(max(1, math.ceil(real)))
    return f"{max(real, 0.001):.3f}"


# --------------------------------------------------------------------------------------------
# replies
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One picture-modeling job; its state is derived from the clock (see :meth:`timeline`)."""

    job_id: str
    seq: int
    project_id: str
    name: str
    style_id: str
    model_asset_id: str
    create_time: float
    waiting_seconds: float
    processing_seconds: float
    outcome: str
    error_info: dict[str, str] | None
    cover_key: str
    source: str
    picture_url: str | None = None
    notify_url: str | None = None
    image: ImageInfo | None = None
    image_sha256: str | None = None
    forced_state: str | None = None
    forced_at: float | None = None

    def timeline(self, now: float, *, lag: float = 0.0) -> Timeline:
        """``(state, start_time, end_time, update_time)`` at emulated time ``now``.

        :param lag: a read replica's delay: a job that ended less than ``lag`` seconds ago still
            shows what it was just before it ended.
        """
        view = self._timeline(now)
        state, _, end, _ = view
        if lag > 0 and end is not None and state in TERMINAL_STATES and now < end + lag:
            # The natural lifecycle just before the end: for a forced end, what it interrupted.
            return self._timeline(end - 1e-6, natural=True)
        return view

    def _timeline(self, now: float, *, natural: bool = False) -> Timeline:
        start_at = self.create_time + self.waiting_seconds
        end_at = start_at + self.processing_seconds
        if not natural and self.forced_state is not None and self.forced_at is not None:
            at = self.forced_at
            state = self.forced_state
            started = start_at if at >= start_at else None
            if state == "WAITING":
                return state, None, None, at
            if state == "CANCELED":
                return state, started, at, at
            if state in TERMINAL_STATES:
                return state, started if started is not None else at, at, at
            # PROCESSING, or a state the contract does not list (to test clients' handling of
            # unknown values): started, not ended.
            return state, started if started is not None else at, None, at
        if now < start_at:
            return "WAITING", None, None, self.create_time
        if now < end_at:
            return "PROCESSING", start_at, None, start_at
        return self.outcome, start_at, end_at, end_at


@dataclass
class Token:
    value: str
    project_id: str
    project_name: str
    user: str
    domain: str
    issued_at: float
    expires_at: float
    revoked: bool = False


@dataclass
class Principal:
    """Who a request was authenticated as."""

    project_id: str
    method: str  # "aksk" or "token"
    ak: str | None = None


@dataclass
class OneShotFault:
    call: str  # a call name, or "*" for any service call
    kind: FaultKind
    remaining: int
    delay: float | None = None
    status: int | None = None
    retry_after: float | None = None
    size: int | None = None


@dataclass
class Outage:
    call: str  # a call name, or "*" for any service call
    kind: FaultKind
    until: float  # time.monotonic() when normal service resumes


@dataclass(frozen=True)
class ListQuirks:
    """How the list call may differ from the details call (unconfirmed behaviours of the service)."""

    ignore_sort: bool = False
    visibility_delay: float = 0.0
    stale_update_time: bool = False


@dataclass(frozen=True)
class FaultDecision:
    """The fault that applies to one request."""

    kind: FaultKind
    status: int | None = None
    delay: float = 0.0
    retry_after: float = 1.0
    size: int = 0
    source: str = "random"


# --------------------------------------------------------------------------------------------
# the state
# --------------------------------------------------------------------------------------------


class EmulatorState:
    """Everything the emulated service knows; every public method is thread-safe.

    :param config: the emulator's configuration (copied values; later changes go through the
        setter methods).
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.clock = EmulatorClock(config.time_scale, config.start_time)
        self.auth_clock = AuthClock(config.auth_time)
        self.base_url = ""
        self.credentials: dict[str, Credentials] = {c.ak: c for c in config.all_credentials()}
        self.projects: dict[str, str] = {config.project_name: config.project_id}
        for cred in self.credentials.values():
            self.projects.setdefault(cred.project_id, cred.project_id)
        self.obs_sk = secrets.token_hex(20)
        self._jobs: dict[str, Job] = {}
        self._seq = 0
        self._tokens: dict[str, Token] = {}
        self._outcomes_by_name: dict[str, str] = dict(config.outcomes_by_name)
        self._outcome_weights: dict[str, float] = dict(config.outcome_weights)
        # quotas
        self.quotas_enabled = config.quotas_enabled
        # Given rates are merged over the documented defaults; 0 (or None) lifts a call's limit.
        self.rates: dict[str, float] = {
            k: float(v) for k, v in {**DEFAULT_RATES, **config.rates}.items() if v
        }
        self.global_rates: dict[str, float] = {
            k: float(v) for k, v in {**DEFAULT_GLOBAL_RATES, **config.global_rates}.items() if v
        }
        self.burst = config.burst
        self.quota_tolerance = config.quota_tolerance
        self._tat: dict[tuple[str, str], float] = {}
        # faults
        self._fault_rng = random.Random(f"metastudio-emulator-faults:{config.seed}")
        self.fault_rates: dict[str, float] = {k: v for k, v in config.fault_rates().items() if v > 0}
        self.fault_calls: set[str] = set(config.fault_calls)
        self.delay_seconds = config.delay_seconds
        self._one_shots: list[OneShotFault] = []
        self._outages: list[Outage] = []
        self._job_errors: dict[str, tuple[int, str, str]] = {}
        self._list_quirks = ListQuirks()
        # counters
        self._log: deque[dict[str, Any]] = deque(maxlen=config.max_log_entries)
        self._requests: Counter[str] = Counter()
        self._statuses: Counter[tuple[str, int]] = Counter()
        self._faults: Counter[tuple[str, str]] = Counter()
        self._paths: Counter[str] = Counter()
        self._jobs_created: Counter[str] = Counter()
        self._tokens_issued = 0
        # the asset library (issue #14): one model asset per job, derived from the job's timeline
        from airflow_provider_metastudio.testing._assets import AssetLibrary

        self.assets = AssetLibrary(self)

    # ---------------------------------------------------------------- time

    def now(self) -> float:
        return self.clock.now()

    def retry_after(self, wait_emulated: float) -> str:
        return format_retry_after(wait_emulated, self.clock.time_scale)

    # ---------------------------------------------------------------- authentication

    def authenticate(
        self,
        *,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
        path_project: str,
    ) -> Principal | Reply:
        """Check AK/SK or token authentication like the API gateway; a :class:`Reply` on failure.

        :param headers: lower-cased name -> value as sent (first occurrence of a name).
        :param path_project: the project id from the URL.
        """
        authorization = headers.get("authorization")
        token = headers.get("x-auth-token")
        if authorization is not None:
            return self._authenticate_aksk(
                method, raw_path, raw_query, headers, body, authorization, path_project
            )
        if token is not None:
            return self._authenticate_token(token.strip(), path_project)
        return gateway_auth_error("missing Authorization (AK/SK) or X-Auth-Token header")

    def _authenticate_aksk(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
        authorization: str,
        path_project: str,
    ) -> Principal | Reply:
        try:
            parsed = _signing.parse_authorization(authorization)
            cred = self.credentials.get(parsed.ak)
            if cred is None:
                raise _signing.SignatureError("unknown access key (AK)")
            signed_at = _signing.parse_sdk_date(headers.get("x-sdk-date"))
            skew = abs(self.auth_clock.now() - signed_at.timestamp())
            if skew > self.config.clock_skew_seconds:
                raise _signing.SignatureError(
                    f"X-Sdk-Date is {skew:.0f} s away from the gateway clock "
                    f"(at most {self.config.clock_skew_seconds:.0f} s allowed)"
                )
            _signing.verify_signature(
                method=method,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=headers,
                body=body,
                authorization=parsed,
                sk=cred.sk,
            )
            if cred.security_token is not None:
                sent = headers.get("x-security-token")
                if sent is None:
                    raise _signing.SignatureError("temporary credentials need the X-Security-Token header")
                if "x-security-token" not in parsed.signed_headers:
                    raise _signing.SignatureError("X-Security-Token must be among the SignedHeaders")
                if not hmac.compare_digest(sent.strip().encode(), cred.security_token.encode()):
                    raise _signing.SignatureError("X-Security-Token does not belong to this access key")
            project_header = headers.get("x-project-id")
            if project_header is None:
                raise _signing.SignatureError("X-Project-Id header is required with AK/SK authentication")
            if project_header.strip() != cred.project_id:
                raise _signing.SignatureError("X-Project-Id is not the project of this access key")
            if path_project != cred.project_id:
                raise _signing.SignatureError(
                    "the project id in the URL is not the project of this access key"
                )
        except _signing.SignatureError as e:
            return gateway_auth_error(str(e))
        return Principal(cred.project_id, "aksk", cred.ak)

    def _authenticate_token(self, value: str, path_project: str) -> Principal | Reply:
        with self.lock:
            token = self._tokens.get(value)
            if token is None or token.revoked or self.now() >= token.expires_at:
                return gateway_auth_error("token expired or invalid")
            if token.project_id != path_project:
                return gateway_auth_error("the token's project does not match the project id in the URL")
            return Principal(token.project_id, "token")

    # ---------------------------------------------------------------- quotas

    def throttle(self, call: str, tenant: str) -> Reply | None:
        """Apply the per-tenant and all-tenants rates (GCRA, emulated clock); 429 when over."""
        if not self.quotas_enabled:
            return None
        with self.lock:
            now = self.now()
            checks: list[tuple[tuple[str, str], float, str]] = []
            rate = self.rates.get(call)
            if rate:
                checks.append(((tenant, call), rate, "user"))
            global_rate = self.global_rates.get(call)
            if global_rate:
                checks.append((("*", call), global_rate, "api"))
            waits: list[tuple[float, float, str]] = []
            updates: list[tuple[tuple[str, str], float]] = []
            for key, limit, scope in checks:
                interval = 1.0 / limit
                tolerance = (self.burst - 1.0) * interval + self.quota_tolerance
                tat = self._tat.get(key, now)
                if tat - tolerance > now:
                    waits.append((tat - tolerance - now, limit, scope))
                else:
                    updates.append((key, max(tat, now) + interval))
            if not waits:
                for key, tat in updates:
                    self._tat[key] = tat
                return None
            wait, limit, scope = max(waits)
        return error_reply(
            429,
            "APIGW.0308",
            f"The throttling threshold has been reached: policy {scope} over ratelimit, "
            f"limit:{limit:g}, time:1 second",
            {"Retry-After": self.retry_after(wait)},
        )

    def set_quotas(
        self,
        *,
        enabled: bool | None = None,
        rates: Mapping[str, float] | None = None,
        global_rates: Mapping[str, float] | None = None,
        burst: float | None = None,
        tolerance: float | None = None,
    ) -> dict[str, Any]:
        """Change the quota settings at run time; given rates are merged per call."""
        with self.lock:
            if enabled is not None:
                self.quotas_enabled = bool(enabled)
            for target, given in ((self.rates, rates), (self.global_rates, global_rates)):
                for call, value in (given or {}).items():
                    if value is None or float(value) <= 0:
                        target.pop(call, None)
                    else:
                        target[call] = float(value)
            if burst is not None:
                if burst < 1:
                    raise ValueError("burst must be at least 1")
                self.burst = float(burst)
            if tolerance is not None:
                self.quota_tolerance = max(0.0, float(tolerance))
            self._tat.clear()
            return self.quota_settings()

    def quota_settings(self) -> dict[str, Any]:
        with self.lock:
            return {
                "enabled": self.quotas_enabled,
                "rates": dict(self.rates),
                "global_rates": dict(self.global_rates),
                "burst": self.burst,
                "tolerance": self.quota_tolerance,
            }

    # ---------------------------------------------------------------- faults

    def pick_fault(self, call: str) -> FaultDecision | None:
        """The fault for the next request of ``call``: an outage first, then a queued one-shot, else
        a seeded draw. One-shots wait out an outage: they are not consumed by its requests."""
        with self.lock:
            clock = time.monotonic()
            self._outages = [o for o in self._outages if o.until > clock]
            for outage in self._outages:
                if _matches(outage.call, call):
                    return self._decision(outage.kind, source="outage")
            for index, shot in enumerate(self._one_shots):
                if _matches(shot.call, call):
                    shot.remaining -= 1
                    if shot.remaining <= 0:
                        del self._one_shots[index]
                    return self._decision(
                        shot.kind,
                        status=shot.status,
                        delay=shot.delay,
                        retry_after=shot.retry_after,
                        size=shot.size,
                        source="one-shot",
                    )
            if call not in self.fault_calls or not self.fault_rates:
                return None
            draw = self._fault_rng.random()
            acc = 0.0
            for kind in FaultKind:
                acc += self.fault_rates.get(kind.value, 0.0)
                if draw < acc:
                    status = self._fault_rng.choice((502, 503, 504)) if kind is FaultKind.HTML else None
                    return FaultDecision(kind, status, self.delay_seconds, 1.0, self.config.huge_body_bytes)
            return None

    def _decision(
        self,
        kind: FaultKind,
        *,
        status: int | None = None,
        delay: float | None = None,
        retry_after: float | None = None,
        size: int | None = None,
        source: str,
    ) -> FaultDecision:
        """A fault of ``kind``, settings not given taken from the emulator's defaults."""
        if kind is FaultKind.HTML and status is None:
            status = self._fault_rng.choice((502, 503, 504))
        return FaultDecision(
            kind,
            status,
            self.delay_seconds if delay is None else delay,
            1.0 if retry_after is None else retry_after,
            self.config.huge_body_bytes if size is None else size,
            source,
        )

    def inject(
        self,
        call: str,
        kind: str | FaultKind,
        count: int = 1,
        *,
        delay: float | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        size: int | None = None,
    ) -> None:
        """Queue a one-shot fault for the next ``count`` requests of ``call`` (``"*"``: any service call)."""
        fault_kind = FaultKind.parse(kind)
        if count < 1:
            raise ValueError("count must be at least 1")
        _check_call(call)
        if status is not None and fault_kind is FaultKind.HTML and status not in (502, 503, 504):
            raise ValueError("an html fault answers 502, 503 or 504")
        with self.lock:
            self._one_shots.append(
                OneShotFault(call, fault_kind, int(count), delay, status, retry_after, size)
            )

    def set_faults(
        self,
        rates: Mapping[str, float] | None = None,
        *,
        delay_seconds: float | None = None,
        calls: Iterable[str] | None = None,
        replace: bool = True,
    ) -> dict[str, Any]:
        """Set the probabilistic fault shares (``kind -> share``, total at most 1)."""
        with self.lock:
            new = {} if replace else dict(self.fault_rates)
            for kind, share in (rates or {}).items():
                kind_value = FaultKind.parse(kind).value
                share = float(share)
                if not 0.0 <= share <= 1.0:
                    raise ValueError(f"fault share for {kind_value!r} must be between 0 and 1")
                if share > 0:
                    new[kind_value] = share
                else:
                    new.pop(kind_value, None)
            if sum(new.values()) > 1.0 + 1e-9:
                raise ValueError("fault shares add up to more than 1")
            self.fault_rates = new
            if delay_seconds is not None:
                self.delay_seconds = max(0.0, float(delay_seconds))
            if calls is not None:
                self.fault_calls = set(calls)
            return self.fault_settings()

    def outage(self, seconds: float, *, call: str = "*", kind: str | FaultKind = "503") -> None:
        """Answer every request of ``call`` (``"*"``: any service call) with fault ``kind`` for the
        next ``seconds`` REAL seconds; then normal service resumes."""
        fault_kind = FaultKind.parse(kind)
        _check_call(call)
        if not float(seconds) > 0:
            raise ValueError("seconds must be positive")
        with self.lock:
            self._outages.append(Outage(call, fault_kind, time.monotonic() + float(seconds)))

    def set_job_error(self, job_id: str, status: int, error_code: str, error_msg: str | None = None) -> None:
        """Make the details call for ``job_id`` answer ``status`` with this error body (lists are
        unaffected); the message names the job by default."""
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if not isinstance(error_code, str) or not error_code:
            raise ValueError("error_code is required")
        message = error_msg if error_msg is not None else f"Request for job {job_id} failed"
        with self.lock:
            self._job_errors[job_id] = (status, error_code, message)

    def clear_job_error(self, job_id: str) -> None:
        """The details call for ``job_id`` answers normally again."""
        with self.lock:
            self._job_errors.pop(job_id, None)

    def set_list_quirks(
        self, *, ignore_sort: bool = False, visibility_delay: float = 0.0, stale_update_time: bool = False
    ) -> dict[str, Any]:
        """Set every list quirk at once (the defaults switch them off); see :class:`ListQuirks`."""
        if not float(visibility_delay) >= 0:
            raise ValueError("visibility_delay must not be negative")
        with self.lock:
            self._list_quirks = ListQuirks(
                bool(ignore_sort), float(visibility_delay), bool(stale_update_time)
            )
            return self.list_quirks()

    def list_quirks(self) -> dict[str, Any]:
        with self.lock:
            return asdict(self._list_quirks)

    def clear_faults(self) -> None:
        """Drop fault shares, one-shots, outages, per-job errors and list quirks."""
        with self.lock:
            self.fault_rates = {}
            self._one_shots.clear()
            self._outages.clear()
            self._job_errors.clear()
            self._list_quirks = ListQuirks()

    def fault_settings(self) -> dict[str, Any]:
        with self.lock:
            clock = time.monotonic()
            return {
                "rates": dict(self.fault_rates),
                "delay_seconds": self.delay_seconds,
                "calls": sorted(self.fault_calls),
                "one_shots": [
                    {
                        "call": s.call,
                        "kind": s.kind.value,
                        "remaining": s.remaining,
                        "delay": s.delay,
                        "status": s.status,
                        "retry_after": s.retry_after,
                        "size": s.size,
                    }
                    for s in self._one_shots
                ],
                "outages": [
                    {"call": o.call, "kind": o.kind.value, "remaining_seconds": round(o.until - clock, 3)}
                    for o in self._outages
                    if o.until > clock
                ],
                "job_errors": {
                    job_id: {"status": status, "error_code": code, "error_msg": msg}
                    for job_id, (status, code, msg) in self._job_errors.items()
                },
                "list_quirks": self.list_quirks(),
                "kinds": list(FAULT_KINDS),
            }

    def fault_reply(self, fault: FaultDecision) -> Reply:
        """The answer of a short-circuit fault (not ``drop``, which sends nothing)."""
        if fault.kind is FaultKind.HTTP_500:
            return error_reply(500, "MSS.00000004", "Internal Error")
        if fault.kind is FaultKind.HTTP_429:
            return error_reply(
                429,
                "APIGW.0308",
                "The throttling threshold has been reached: policy user over ratelimit (injected)",
                {"Retry-After": self.retry_after(fault.retry_after)},
            )
        if fault.kind in (FaultKind.HTTP_502, FaultKind.HTTP_503, FaultKind.HTTP_504):
            return html_error_page(int(fault.kind.value))
        return html_error_page(fault.status or 502)

    # ---------------------------------------------------------------- counters

    def record(
        self,
        *,
        method: str,
        target: str,
        path: str,
        call: str,
        status: int,
        project_id: str | None,
        request_id: str | None,
        fault: FaultDecision | None,
        started: float,
    ) -> None:
        entry = {
            "time": time.time(),
            "emulated_time": self.now(),
            "method": method,
            "path": target,
            "call": call,
            "status": status,
            "project_id": project_id,
            "request_id": request_id,
            "fault": fault.kind.value if fault else None,
            "duration": round(time.monotonic() - started, 6),
        }
        with self.lock:
            self._log.append(entry)
            self._requests[call] += 1
            self._statuses[(call, status)] += 1
            self._paths[f"{method} {path}"] += 1

    def record_fault(self, call: str, fault: FaultDecision) -> None:
        with self.lock:
            self._faults[(call, fault.kind.value)] += 1

    def counters(self) -> dict[str, Any]:
        """A JSON-able snapshot of every counter."""
        with self.lock:
            statuses: dict[str, dict[str, int]] = {}
            for (call, status), n in self._statuses.items():
                statuses.setdefault(call, {})[str(status)] = n
            faults: dict[str, int] = {}
            faults_by_call: dict[str, dict[str, int]] = {}
            for (call, kind), n in self._faults.items():
                faults[kind] = faults.get(kind, 0) + n
                faults_by_call.setdefault(call, {})[kind] = n
            throttled = {call: n for (call, status), n in self._statuses.items() if status == 429 and n}
            return {
                "total": sum(self._requests.values()),
                "requests": dict(self._requests),
                "statuses": statuses,
                "throttled": throttled,
                "throttled_total": sum(throttled.values()),
                "faults": faults,
                "faults_by_call": faults_by_call,
                "faults_total": sum(faults.values()),
                "jobs_created": sum(self._jobs_created.values()),
                "jobs_created_by_call": dict(self._jobs_created),
                "tokens_issued": self._tokens_issued,
                "paths": dict(self._paths),
            }

    def request_log(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(e) for e in self._log]

    def reset_counters(self) -> None:
        with self.lock:
            self._log.clear()
            self._requests.clear()
            self._statuses.clear()
            self._faults.clear()
            self._paths.clear()
            self._jobs_created.clear()
            self._tokens_issued = 0

    # ---------------------------------------------------------------- jobs

    def _pick_outcome(self, name: str, rng: random.Random) -> str:
        for pattern, state in self._outcomes_by_name.items():
            if fnmatch.fnmatchcase(name, pattern):
                return state
        weights = self._outcome_weights or {"SUCCEED": 1.0}
        states = sorted(weights)  # sorted: the draw must not depend on dict insertion order
        return rng.choices(states, weights=[weights[s] for s in states])[0]

    def new_job(
        self,
        *,
        project_id: str,
        name: str,
        style_id: str,
        source: str,
        outcome: str | None = None,
        waiting_seconds: float | None = None,
        processing_seconds: float | None = None,
        error_code: str | None = None,
        error_msg: str | None = None,
        job_id: str | None = None,
        picture_url: str | None = None,
        notify_url: str | None = None,
        image: ImageInfo | None = None,
        image_sha256: str | None = None,
    ) -> Job:
        """Create a job. Outcome: ``outcome`` if given, else the first matching name pattern,
        else a draw from the outcome weights; durations get their seeded jitter."""
        if outcome is not None and outcome not in TERMINAL_STATES:
            raise ValueError(f"outcome {outcome!r} is not one of {', '.join(TERMINAL_STATES)}")
        with self.lock:
            if job_id is not None and job_id in self._jobs:
                raise ValueError(f"job {job_id!r} already exists")
            self._seq += 1
            seq = self._seq
            # One RNG per job, seeded by (seed, sequence): the n-th job of a run always gets the
            # same outcome and durations, whatever other requests were interleaved.
            rng = random.Random(f"metastudio-emulator-job:{self.config.seed}:{seq}")
            drawn_outcome = self._pick_outcome(name, rng)
            wait_jitter = rng.uniform(0.0, self.config.waiting_jitter) if self.config.waiting_jitter else 0.0
            proc_jitter = (
                rng.uniform(0.0, self.config.processing_jitter) if self.config.processing_jitter else 0.0
            )
            failure = (
                rng.choice(list(self.config.failure_errors))
                if self.config.failure_errors
                else (
                    "MSS.00000009",
                    "Picture modeling failed",
                )
            )
            final = outcome or drawn_outcome
            error_info = None
            if final == "FAILED" or error_code or error_msg:
                error_info = {"error_code": error_code or failure[0], "error_msg": error_msg or failure[1]}
            job = Job(
                job_id=job_id or f"{uuid.uuid4()}_SMS",
                seq=seq,
                project_id=project_id,
                name=name,
                style_id=style_id,
                model_asset_id=uuid.uuid4().hex,
                create_time=self.now(),
                waiting_seconds=(self.config.waiting_seconds + wait_jitter)
                if waiting_seconds is None
                else float(waiting_seconds),
                processing_seconds=(self.config.processing_seconds + proc_jitter)
                if processing_seconds is None
                else float(processing_seconds),
                outcome=final,
                error_info=error_info,
                cover_key=secrets.token_hex(16),
                source=source,
                picture_url=picture_url,
                notify_url=notify_url,
                image=image,
                image_sha256=image_sha256,
            )
            if job.waiting_seconds < 0 or job.processing_seconds < 0:
                raise ValueError("durations must not be negative")
            self._jobs[job.job_id] = job
            if source in (CALL_CREATE, CALL_CREATE_BY_URL):
                self._jobs_created[source] += 1
            return job

    def job(self, job_id: str) -> Job:
        with self.lock:
            try:
                return self._jobs[job_id]
            except KeyError:
                raise KeyError(f"no job {job_id!r}") from None

    def jobs(self) -> list[Job]:
        with self.lock:
            return list(self._jobs.values())

    def delete_job(self, job_id: str) -> None:
        """Make a job vanish: the details call answers as for an unknown job, lists omit it.

        :raises KeyError: no such job.
        """
        with self.lock:
            self.job(job_id)
            del self._jobs[job_id]

    def force_state(
        self, job_id: str, state: str, *, error_code: str | None = None, error_msg: str | None = None
    ) -> Job:
        """Pin a job to ``state`` from now on (e.g. CANCELED); the lifecycle no longer moves it.

        Any upper-case word is accepted, also one the contract does not list (e.g. ``ARCHIVING``),
        so a client's handling of unknown states can be tested; it shows as started, not ended.
        """
        if not isinstance(state, str) or not _STATE_WORD.fullmatch(state):
            raise ValueError(f"state {state!r} must be an upper-case word such as {', '.join(JOB_STATES)}")
        with self.lock:
            job = self.job(job_id)
            job.forced_state = state
            job.forced_at = self.now()
            if error_code or error_msg:
                job.error_info = {
                    "error_code": error_code or "MSS.00000009",
                    "error_msg": error_msg or "Picture modeling failed",
                }
            elif state == "FAILED" and job.error_info is None:
                code, msg = (
                    list(self.config.failure_errors) or [("MSS.00000009", "Picture modeling failed")]
                )[0]
                job.error_info = {"error_code": code, "error_msg": msg}
            return job

    def set_outcome(self, pattern: str, state: str | None) -> None:
        """Map jobs whose name matches ``pattern`` (fnmatch) to ``state``; ``None`` removes it."""
        with self.lock:
            if state is None:
                self._outcomes_by_name.pop(pattern, None)
                return
            if state not in TERMINAL_STATES:
                raise ValueError(f"outcome {state!r} is not one of {', '.join(TERMINAL_STATES)}")
            self._outcomes_by_name[pattern] = state

    def set_outcome_weights(self, weights: Mapping[str, float]) -> None:
        for state, weight in weights.items():
            if state not in TERMINAL_STATES or float(weight) < 0:
                raise ValueError(f"bad outcome weight {state!r}: {weight!r}")
        if sum(float(w) for w in weights.values()) <= 0:
            raise ValueError("outcome weights must have a positive total")
        with self.lock:
            self._outcome_weights = {k: float(v) for k, v in weights.items()}

    def outcome_settings(self) -> dict[str, Any]:
        with self.lock:
            return {"patterns": dict(self._outcomes_by_name), "weights": dict(self._outcome_weights)}

    def clear_outcomes(self) -> None:
        with self.lock:
            self._outcomes_by_name.clear()

    # ---------------------------------------------------------------- views

    def cover_url(self, job: Job, now: float) -> str:
        path = f"/obs/{job.project_id}/{job.model_asset_id}/{job.cover_key}.png"
        return self.presigned_url(path, self.config.cover_ttl, now)

    def _obs_signature(self, path: str, expires: int) -> str:
        # OBS query-string signing (V2): base64 HMAC-SHA1 over "GET\n\n\n<Expires>\n<resource>".
        to_sign = f"GET\n\n\n{expires}\n{path}"
        return base64.b64encode(
            hmac.new(self.obs_sk.encode(), to_sign.encode(), hashlib.sha1).digest()
        ).decode()

    def job_info(self, job: Job, now: float | None = None, *, lag: float = 0.0) -> dict[str, Any]:
        """The job as the service shows it (PictureModelingInfo); ``lag``: see :meth:`Job.timeline`."""
        now = self.now() if now is None else now
        state, start, end, _ = job.timeline(now, lag=lag)
        info: dict[str, Any] = {
            "job_id": job.job_id,
            "state": state,
            "start_time": rfc3339(start),
            "end_time": rfc3339(end),
            "error_info": dict(job.error_info) if state == "FAILED" and job.error_info else None,
            "model_asset_id": job.model_asset_id,
            "name": job.name,
            "style_id": job.style_id,
        }
        if state == "SUCCEED":
            info["model_cover_url"] = self.cover_url(job, now)
        return info

    def job_record(self, job: Job) -> dict[str, Any]:
        """Everything the emulator knows about a job (admin view)."""
        now = self.now()
        state, _, _, update = job.timeline(now)
        return {
            "info": self.job_info(job, now),
            "job_id": job.job_id,
            "seq": job.seq,
            "project_id": job.project_id,
            "state": state,
            "outcome": job.outcome,
            "forced_state": job.forced_state,
            "create_time": rfc3339(job.create_time),
            "update_time": rfc3339(update),
            "create_timestamp": job.create_time,
            "update_timestamp": update,
            "waiting_seconds": job.waiting_seconds,
            "processing_seconds": job.processing_seconds,
            "source": job.source,
            "picture_url": job.picture_url,
            "notify_url": job.notify_url,
            "image": None
            if job.image is None
            else {
                "kind": job.image.kind,
                "width": job.image.width,
                "height": job.image.height,
                "size": job.image.size,
                "sha256": job.image_sha256,
            },
        }

    # ---------------------------------------------------------------- service calls

    def show(self, project_id: str, job_id: str) -> Reply:
        with self.lock:
            if job_id in self._job_errors:
                return error_reply(*self._job_errors[job_id])
            job = self._jobs.get(job_id)
            if job is None or job.project_id != project_id:
                return error_reply(404, NOT_FOUND_CODE, NOT_FOUND_MSG)
            return json_reply(200, self.job_info(job))

    def list_jobs(self, project_id: str, raw_query: str) -> Reply:
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
        if sort_key not in ("create_time", "update_time", "asset_order"):
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
        with self.lock:
            now = self.now()
            quirks = self._list_quirks
            if quirks.ignore_sort:
                sort_key, sort_dir = "asset_order", "asc"  # creation order, oldest first
            rows: list[tuple[float, int, Job]] = []
            for job in self._jobs.values():
                if job.project_id != project_id:
                    continue
                state, start, _, update = job.timeline(now, lag=quirks.visibility_delay)
                if quirks.stale_update_time:
                    update = job.create_time if start is None else start
                if states and state not in states:
                    continue
                # Job times are shown in whole seconds, so filters compare whole seconds too.
                created = math.floor(job.create_time)
                if "create_since" in bounds and created < bounds["create_since"]:
                    continue
                if "create_until" in bounds and created > bounds["create_until"]:
                    continue
                sort_values = {
                    "create_time": job.create_time,
                    "update_time": update,
                    "asset_order": float(job.seq),
                }
                rows.append((sort_values[sort_key], job.seq, job))
            # Ties are broken by creation sequence, in the same direction as the sort.
            rows.sort(key=lambda r: (r[0], r[1]), reverse=sort_dir == "desc")
            lag = quirks.visibility_delay
            page = [self.job_info(job, now, lag=lag) for _, _, job in rows[offset : offset + limit]]
            return json_reply(200, {"count": len(rows), "picture_modeling_jobs": page})

    def _check_common(self, style_id: Any, name: Any, notify_url: Any) -> Reply | None:
        if not isinstance(style_id, str) or not style_id:
            return invalid("style_id", "is required")
        if style_id not in STYLE_IDS:
            return invalid("style_id", f"unknown style {style_id[:40]!r}")
        if not isinstance(name, str) or not name.strip():
            return invalid("name", "is required")
        if len(name) > MAX_NAME_LENGTH or any(ord(c) < 0x20 for c in name):
            return invalid("name", f"at most {MAX_NAME_LENGTH} characters, no control characters")
        if notify_url is not None and not _is_http_url(notify_url):
            return invalid("notify_url", "must be an http(s) URL")
        return None

    def create_from_upload(self, project_id: str, content_type: str | None, body: bytes) -> Reply:
        try:
            parts = parse_multipart(content_type or "", body)
        except MultipartError as e:
            return invalid("file", str(e))
        style_id = parts["style_id"].text() if "style_id" in parts else None
        name = parts["name"].text() if "name" in parts else None
        notify_url = parts["notify_url"].text() if "notify_url" in parts else None
        problem = self._check_common(style_id, name, notify_url or None)
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
        max_long = max(self.config.max_image_width, self.config.max_image_height)
        max_short = min(self.config.max_image_width, self.config.max_image_height)
        if image.width <= 0 or image.height <= 0 or long_side > max_long or short_side > max_short:
            return invalid(
                "file",
                f"image is {image.width}x{image.height}, at most "
                f"{self.config.max_image_width}x{self.config.max_image_height} is accepted",
            )
        job = self.new_job(
            project_id=project_id,
            name=str(name),
            style_id=str(style_id),
            source=CALL_CREATE,
            notify_url=notify_url or None,
            image=image,
            image_sha256=hashlib.sha256(file_part.data).hexdigest(),
        )
        return json_reply(200, {"job_id": job.job_id, "model_asset_id": job.model_asset_id})

    def create_from_url(self, project_id: str, content_type: str | None, body: bytes) -> Reply:
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
        if not _is_http_url(picture_url):
            return invalid("picture_url", "must be an http(s) URL")
        problem = self._check_common(payload.get("style_id"), payload.get("name"), payload.get("notify_url"))
        if problem is not None:
            return problem
        # The photo is never fetched: the emulator only talks to its own clients.
        job = self.new_job(
            project_id=project_id,
            name=payload["name"],
            style_id=payload["style_id"],
            source=CALL_CREATE_BY_URL,
            picture_url=picture_url,
            notify_url=payload.get("notify_url"),
        )
        return json_reply(200, {"job_id": job.job_id, "model_asset_id": job.model_asset_id})

    # ---------------------------------------------------------------- IAM

    def issue_token(self, project_id: str | None = None, *, ttl: float | None = None) -> Token:
        """Issue a project-scoped token directly (what a successful password login returns)."""
        project_id = project_id or self.config.project_id
        name = next((n for n, pid in self.projects.items() if pid == project_id and n != pid), project_id)
        with self.lock:
            now = self.now()
            token = Token(
                value="MIIT" + secrets.token_urlsafe(48),
                project_id=project_id,
                project_name=name,
                user=self.config.iam_user,
                domain=self.config.iam_domain,
                issued_at=now,
                expires_at=now + (self.config.token_ttl if ttl is None else float(ttl)),
            )
            self._tokens[token.value] = token
            self._tokens_issued += 1
            return token

    def expire_tokens(self) -> int:
        """Invalidate every token issued so far; return how many were still valid."""
        with self.lock:
            now = self.now()
            live = 0
            for token in self._tokens.values():
                if not token.revoked and now < token.expires_at:
                    live += 1
                token.revoked = True
            return live

    def iam_tokens(self, body: bytes) -> tuple[Reply, str | None]:
        """``POST /v3/auth/tokens`` (password identity, project scope); reply and project id."""
        try:
            payload = json.loads(body.decode("utf-8"))
            auth = payload["auth"]
            identity = auth["identity"]
            methods = identity["methods"]
            user = identity["password"]["user"]
            user_name, password = user["name"], user["password"]
            domain_name = user["domain"]["name"]
            project = auth["scope"]["project"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return iam_error(
                400, "IAM.0007", "Request body is invalid: password identity and project scope required"
            ), None
        if methods != ["password"]:
            return iam_error(400, "IAM.0007", "Only the 'password' identity method is supported"), None
        if not all(isinstance(v, str) for v in (user_name, password, domain_name)) or not isinstance(
            project, dict
        ):
            return iam_error(400, "IAM.0007", "Request body is invalid"), None
        ok = (
            hmac.compare_digest(user_name.encode(), self.config.iam_user.encode())
            and hmac.compare_digest(password.encode(), self.config.iam_password.encode())
            and hmac.compare_digest(domain_name.encode(), self.config.iam_domain.encode())
        )
        if not ok:
            return iam_error(401, "IAM.0101", "The username or password is wrong."), None
        project_id = project.get("id")
        if project_id is None and isinstance(project.get("name"), str):
            project_id = self.projects.get(project["name"])
        if not isinstance(project_id, str) or project_id not in self.projects.values():
            return iam_error(
                401, "IAM.0101", "The project is not found or the user has no access to it."
            ), None
        token = self.issue_token(project_id)
        body_obj = {
            "token": {
                "expires_at": rfc3339_micro(token.expires_at),
                "issued_at": rfc3339_micro(token.issued_at),
                "methods": ["password"],
                "project": {
                    "id": token.project_id,
                    "name": token.project_name,
                    "domain": {"name": token.domain},
                },
                "user": {"name": token.user, "domain": {"name": token.domain}},
                "roles": [],
                "catalog": [],
            }
        }
        return json_reply(201, body_obj, {"X-Subject-Token": token.value}), project_id

    # ---------------------------------------------------------------- cover pictures

    def cover(
        self, project_id: str, asset_id: str, object_name: str, raw_path: str, raw_query: str, request_id: str
    ) -> Reply:
        """Serve a cover PNG for a valid, unexpired pre-signed URL; 403/404 XML otherwise."""
        refused = self.check_presigned(raw_path, raw_query, request_id)
        if refused is not None:
            return refused
        with self.lock:
            job = next((j for j in self._jobs.values() if j.model_asset_id == asset_id), None)
            found = (
                job is not None
                and job.project_id == project_id
                and object_name == f"{job.cover_key}.png"
                and job.timeline(self.now())[0] == "SUCCEED"
            )
        if not found:
            return obs_error(404, "NoSuchKey", "The specified key does not exist.", request_id)
        return Reply(200, cover_png(), "image/png", {"Cache-Control": "private, max-age=0"})

    def presigned_url(self, path: str, ttl: float, now: float) -> str:
        """``path`` on this emulator, pre-signed OBS-style (V2 query signing) for ``ttl`` seconds."""
        expires = int(now + ttl)
        signature = self._obs_signature(path, expires)
        return (
            f"{self.base_url}{path}?AccessKeyId={OBS_ACCESS_KEY}&Expires={expires}"
            f"&Signature={quote(signature, safe='')}"
        )

    def check_presigned(self, raw_path: str, raw_query: str, request_id: str) -> Reply | None:
        """None for a valid, unexpired pre-signed URL; OBS's 403 XML answer otherwise."""
        query = parse_qs(raw_query, keep_blank_values=True)
        ak = (query.get("AccessKeyId") or [""])[-1]
        expires_text = (query.get("Expires") or [""])[-1]
        signature = (query.get("Signature") or [""])[-1]
        if not ak or not expires_text or not signature:
            return obs_error(
                403, "AccessDenied", "Anonymous access is forbidden for this operation", request_id
            )
        if ak != OBS_ACCESS_KEY:
            return obs_error(
                403, "InvalidAccessKeyId", "The AccessKeyId you provided does not exist", request_id
            )
        try:
            expires = int(expires_text)
        except ValueError:
            return obs_error(403, "AccessDenied", "Invalid Expires", request_id)
        expected = self._obs_signature(raw_path, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return obs_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
                request_id,
            )
        if self.now() >= expires:
            return obs_error(403, "AccessDenied", "Request has expired", request_id)
        return None

    # ---------------------------------------------------------------- reset

    def reset(self) -> None:
        """Forget jobs, tokens, quota history, one-shot faults, outages, per-job errors, list quirks
        and counters (fault shares, quotas and outcomes are kept)."""
        with self.lock:
            self._jobs.clear()
            self._tokens.clear()
            self._tat.clear()
            self._one_shots.clear()
            self._outages.clear()
            self._job_errors.clear()
            self._list_quirks = ListQuirks()
            self.reset_counters()
            self.assets.reset()


def _matches(pattern: str, call: str) -> bool:
    return pattern == call or (pattern == "*" and call in SERVICE_CALLS)


def _check_call(call: str) -> None:
    if call != "*" and call not in (*SERVICE_CALLS, CALL_IAM, CALL_COVER, *ASSET_CALLS):
        raise ValueError(f"unknown call {call!r}")


def _is_http_url(value: Any) -> bool:
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
