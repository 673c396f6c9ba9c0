"""Configuration of the MetaStudio emulator: credentials, clock, lifecycle, quotas and faults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from airflow_provider_metastudio._asset_vocabulary import AssetState

# Made-up example credentials, shaped like real ones (20-character AK, 40-character SK, 32-hex
# project id). They only ever open this emulator.
DEFAULT_AK = "EMULATORAKEXAMPLE000"
DEFAULT_SK = "EmuSecretKeyEXAMPLE0123456789abcdefghijk"
DEFAULT_PROJECT_ID = "5f0e6b3a9c1d4e7f8a2b3c4d5e6f7a8b"
DEFAULT_PROJECT_NAME = "cn-north-4"
DEFAULT_IAM_USER = "emulator-user"
DEFAULT_IAM_PASSWORD = "emulator-password"
DEFAULT_IAM_DOMAIN = "emulator-domain"

# Call names used everywhere: config, counters, faults, quotas and the request log.
CALL_SHOW = "show"
CALL_LIST = "list"
CALL_CREATE = "create"
CALL_CREATE_BY_URL = "create_by_url"
CALL_IAM = "iam"
CALL_COVER = "cover"
SERVICE_CALLS: tuple[str, ...] = (CALL_SHOW, CALL_LIST, CALL_CREATE, CALL_CREATE_BY_URL)
# The asset library (issue #14): show and list are signed API calls, asset_file a pre-signed download.
CALL_ASSET_SHOW = "asset_show"
CALL_ASSET_LIST = "asset_list"
CALL_ASSET_FILE = "asset_file"
ASSET_CALLS: tuple[str, ...] = (CALL_ASSET_SHOW, CALL_ASSET_LIST, CALL_ASSET_FILE)
ALL_CALLS: tuple[str, ...] = (*SERVICE_CALLS, CALL_IAM, CALL_COVER, *ASSET_CALLS)
# What a ready model asset may turn into (the package's AssetState values: one vocabulary).
ASSET_OUTCOMES: tuple[str, ...] = tuple(
    s.value for s in (AssetState.ACTIVED, AssetState.FAILED, AssetState.BLOCK)
)

STYLE_IDS: tuple[str, ...] = ("system_male_001", "system_female_001", "system_male_002", "system_female_002")
JOB_STATES: tuple[str, ...] = ("WAITING", "PROCESSING", "PARTIAL_SUCCEED", "SUCCEED", "FAILED", "CANCELED")
TERMINAL_STATES: tuple[str, ...] = ("PARTIAL_SUCCEED", "SUCCEED", "FAILED", "CANCELED")

# Documented per-tenant quotas (requests per second, per call) and the all-tenants ceiling.
DEFAULT_RATES: Mapping[str, float] = {
    CALL_SHOW: 1.0,
    CALL_LIST: 1.0,
    CALL_CREATE: 1.0,
    CALL_CREATE_BY_URL: 2.0,
}
DEFAULT_GLOBAL_RATES: Mapping[str, float] = {call: 10.0 for call in SERVICE_CALLS}

DEFAULT_FAILURE_ERRORS: tuple[tuple[str, str], ...] = (
    ("MSS.00000009", "Picture modeling failed: no face detected"),
    ("MSS.00000010", "Picture modeling failed: more than one face detected"),
    ("MSS.00000011", "Picture modeling failed: the face is occluded or too small"),
)

TEN_DAYS = 10 * 24 * 3600.0
ONE_DAY = 24 * 3600.0
MIB = 1024 * 1024


class FaultKind(str, Enum):
    """What an injected fault does to one request.

    Short-circuit kinds answer before authentication (nothing is created, no quota is used):
    ``500`` (JSON ``MSS.00000004``), ``502``/``503``/``504`` and ``html`` (a gateway HTML page;
    ``html`` picks one of the three), ``429`` (``APIGW.0308`` with ``Retry-After``) and ``drop``
    (the connection is closed without any response). ``delay`` sleeps (real seconds) and then
    handles the request normally. The others handle the request normally and then spoil the
    answer: ``drop_after`` closes the connection instead of answering (on a create, the job
    exists), ``malformed`` truncates the JSON body, ``empty`` sends no body, ``huge`` pads the
    JSON body to several MiB.
    """

    HTTP_500 = "500"
    HTTP_502 = "502"
    HTTP_503 = "503"
    HTTP_504 = "504"
    HTML = "html"
    DROP = "drop"
    DROP_AFTER = "drop_after"
    DELAY = "delay"
    MALFORMED = "malformed"
    HTTP_429 = "429"
    EMPTY = "empty"
    HUGE = "huge"

    @classmethod
    def parse(cls, value: str | FaultKind) -> FaultKind:
        try:
            return cls(str(value.value if isinstance(value, FaultKind) else value))
        except ValueError:
            known = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown fault kind {value!r}; known: {known}") from None


FAULT_KINDS: tuple[str, ...] = tuple(k.value for k in FaultKind)
# Kinds that answer (or hang up) instead of handling the request.
SHORT_CIRCUIT_FAULTS = frozenset(
    {
        FaultKind.HTTP_500,
        FaultKind.HTTP_502,
        FaultKind.HTTP_503,
        FaultKind.HTTP_504,
        FaultKind.HTML,
        FaultKind.DROP,
        FaultKind.HTTP_429,
    }
)
# Kinds that let the request be handled and then spoil the answer.
POST_FAULTS = frozenset({FaultKind.DROP_AFTER, FaultKind.MALFORMED, FaultKind.EMPTY, FaultKind.HUGE})


@dataclass(frozen=True)
class Credentials:
    """One tenant's AK/SK pair (optionally temporary, with a security token).

    :param ak: access key id.
    :param sk: secret access key.
    :param project_id: the tenant's project; requests for any other project are refused.
    :param security_token: set for temporary credentials: requests must then carry it, signed,
        in ``X-Security-Token``.
    """

    ak: str
    sk: str = field(repr=False)
    project_id: str
    security_token: str | None = field(default=None, repr=False)


@dataclass
class EmulatorConfig:
    """Everything that shapes the emulator. All durations are in emulated seconds unless noted.

    :param host: address to bind (loopback by default).
    :param port: port to bind; 0 picks a free one.
    :param advertised_url: base URL written into cover URLs and connections, when the bind
        address is not what clients use (e.g. inside a container).
    :param ak: AK of the primary tenant.
    :param sk: SK of the primary tenant.
    :param project_id: project id of the primary tenant.
    :param security_token: makes the primary credentials temporary (token required and signed).
    :param extra_credentials: more tenants (for per-tenant quota or cross-project tests).
    :param project_name: IAM project name of the primary project (token scope by name).
    :param iam_user: IAM user name accepted by ``POST /v3/auth/tokens``.
    :param iam_password: its password.
    :param iam_domain: its account (domain) name.
    :param token_ttl: lifetime of issued IAM tokens.
    :param time_scale: emulated seconds per real second (60 = a minute passes in a second).
    :param start_time: emulated time at start (datetime or unix seconds); real now by default.
    :param auth_time: initial value of the gateway's auth clock (for replaying signed requests
        with an old ``X-Sdk-Date``); it keeps ticking in real time from there.
    :param clock_skew_seconds: how far ``X-Sdk-Date`` may be from the auth clock (15 minutes).
    :param seed: seeds every random choice (outcomes, jitter, probabilistic faults).
    :param waiting_seconds: how long a new job stays WAITING.
    :param processing_seconds: how long it then stays PROCESSING.
    :param waiting_jitter: up to this much is added to ``waiting_seconds``, per job (seeded).
    :param processing_jitter: the same for ``processing_seconds``.
    :param outcome_weights: relative weights of terminal states for jobs matching no pattern.
    :param outcomes_by_name: fnmatch pattern of the job name -> terminal state; first match wins.
    :param failure_errors: ``(error_code, error_msg)`` pairs a FAILED job picks from (seeded).
    :param cover_ttl: lifetime of pre-signed cover URLs, from the moment they are handed out.
    :param quotas_enabled: enforce the per-tenant and all-tenants request rates.
    :param rates: per-tenant requests/second by call name, merged over the documented defaults
        (show 1, list 1, create 1, create_by_url 2); 0 lifts a call's limit; ``iam`` and
        ``cover`` may be limited too.
    :param global_rates: all-tenants requests/second by call name (default 10 for each service
        call), merged the same way.
    :param burst: requests a tenant may send back to back per call after an idle period.
    :param quota_tolerance: how early (emulated seconds) a request may come before its slot and
        still pass; absorbs the network jitter of a client that paces itself exactly at the quota.
    :param fault_500: share of service requests answered 500 ``MSS.00000004``.
    :param fault_html: share answered 502/503/504 with an HTML page.
    :param fault_drop: share whose connection is closed without a response.
    :param fault_delay: share delayed by ``delay_seconds`` (real seconds) before being handled.
    :param fault_malformed: share answered with a truncated JSON body.
    :param delay_seconds: real seconds a delay fault sleeps.
    :param fault_calls: calls the probabilistic faults apply to (add ``iam``/``cover`` if wanted).
    :param huge_body_bytes: size a ``huge`` fault pads the JSON body to.
    :param max_body_bytes: largest request body accepted (413 beyond).
    :param max_image_width: largest photo width (either orientation is accepted).
    :param max_image_height: largest photo height.
    :param keepalive_timeout: real seconds an idle keep-alive connection is kept open.
    :param max_log_entries: how many requests the request log keeps (oldest dropped first).
    :param asset_active_delay: how long after its job's SUCCEED/PARTIAL_SUCCEED a model asset stays
        CREATING before it is ACTIVED (the real delay is not stated anywhere).
    :param asset_outcomes_by_name: fnmatch pattern of the job name -> the asset's state once ready
        (``ACTIVED``, ``FAILED`` or ``BLOCK``); first match wins, ``ACTIVED`` otherwise.
    :param asset_url_ttl: lifetime of the assets' pre-signed file URLs (24 hours, as documented).
        The asset calls have no quota by default (none is stated); set ``rates={"asset_show": 1}``.
    """

    host: str = "127.0.0.1"
    port: int = 0
    advertised_url: str | None = None
    ak: str = DEFAULT_AK
    sk: str = field(default=DEFAULT_SK, repr=False)
    project_id: str = DEFAULT_PROJECT_ID
    security_token: str | None = field(default=None, repr=False)
    extra_credentials: Sequence[Credentials] = ()
    project_name: str = DEFAULT_PROJECT_NAME
    iam_user: str = DEFAULT_IAM_USER
    iam_password: str = field(default=DEFAULT_IAM_PASSWORD, repr=False)
    iam_domain: str = DEFAULT_IAM_DOMAIN
    token_ttl: float = ONE_DAY
    time_scale: float = 1.0
    start_time: datetime | float | None = None
    auth_time: datetime | float | None = None
    clock_skew_seconds: float = 15 * 60.0
    seed: int = 0
    waiting_seconds: float = 5.0
    processing_seconds: float = 25.0
    waiting_jitter: float = 0.0
    processing_jitter: float = 0.0
    outcome_weights: Mapping[str, float] = field(default_factory=lambda: {"SUCCEED": 1.0})
    outcomes_by_name: Mapping[str, str] = field(default_factory=dict)
    failure_errors: Sequence[tuple[str, str]] = DEFAULT_FAILURE_ERRORS
    cover_ttl: float = TEN_DAYS
    quotas_enabled: bool = True
    rates: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    global_rates: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_GLOBAL_RATES))
    burst: float = 1.0
    quota_tolerance: float = 0.05
    fault_500: float = 0.0
    fault_html: float = 0.0
    fault_drop: float = 0.0
    fault_delay: float = 0.0
    fault_malformed: float = 0.0
    delay_seconds: float = 1.0
    fault_calls: Sequence[str] = SERVICE_CALLS
    huge_body_bytes: int = 8 * MIB
    max_body_bytes: int = 10 * MIB
    max_image_width: int = 3840
    max_image_height: int = 2160
    keepalive_timeout: float = 75.0
    max_log_entries: int = 100_000
    asset_active_delay: float = 5.0
    asset_outcomes_by_name: Mapping[str, str] = field(default_factory=dict)
    asset_url_ttl: float = ONE_DAY

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")
        for name in ("waiting_seconds", "processing_seconds", "waiting_jitter", "processing_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for state in (*self.outcome_weights, *self.outcomes_by_name.values()):
            if state not in TERMINAL_STATES:
                raise ValueError(f"outcome {state!r} is not one of {', '.join(TERMINAL_STATES)}")
        if self.outcome_weights and sum(self.outcome_weights.values()) <= 0:
            raise ValueError("outcome_weights must have a positive total")
        for name in ("fault_500", "fault_html", "fault_drop", "fault_delay", "fault_malformed"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if sum(self.fault_rates().values()) > 1.0 + 1e-9:
            raise ValueError("the fault shares add up to more than 1")
        if self.token_ttl <= 0 or self.cover_ttl <= 0:
            raise ValueError("token_ttl and cover_ttl must be positive")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.asset_active_delay < 0 or self.asset_url_ttl <= 0:
            raise ValueError("asset_active_delay must not be negative, asset_url_ttl must be positive")
        for state in self.asset_outcomes_by_name.values():
            if state not in ASSET_OUTCOMES:
                raise ValueError(f"asset outcome {state!r} is not one of {', '.join(ASSET_OUTCOMES)}")

    def fault_rates(self) -> dict[str, float]:
        """The probabilistic fault shares as a ``kind -> share`` mapping."""
        return {
            FaultKind.HTTP_500.value: self.fault_500,
            FaultKind.HTML.value: self.fault_html,
            FaultKind.DROP.value: self.fault_drop,
            FaultKind.DELAY.value: self.fault_delay,
            FaultKind.MALFORMED.value: self.fault_malformed,
        }

    def all_credentials(self) -> list[Credentials]:
        """The primary tenant first, then ``extra_credentials``."""
        primary = Credentials(self.ak, self.sk, self.project_id, self.security_token)
        return [primary, *self.extra_credentials]
