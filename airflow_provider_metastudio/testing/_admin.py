"""The admin HTTP interface under ``/_emulator/``: a route table onto the components' methods.

Each route maps ``(method, path)`` to the same public method a test calls in-process (for example
``POST /_emulator/jobs/{job_id}/state`` is ``emulator.jobs.set_state``), so every operation is
written once. Bodies are JSON objects; answers are JSON. A ``KeyError`` (unknown job, asset or
route) answers 404 ``EMU.0404``; a ``ValueError`` or ``TypeError`` (bad arguments) answers 400
``EMU.0400``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from airflow_provider_metastudio.testing._clock import parse_rfc3339, rfc3339_micro
from airflow_provider_metastudio.testing._parts import EmulatorParts
from airflow_provider_metastudio.testing._replies import Reply, error_reply, json_reply

# (emulator, path parameters, JSON body) -> a JSON-able answer
Handler = Callable[["EmulatorParts", Mapping[str, str], Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler


def _route(methods: str, template: str, handler: Handler) -> Route:
    """``_route("PUT POST", "jobs/{job_id}/error", ...)``: ``{name}`` matches one path segment."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return Route(frozenset(methods.split()), re.compile(regex), handler)


def _given(body: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """The named body fields that are present and not null, as keyword arguments."""
    return {name: body[name] for name in names if body.get(name) is not None}


def _require(body: Mapping[str, Any], example: str, *names: str) -> None:
    if any(name not in body for name in names):
        raise ValueError(f"body must be {example}")


def _require_state(body: Mapping[str, Any], example: str) -> str:
    if not isinstance(body.get("state"), str):
        raise ValueError(f'body must be {{"state": "{example}"}} (or another state)')
    return str(body["state"])


# ------------------------------------------------------------------ handlers needing a few lines


def _set_job_error(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    _require(body, '{"status": 400, "error_code": "MSS.00000003"}', "status", "error_code")
    emu.faults.set_job_error(path["job_id"], body["status"], body["error_code"], body.get("error_msg"))
    return emu.faults.settings()["job_errors"]


def _set_faults(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    if body.get("clear"):
        emu.faults.clear()
    if "rates" in body or "delay_seconds" in body or "calls" in body:
        emu.faults.set_rates(
            body.get("rates"),
            delay_seconds=body.get("delay_seconds"),
            calls=body.get("calls"),
            replace=bool(body.get("replace", True)),
        )
    for shot in body.get("one_shots") or []:
        if not isinstance(shot, dict):
            raise ValueError("one_shots must be a list of objects")
        emu.faults.inject(
            str(shot.get("call", "*")),
            str(shot["kind"]),
            int(shot.get("count", 1)),
            **_given(shot, "delay", "status", "retry_after", "size"),
        )
    return emu.faults.settings()


def _outage(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    _require(body, '{"seconds": 5, "call": "*", "kind": "503"}', "seconds")
    emu.faults.outage(
        float(body["seconds"]), call=str(body.get("call", "*")), kind=str(body.get("kind", "503"))
    )
    return emu.faults.settings()["outages"]


def _set_outcomes(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    if body.get("replace"):
        emu.jobs.clear_outcomes()
    patterns = dict(body.get("patterns") or {})
    if "pattern" in body:
        patterns[str(body["pattern"])] = body.get("state")
    for pattern, outcome in patterns.items():
        emu.jobs.set_outcome(str(pattern), outcome)
    if body.get("weights"):
        emu.jobs.set_outcome_weights(body["weights"])
    return emu.jobs.outcomes()


def _set_asset_outcome(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    _require(body, '{"pattern": "*blocked*", "state": "BLOCK"}', "pattern")
    emu.assets.set_outcome(str(body["pattern"]), body.get("state"))
    return dict(emu.assets.settings())


def _set_clock(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    if "advance" in body:
        emu.clock.advance(float(body["advance"]))
    if "auth_time" in body:
        emu.auth_clock.set(parse_rfc3339(str(body["auth_time"])), frozen=bool(body.get("frozen")))
    if "auth_shift" in body:
        emu.auth_clock.shift(float(body["auth_shift"]))
    if body.get("auth_reset"):
        emu.auth_clock.reset()
    return _clock_view(emu)


def _clock_view(emu: EmulatorParts) -> dict[str, Any]:
    now, auth_now = emu.clock.now(), emu.auth_clock.now()
    return {
        "now": rfc3339_micro(now),
        "now_timestamp": now,
        "time_scale": emu.clock.time_scale,
        "auth_now": rfc3339_micro(auth_now),
        "auth_now_timestamp": auth_now,
    }


def _reset_counters(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    emu.recorder.reset()
    return emu.recorder.counters()


def _reset(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    emu.reset()
    return {"status": "reset"}


def _delete_job(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    emu.jobs.delete(path["job_id"])
    return {"deleted": path["job_id"]}


def _clear_job_error(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    emu.faults.clear_job_error(path["job_id"])
    return emu.faults.settings()["job_errors"]


def _corrupt(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    emu.assets.corrupt(path["asset_id"], str(body.get("category", "MAIN")), body.get("count"))
    return dict(emu.assets.settings())


def _uncorrupt(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    emu.assets.clear_corruption(path["asset_id"])
    return dict(emu.assets.settings())


def _clear_faults(emu: EmulatorParts, path: Mapping[str, str], body: Mapping[str, Any]) -> Any:
    emu.faults.clear()
    return emu.faults.settings()


_JOB_FIELDS = (
    "name",
    "style_id",
    "project_id",
    "outcome",
    "waiting_seconds",
    "processing_seconds",
    "error_code",
    "error_msg",
    "job_id",
)

ROUTES: tuple[Route, ...] = (
    _route("GET", "health", lambda e, p, b: {"status": "ok", "base_url": e.base_url}),
    # jobs
    _route("GET", "jobs", lambda e, p, b: {"jobs": e.jobs.records()}),
    _route("POST", "jobs", lambda e, p, b: e.jobs.create(**_given(b, *_JOB_FIELDS))),
    _route("GET", "jobs/{job_id}", lambda e, p, b: e.jobs.record(p["job_id"])),
    _route("DELETE", "jobs/{job_id}", _delete_job),
    _route(
        "POST",
        "jobs/{job_id}/state",
        lambda e, p, b: e.jobs.set_state(
            p["job_id"], _require_state(b, "CANCELED"), **_given(b, "error_code", "error_msg")
        ),
    ),
    _route("GET", "outcomes", lambda e, p, b: e.jobs.outcomes()),
    _route("POST", "outcomes", _set_outcomes),
    # faults
    _route("PUT", "jobs/{job_id}/error", _set_job_error),
    _route("DELETE", "jobs/{job_id}/error", _clear_job_error),
    _route("GET", "faults", lambda e, p, b: e.faults.settings()),
    _route("PUT POST", "faults", _set_faults),
    _route("DELETE", "faults", _clear_faults),
    _route("POST", "outages", _outage),
    _route("GET", "list-quirks", lambda e, p, b: e.faults.list_quirks()),
    _route("PUT POST", "list-quirks", lambda e, p, b: e.faults.set_list_quirks(**b)),
    _route("DELETE", "list-quirks", lambda e, p, b: e.faults.set_list_quirks()),
    # the asset library
    _route("GET", "assets/{asset_id}", lambda e, p, b: e.assets.get(p["asset_id"])),
    _route(
        "POST",
        "assets/{asset_id}/state",
        lambda e, p, b: e.assets.set_state(p["asset_id"], _require_state(b, "DELETED")),
    ),
    _route("PUT POST", "assets/{asset_id}/corrupt", _corrupt),
    _route("DELETE", "assets/{asset_id}/corrupt", _uncorrupt),
    _route("GET", "asset-outcomes", lambda e, p, b: dict(e.assets.settings())),
    _route("POST", "asset-outcomes", _set_asset_outcome),
    # IAM
    _route(
        "POST",
        "tokens",
        lambda e, p, b: e.iam.token_info(e.iam.issue_token(**_given(b, "project_id", "ttl"))),
    ),
    _route("POST", "tokens/expire", lambda e, p, b: {"expired": e.iam.expire_tokens()}),
    # quotas
    _route("GET", "quotas", lambda e, p, b: e.quotas.settings()),
    _route(
        "PUT POST",
        "quotas",
        lambda e, p, b: e.quotas.set(**_given(b, "enabled", "rates", "global_rates", "burst", "tolerance")),
    ),
    # observation
    _route("GET", "counters", lambda e, p, b: e.recorder.counters()),
    _route("GET", "requests", lambda e, p, b: {"requests": e.recorder.request_log()}),
    _route("POST", "reset-counters", _reset_counters),
    # the emulator itself
    _route("GET", "clock", lambda e, p, b: _clock_view(e)),
    _route("POST", "clock", _set_clock),
    _route("POST", "reset", _reset),
)


def handle(emu: EmulatorParts, method: str, rest: str, body: bytes) -> Reply:
    """Answer one admin request; ``rest`` is the path after ``/_emulator``."""
    try:
        payload = json.loads(body.decode("utf-8")) if body.strip() else {}
    except (UnicodeDecodeError, ValueError):
        return error_reply(400, "EMU.0400", "admin request body must be JSON")
    if not isinstance(payload, dict):
        return error_reply(400, "EMU.0400", "admin request body must be a JSON object")
    path = "/".join(p for p in rest.split("/") if p)
    try:
        for route in ROUTES:
            match = route.pattern.fullmatch(path)
            if match and method in route.methods:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                return json_reply(200, route.handler(emu, params, payload))
        raise KeyError(f"no admin operation {method} /_emulator{rest.rstrip('/') or '/'}")
    except KeyError as e:
        return error_reply(404, "EMU.0404", str(e.args[0]) if e.args else "not found")
    except (TypeError, ValueError) as e:
        return error_reply(400, "EMU.0400", str(e))
