"""Injected faults: seeded probabilistic shares, queued one-shots, outage windows, per-job error
answers of the details call and list quirks."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_provider_metastudio.testing._config import (
    ALL_CALLS,
    FAULT_KINDS,
    SERVICE_CALLS,
    FaultKind,
)
from airflow_provider_metastudio.testing._replies import Reply, error_reply, html_error_page

if TYPE_CHECKING:
    from airflow_provider_metastudio.testing._shared import Shared


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


class Faults:
    """Every way the emulator misbehaves on purpose; nothing is on unless configured."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        config = shared.config
        self._rng = random.Random(f"metastudio-emulator-faults:{config.seed}")
        self.rates: dict[str, float] = {k: v for k, v in config.fault_rates().items() if v > 0}
        self.calls: set[str] = set(config.fault_calls)
        self.delay_seconds = config.delay_seconds
        self._one_shots: list[OneShotFault] = []
        self._outages: list[Outage] = []
        self._job_errors: dict[str, tuple[int, str, str]] = {}
        self._list_quirks = ListQuirks()

    def pick(self, call: str) -> FaultDecision | None:
        """The fault for the next request of ``call``: an outage first, then a queued one-shot, else
        a seeded draw. One-shots wait out an outage: they are not consumed by its requests."""
        with self._shared.lock:
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
            if call not in self.calls or not self.rates:
                return None
            draw = self._rng.random()
            acc = 0.0
            for kind in FaultKind:
                acc += self.rates.get(kind.value, 0.0)
                if draw < acc:
                    status = self._rng.choice((502, 503, 504)) if kind is FaultKind.HTML else None
                    return FaultDecision(
                        kind, status, self.delay_seconds, 1.0, self._shared.config.huge_body_bytes
                    )
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
            status = self._rng.choice((502, 503, 504))
        return FaultDecision(
            kind,
            status,
            self.delay_seconds if delay is None else delay,
            1.0 if retry_after is None else retry_after,
            self._shared.config.huge_body_bytes if size is None else size,
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
        """Queue a one-shot fault for the next ``count`` requests of ``call``.

        One-shots are consumed in the order they were queued by the next matching requests.

        :param call: ``show``, ``list``, ``create``, ``create_by_url``, ``iam``, ``cover``, an asset
            call, or ``*`` (any of the four service calls).
        :param kind: a :class:`FaultKind` or its value (``"500"``, ``"drop"``, ...).
        :param count: how many requests it hits.
        :param delay: real seconds for a ``delay`` fault (``delay_seconds`` by default).
        :param status: 502, 503 or 504 for an ``html`` fault (random otherwise).
        :param retry_after: emulated seconds announced by a ``429`` fault (1 by default).
        :param size: body size of a ``huge`` fault.
        """
        fault_kind = FaultKind.parse(kind)
        if count < 1:
            raise ValueError("count must be at least 1")
        _check_call(call)
        if status is not None and fault_kind is FaultKind.HTML and status not in (502, 503, 504):
            raise ValueError("an html fault answers 502, 503 or 504")
        with self._shared.lock:
            self._one_shots.append(
                OneShotFault(call, fault_kind, int(count), delay, status, retry_after, size)
            )

    def set_rates(
        self,
        rates: Mapping[str, float] | None = None,
        *,
        delay_seconds: float | None = None,
        calls: Iterable[str] | None = None,
        replace: bool = True,
    ) -> dict[str, Any]:
        """Set probabilistic fault shares, drawn per request from the seeded fault RNG.

        :param rates: ``kind -> share`` (e.g. ``{"500": 0.2, "html": 0.1, "drop": 0.05}``), total <= 1.
        :param delay_seconds: real seconds a ``delay`` fault sleeps.
        :param calls: the calls the shares apply to (default: the four service calls).
        :param replace: drop shares not named in ``rates`` (else merge).
        :return: the fault settings now in force.
        """
        with self._shared.lock:
            new = {} if replace else dict(self.rates)
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
            self.rates = new
            if delay_seconds is not None:
                self.delay_seconds = max(0.0, float(delay_seconds))
            if calls is not None:
                self.calls = set(calls)
            return self.settings()

    def outage(self, seconds: float, *, call: str = "*", kind: str | FaultKind = "503") -> None:
        """Answer every request of ``call`` with fault ``kind`` for the next ``seconds`` REAL seconds.

        Outages come before one-shot faults (which wait for the outage to end) and are counted in
        the fault counters like any other fault.

        :param seconds: real seconds (not emulated: an outage is about clients' retry timing).
        :param call: a call name as for :meth:`inject`, or ``*`` (any of the four service calls).
        :param kind: any :class:`FaultKind` (``"500"``, ``"503"``, ``"html"``, ``"drop"``, ``"429"``...).
        """
        fault_kind = FaultKind.parse(kind)
        _check_call(call)
        if not float(seconds) > 0:
            raise ValueError("seconds must be positive")
        with self._shared.lock:
            self._outages.append(Outage(call, fault_kind, time.monotonic() + float(seconds)))

    def set_job_error(self, job_id: str, status: int, error_code: str, error_msg: str | None = None) -> None:
        """Make the details call for ``job_id`` answer ``status`` with ``{"error_code", "error_msg"}``
        until :meth:`clear_job_error` (lists still show the job). The id need not exist.

        :param status: an HTTP error status, e.g. 400 or 404.
        :param error_code: e.g. ``MSS.00000003``.
        :param error_msg: the message; by default one that names the job id.
        """
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if not isinstance(error_code, str) or not error_code:
            raise ValueError("error_code is required")
        message = error_msg if error_msg is not None else f"Request for job {job_id} failed"
        with self._shared.lock:
            self._job_errors[job_id] = (status, error_code, message)

    def clear_job_error(self, job_id: str) -> None:
        """The details call for ``job_id`` answers normally again."""
        with self._shared.lock:
            self._job_errors.pop(job_id, None)

    def set_list_quirks(
        self, *, ignore_sort: bool = False, visibility_delay: float = 0.0, stale_update_time: bool = False
    ) -> dict[str, Any]:
        """Make the list call behave as the real one might (none of this is confirmed); sets all three
        at once, so the defaults switch them off. The details call always shows the truth.

        :param ignore_sort: ``sort_key``/``sort_dir`` are ignored: creation order, oldest first.
        :param visibility_delay: emulated seconds after its end before a finished job shows in lists
            (and matches their state filter) as finished; until then lists show its previous state.
        :param stale_update_time: ``sort_key=update_time`` sorts by the start time (the creation
            time before the start), so a job that finishes late can sort below earlier finishers.
        :return: the quirks now in force.
        """
        if not float(visibility_delay) >= 0:
            raise ValueError("visibility_delay must not be negative")
        with self._shared.lock:
            self._list_quirks = ListQuirks(
                bool(ignore_sort), float(visibility_delay), bool(stale_update_time)
            )
            return self.list_quirks()

    def list_quirks(self) -> dict[str, Any]:
        """The list quirks in force, as a dict."""
        with self._shared.lock:
            return asdict(self._list_quirks)

    def clear(self) -> None:
        """Remove every probabilistic share, queued one-shot, outage, per-job error and list quirk."""
        with self._shared.lock:
            self.rates = {}
            self._one_shots.clear()
            self._outages.clear()
            self._job_errors.clear()
            self._list_quirks = ListQuirks()

    def settings(self) -> dict[str, Any]:
        """Shares, one-shots, live outages, per-job errors and list quirks in force."""
        with self._shared.lock:
            clock = time.monotonic()
            return {
                "rates": dict(self.rates),
                "delay_seconds": self.delay_seconds,
                "calls": sorted(self.calls),
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

    def reply(self, fault: FaultDecision) -> Reply:
        """The answer of a short-circuit fault (not ``drop``, which sends nothing)."""
        if fault.kind is FaultKind.HTTP_500:
            return error_reply(500, "MSS.00000004", "Internal Error")
        if fault.kind is FaultKind.HTTP_429:
            return error_reply(
                429,
                "APIGW.0308",
                "The throttling threshold has been reached: policy user over ratelimit (injected)",
                {"Retry-After": self._shared.retry_after(fault.retry_after)},
            )
        if fault.kind in (FaultKind.HTTP_502, FaultKind.HTTP_503, FaultKind.HTTP_504):
            return html_error_page(int(fault.kind.value))
        return html_error_page(fault.status or 502)

    def job_error(self, job_id: str) -> Reply | None:
        """The error the details call answers for ``job_id`` instead of the job, if any."""
        with self._shared.lock:
            error = self._job_errors.get(job_id)
        return None if error is None else error_reply(*error)

    def quirks(self) -> ListQuirks:
        """The list quirks in force."""
        with self._shared.lock:
            return self._list_quirks

    def reset(self) -> None:
        """Forget one-shots, outages, per-job errors and list quirks (shares are kept)."""
        with self._shared.lock:
            self._one_shots.clear()
            self._outages.clear()
            self._job_errors.clear()
            self._list_quirks = ListQuirks()


def spoil(reply: Reply, fault: FaultDecision) -> Reply:
    """Apply a post-processing fault to a real answer."""
    if fault.kind is FaultKind.MALFORMED:
        cut = max(1, len(reply.body) // 2) if len(reply.body) > 1 else 0
        body = reply.body[:cut] if reply.body else b'{"job_id": "'
        return replace(reply, body=body)
    if fault.kind is FaultKind.EMPTY:
        return replace(reply, body=b"")
    if fault.kind is FaultKind.HUGE:
        try:
            obj = json.loads(reply.body) if reply.body else {}
        except ValueError:
            obj = {}
        if not isinstance(obj, dict):
            obj = {"value": obj}
        base = len(json.dumps(obj).encode())
        obj["padding"] = "x" * max(0, fault.size - base - 16)
        return replace(reply, body=json.dumps(obj).encode(), content_type="application/json")
    return reply


def _matches(pattern: str, call: str) -> bool:
    return pattern == call or (pattern == "*" and call in SERVICE_CALLS)


def _check_call(call: str) -> None:
    if call != "*" and call not in ALL_CALLS:
        raise ValueError(f"unknown call {call!r}")
