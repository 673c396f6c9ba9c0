"""The emulator's observation side: the request log and every counter."""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_metastudio.testing._faults import FaultDecision
    from airflow_provider_metastudio.testing._shared import Shared


class Recorder:
    """Requests per call and status, faults, jobs created, tokens issued, and the request log.

    Admin calls are never recorded.
    """

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._log: deque[dict[str, Any]] = deque(maxlen=shared.config.max_log_entries)
        self._requests: Counter[str] = Counter()
        self._statuses: Counter[tuple[str, int]] = Counter()
        self._faults: Counter[tuple[str, str]] = Counter()
        self._paths: Counter[str] = Counter()
        self._jobs_created: Counter[str] = Counter()
        self._tokens_issued = 0

    # ---------------------------------------------------------------- written by the server

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
        """Log one answered (or dropped: status 0) request."""
        entry = {
            "time": time.time(),
            "emulated_time": self._shared.now(),
            "method": method,
            "path": target,
            "call": call,
            "status": status,
            "project_id": project_id,
            "request_id": request_id,
            "fault": fault.kind.value if fault else None,
            "duration": round(time.monotonic() - started, 6),
        }
        with self._shared.lock:
            self._log.append(entry)
            self._requests[call] += 1
            self._statuses[(call, status)] += 1
            self._paths[f"{method} {path}"] += 1

    def fault_injected(self, call: str, fault: FaultDecision) -> None:
        with self._shared.lock:
            self._faults[(call, fault.kind.value)] += 1

    def job_created(self, call: str) -> None:
        """A job created through the API (``create`` or ``create_by_url``)."""
        with self._shared.lock:
            self._jobs_created[call] += 1

    def token_issued(self) -> None:
        with self._shared.lock:
            self._tokens_issued += 1

    # ---------------------------------------------------------------- read by tests

    def counters(self) -> dict[str, Any]:
        """Requests per call, per (call, status), 429s, faults, jobs created, requests per path."""
        with self._shared.lock:
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

    def count(self, call: str | None = None, status: int | None = None) -> int:
        """How many requests were seen, optionally for one call and/or status.

        :param call: a call name (``show``, ``list``, ..., ``unknown``), or all.
        :param status: an HTTP status (0 for dropped connections), or all.
        """
        with self._shared.lock:
            return sum(
                n
                for (name, code), n in self._statuses.items()
                if (call is None or name == call) and (status is None or code == status)
            )

    def request_log(self) -> list[dict[str, Any]]:
        """Every request (admin calls excluded): method, raw path, call, status, times, fault."""
        with self._shared.lock:
            return [dict(e) for e in self._log]

    def reset(self) -> None:
        """Zero every counter and empty the request log."""
        with self._shared.lock:
            self._log.clear()
            self._requests.clear()
            self._statuses.clear()
            self._faults.clear()
            self._paths.clear()
            self._jobs_created.clear()
            self._tokens_issued = 0
