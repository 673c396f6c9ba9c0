"""A local MetaStudio emulator: a real HTTP server that plays the service, its gateway and IAM.

It serves the picture-modeling calls under ``/v1/{project_id}/digital-human/stylized/``, IAM's
``POST /v3/auth/tokens``, pre-signed cover pictures under ``/obs/...`` and an unauthenticated,
loopback-only admin interface under ``/_emulator/``. It checks AK/SK signatures and IAM tokens as
the gateway does, enforces the documented quotas, and injects faults on demand. Everything is
in-memory and stdlib-only; Airflow is imported lazily, and only by the connection helpers.

Typical use::

    with MetaStudioEmulator(EmulatorConfig(time_scale=60)) as emu:
        hook_conn = emu.connection_json()
        ...
        emu.clock.advance(30)
        assert emu.counters()["throttled_total"] == 0

Behaviour worth knowing:

- Every answer, errors and injected faults included, carries ``X-Request-Id`` (uuid4 hex); error
  bodies are ``{"error_code", "error_msg"}`` (OBS cover errors are XML, as OBS answers).
- Validation errors: 400 ``MSS.00000003`` ``"Invalid parameter: <field> (...)"``; a JSON body that
  does not parse: 400 ``MSS.00000002``; unknown job (or another tenant's): 404 ``MSS.00000003``
  ``"Job not found"`` (no published code for this case was found); body over the limit: 413
  ``APIGW.0201``; unknown API: 404 ``APIGW.0101``; wrong method: 405 ``MSS.00010004``.
- Gateway authentication failures: 401 ``APIGW.0301``, the message names the failed check but
  never the expected signature or a secret. IAM login failures: 401 with IAM's shape
  ``{"error": {"code": "IAM.0101", "message", "title"}}`` plus flat ``error_code``/``error_msg``.
- Throttling: 429 ``APIGW.0308`` with ``Retry-After`` in REAL seconds: an integer (ceil, >= 1)
  when ``time_scale == 1``, a decimal string such as ``"0.017"`` when time is scaled.
- Unconfirmed behaviours a client should survive, off by default: list quirks (the list ignores
  the sort; lists show a finished job late, as a lagging read replica would; ``update_time``
  sorts by the start time), vanished jobs (``delete_job``), per-job error answers of the details
  call (``set_job_error``) and outage windows in real seconds (``outage``).
- Two clocks: ``emu.clock`` (emulated, scaled, ``advance()``-able) drives jobs, quotas, token and
  cover expiry; ``emu.auth_clock`` (real time plus an offset) checks ``X-Sdk-Date``.
- Admin interface (no auth, loopback clients only), JSON in and out: ``GET /_emulator/health``;
  ``GET|POST /_emulator/jobs``; ``GET|DELETE /_emulator/jobs/{id}``; ``POST /_emulator/jobs/{id}/state``;
  ``PUT|DELETE /_emulator/jobs/{id}/error``; ``GET|PUT|DELETE /_emulator/faults``;
  ``GET|PUT|DELETE /_emulator/list-quirks``; ``POST /_emulator/outages``; ``GET|POST /_emulator/outcomes``;
  ``GET /_emulator/counters``; ``GET /_emulator/requests``; ``POST /_emulator/reset-counters``;
  ``GET|POST /_emulator/clock``; ``POST /_emulator/tokens``; ``POST /_emulator/tokens/expire``;
  ``GET|PUT /_emulator/quotas``; ``POST /_emulator/reset``; the asset library:
  ``GET /_emulator/assets/{id}``, ``POST /_emulator/assets/{id}/state``,
  ``PUT|DELETE /_emulator/assets/{id}/corrupt``, ``GET|POST /_emulator/asset-outcomes``.
- The asset library (``testing/_assets.py``): ``GET /v1/{project_id}/digital-assets[/{asset_id}]``
  and pre-signed file downloads under ``/obs/{project}/{asset}/files/{file_id}/{name}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from airflow_provider_metastudio.testing._config import (
    ALL_CALLS,
    CALL_ASSET_FILE,
    CALL_ASSET_LIST,
    CALL_ASSET_SHOW,
    CALL_COVER,
    CALL_CREATE,
    CALL_CREATE_BY_URL,
    CALL_IAM,
    CALL_LIST,
    CALL_SHOW,
    POST_FAULTS,
    SHORT_CIRCUIT_FAULTS,
    EmulatorConfig,
    FaultKind,
)
from airflow_provider_metastudio.testing._state import (
    AuthClock,
    EmulatorClock,
    EmulatorState,
    FaultDecision,
    Reply,
    error_reply,
    first_headers,
    json_reply,
    parse_rfc3339,
    rfc3339_micro,
    valid_app_user_id,
)

if TYPE_CHECKING:
    from airflow.models.connection import Connection

log = logging.getLogger(__name__)

_PREFIX = r"^/v1/(?P<project>[^/?]+)/digital-human/stylized/"
_ROUTES: tuple[tuple[re.Pattern[str], dict[str, str]], ...] = (
    (re.compile(_PREFIX + r"picture-modelings/(?P<job>[^/?]+)$"), {"GET": CALL_SHOW}),
    (re.compile(_PREFIX + r"picture-modelings$"), {"GET": CALL_LIST, "POST": CALL_CREATE}),
    (re.compile(_PREFIX + r"picture-modelings-by-url$"), {"POST": CALL_CREATE_BY_URL}),
    (re.compile(r"^/v3/auth/tokens$"), {"POST": CALL_IAM}),
    (re.compile(r"^/obs/(?P<project>[^/]+)/(?P<asset>[^/]+)/(?P<object>[^/]+)$"), {"GET": CALL_COVER}),
    # the asset library (issue #14)
    (re.compile(r"^/v1/(?P<project>[^/?]+)/digital-assets/(?P<asset>[^/?]+)$"), {"GET": CALL_ASSET_SHOW}),
    (re.compile(r"^/v1/(?P<project>[^/?]+)/digital-assets$"), {"GET": CALL_ASSET_LIST}),
    (
        re.compile(r"^/obs/(?P<project>[^/]+)/(?P<asset>[^/]+)/files/(?P<file>[^/]+)/(?P<object>[^/]+)$"),
        {"GET": CALL_ASSET_FILE},
    ),
)
_ADMIN_RE = re.compile(r"^/_emulator(?P<rest>/.*)?$")
_DISCARD_LIMIT_FACTOR = 8  # bodies up to 8x the limit are read and discarded to keep the connection
_LOOPBACK = ("127.", "::1", "::ffff:127.")


class _BodyError(Exception):
    def __init__(self, reply: Reply, close: bool) -> None:
        super().__init__(reply.status)
        self.reply = reply
        self.close = close


def _split_target(target: str) -> tuple[str, str]:
    """Raw path and raw query of a request target (origin-form or absolute-form)."""
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        return parts.path or "/", parts.query
    path, _, query = target.partition("?")
    return path, query.split("#", 1)[0]


def _resolve(method: str, raw_path: str) -> tuple[str, dict[str, str], bool]:
    """``(call, path params, method allowed)``; call ``"unknown"`` when no API matches."""
    for pattern, methods in _ROUTES:
        match = pattern.match(raw_path)
        if match:
            call = methods.get(method)
            if call is None:
                return next(iter(methods.values())), match.groupdict(), False
            return call, match.groupdict(), True
    return "unknown", {}, False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of clients may connect at once (listen backlog)
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: EmulatorState, keepalive_timeout: float) -> None:
        self.state = state
        self.keepalive_timeout = keepalive_timeout
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() resolves the host name with getfqdn(), which can hang for
        # seconds on machines with slow reverse DNS; the emulator never needs it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_all_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections, so stop() is prompt."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-request (timeouts, dropped pools) are routine: no stderr noise.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "MetaStudioEmulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True  # small answers must not wait for the client's delayed ACK
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # Idle keep-alive connections are closed after this long, as a real front end does.
        self.connection.settimeout(self.server.keepalive_timeout)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line of a cover download holds a signed URL: redacted like the client's logs.
        from airflow_provider_metastudio.models import redact_url

        log.debug("%s - %s", self.address_string(), redact_url(format % args))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unsupported method, header too long) in the
        gateway's JSON shape, with an ``X-Request-Id`` like every other answer."""
        self.close_connection = True
        short = self.responses.get(code, ("Error",))[0]
        self._send(error_reply(code, "APIGW.0201", message or short), uuid.uuid4().hex)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    # ------------------------------------------------------------------ plumbing

    def _read_body(self) -> bytes:
        limit = self.server.state.config.max_body_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(limit)
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            raise _BodyError(
                error_reply(400, "APIGW.0201", "Bad request: invalid Content-Length"), True
            ) from None
        if length > limit:
            too_large = error_reply(413, "APIGW.0201", f"Request entity too large (at most {limit} bytes)")
            if length > limit * _DISCARD_LIMIT_FACTOR:
                raise _BodyError(too_large, True)
            remaining = length
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    raise _BodyError(too_large, True)
                remaining -= len(chunk)
            raise _BodyError(too_large, False)
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise ConnectionError("client closed the connection before sending the whole body")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(
                    error_reply(400, "APIGW.0201", "Bad request: invalid chunked body"), True
                ) from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > limit:
                raise _BodyError(
                    error_reply(413, "APIGW.0201", f"Request entity too large (at most {limit} bytes)"), True
                )
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)

    def _send(self, reply: Reply, request_id: str) -> None:
        # Status line, headers and body leave in a single write: split writes meet Nagle and
        # delayed ACKs and cost ~40 ms per keep-alive round trip.
        self.log_request(reply.status)
        phrase = self.responses.get(reply.status, ("",))[0]
        lines = [
            f"{self.protocol_version} {reply.status} {phrase}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
            f"X-Request-Id: {request_id}",
        ]
        if reply.content_type:
            lines.append(f"Content-Type: {reply.content_type}")
        lines.extend(f"{name}: {value}" for name, value in reply.headers.items())
        lines.append(f"Content-Length: {len(reply.body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.wfile.write(head + reply.body)

    def _drop(self) -> None:
        """Close the connection without sending a single byte of response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self) -> None:
        state = self.server.state
        started = time.monotonic()
        request_id = uuid.uuid4().hex
        method = self.command
        target = self.path
        raw_path, raw_query = _split_target(target)
        admin = _ADMIN_RE.match(raw_path)
        call, params, allowed = ("admin", {}, True) if admin else _resolve(method, raw_path)
        project = unquote(params["project"]) if "project" in params else None

        def record(status: int, fault: FaultDecision | None = None) -> None:
            # Recorded before the answer goes out: a client that has its response can trust
            # the counters and the request log to include it already.
            state.record(
                method=method,
                target=target,
                path=raw_path,
                call=call if allowed else "unknown",
                status=status,
                project_id=project,
                request_id=request_id,
                fault=fault,
                started=started,
            )

        try:
            body = self._read_body()
        except _BodyError as e:
            if e.close:
                self.close_connection = True
            if not admin:
                record(e.reply.status)
            self._send(e.reply, request_id)
            return

        if admin:
            self._send(self._admin(method, admin.group("rest") or "/", raw_query, body), request_id)
            return
        if not allowed:
            if call == "unknown":
                reply = error_reply(404, "APIGW.0101", "The API does not exist or has not been published")
            else:
                reply = error_reply(405, "MSS.00010004", "SR.method not allowed")
            record(reply.status)
            self._send(reply, request_id)
            return

        fault = state.pick_fault(call) if call in ALL_CALLS else None
        if fault is not None:
            state.record_fault(call, fault)
            log.debug("injecting fault %s into %s %s", fault.kind.value, method, raw_path)
            if fault.kind is FaultKind.DELAY:
                time.sleep(fault.delay)
        if fault is not None and fault.kind in SHORT_CIRCUIT_FAULTS:
            if fault.kind is FaultKind.DROP:
                record(0, fault)
                self._drop()
                return
            reply = state.fault_reply(fault)
        else:
            try:
                reply = self._process(call, params, method, raw_path, raw_query, body, request_id)
            except Exception:  # an emulator bug must still answer like a service would
                log.exception("emulator failed on %s %s", method, raw_path)
                reply = error_reply(500, "MSS.00000004", "Internal Error")
            if fault is not None and fault.kind in POST_FAULTS:
                if fault.kind is FaultKind.DROP_AFTER:
                    record(0, fault)
                    self._drop()
                    return
                reply = _spoil(reply, fault)
        record(reply.status, fault)
        self._send(reply, request_id)

    def _process(
        self,
        call: str,
        params: dict[str, str],
        method: str,
        raw_path: str,
        raw_query: str,
        body: bytes,
        request_id: str,
    ) -> Reply:
        state = self.server.state
        if call == CALL_IAM:
            reply, tenant = state.iam_tokens(body)
            if tenant is not None:
                throttled = state.throttle(CALL_IAM, tenant)
                if throttled is not None:
                    return throttled
            return reply
        if call == CALL_COVER:
            throttled = state.throttle(CALL_COVER, unquote(params["project"]))
            if throttled is not None:  # only when a "cover" rate is configured
                return throttled
            return state.cover(
                unquote(params["project"]),
                unquote(params["asset"]),
                unquote(params["object"]),
                raw_path,
                raw_query,
                request_id,
            )
        if call == CALL_ASSET_FILE:
            throttled = state.throttle(CALL_ASSET_FILE, unquote(params["project"]))
            if throttled is not None:  # only when an "asset_file" rate is configured
                return throttled
            return state.assets.download(
                unquote(params["project"]),
                unquote(params["asset"]),
                unquote(params["file"]),
                raw_path,
                raw_query,
                request_id,
            )
        project = unquote(params["project"])
        principal = state.authenticate(
            method=method,
            raw_path=raw_path,
            raw_query=raw_query,
            headers=first_headers(self.headers.items()),
            body=body,
            path_project=project,
        )
        if isinstance(principal, Reply):
            return principal
        throttled = state.throttle(call, principal.project_id)
        if throttled is not None:
            return throttled
        app_user = self.headers.get("X-App-UserId")
        if app_user is not None and (not valid_app_user_id(app_user) or len(app_user) > 256):
            return error_reply(
                400,
                "MSS.00000003",
                "Invalid parameter: X-App-UserId must be printable ASCII (no Chinese characters)",
            )
        content_type = self.headers.get("Content-Type")
        if call == CALL_ASSET_SHOW:
            return state.assets.show(project, unquote(params["asset"]))
        if call == CALL_ASSET_LIST:
            return state.assets.list(project, raw_query)
        if call == CALL_SHOW:
            return state.show(project, unquote(params["job"]))
        if call == CALL_LIST:
            return state.list_jobs(project, raw_query)
        if call == CALL_CREATE:
            return state.create_from_upload(project, content_type, body)
        return state.create_from_url(project, content_type, body)

    # ------------------------------------------------------------------ admin

    def _admin(self, method: str, rest: str, raw_query: str, body: bytes) -> Reply:
        host = str(self.client_address[0])
        if not host.startswith(_LOOPBACK):
            return error_reply(403, "EMU.0403", "the admin interface answers loopback clients only")
        try:
            payload = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (UnicodeDecodeError, ValueError):
            return error_reply(400, "EMU.0400", "admin request body must be JSON")
        if not isinstance(payload, dict):
            return error_reply(400, "EMU.0400", "admin request body must be a JSON object")
        try:
            return _admin_call(self.server.state, method, rest.rstrip("/") or "/", payload)
        except KeyError as e:
            return error_reply(404, "EMU.0404", str(e.args[0]) if e.args else "not found")
        except (TypeError, ValueError) as e:
            return error_reply(400, "EMU.0400", str(e))


def _spoil(reply: Reply, fault: FaultDecision) -> Reply:
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


def _admin_call(state: EmulatorState, method: str, path: str, payload: dict[str, Any]) -> Reply:
    """The admin interface; the same operations as the :class:`MetaStudioEmulator` methods."""
    parts = [p for p in path.split("/") if p]
    route = (method, "/".join(parts[:1]))
    if route == ("GET", "health") and len(parts) == 1:
        return json_reply(200, {"status": "ok", "base_url": state.base_url})
    if parts[:1] == ["jobs"]:
        if method == "GET" and len(parts) == 1:
            return json_reply(200, {"jobs": [state.job_record(j) for j in state.jobs()]})
        if method == "POST" and len(parts) == 1:
            job = state.new_job(
                project_id=str(payload.get("project_id") or state.config.project_id),
                name=str(payload.get("name") or "emulated_model"),
                style_id=str(payload.get("style_id") or "system_male_001"),
                source="admin",
                outcome=payload.get("outcome"),
                waiting_seconds=payload.get("waiting_seconds"),
                processing_seconds=payload.get("processing_seconds"),
                error_code=payload.get("error_code"),
                error_msg=payload.get("error_msg"),
                job_id=payload.get("job_id"),
            )
            return json_reply(200, state.job_info(job))
        if method == "GET" and len(parts) == 2:
            return json_reply(200, state.job_record(state.job(unquote(parts[1]))))
        if method == "DELETE" and len(parts) == 2:
            state.delete_job(unquote(parts[1]))
            return json_reply(200, {"deleted": unquote(parts[1])})
        if len(parts) == 3 and parts[2] == "error":
            if method == "PUT":
                if "status" not in payload or "error_code" not in payload:
                    raise ValueError('body must be {"status": 400, "error_code": "MSS.00000003"}')
                state.set_job_error(
                    unquote(parts[1]), payload["status"], payload["error_code"], payload.get("error_msg")
                )
                return json_reply(200, state.fault_settings()["job_errors"])
            if method == "DELETE":
                state.clear_job_error(unquote(parts[1]))
                return json_reply(200, state.fault_settings()["job_errors"])
        if method == "POST" and len(parts) == 3 and parts[2] == "state":
            if not isinstance(payload.get("state"), str):
                raise ValueError('body must be {"state": "CANCELED"} (or another job state)')
            job = state.force_state(
                unquote(parts[1]),
                payload["state"],
                error_code=payload.get("error_code"),
                error_msg=payload.get("error_msg"),
            )
            return json_reply(200, state.job_info(job))
    if parts[:1] == ["assets"] and len(parts) >= 2:  # the asset library (issue #14)
        asset_id = unquote(parts[1])
        if method == "GET" and len(parts) == 2:
            return json_reply(200, state.assets.info(state.assets.job_of(asset_id)))
        if method == "POST" and parts[2:] == ["state"]:
            if not isinstance(payload.get("state"), str):
                raise ValueError('body must be {"state": "DELETED"} (or another asset state)')
            return json_reply(200, state.assets.force_state(asset_id, payload["state"]))
        if parts[2:] == ["corrupt"] and method in ("PUT", "POST"):
            state.assets.corrupt(asset_id, str(payload.get("category", "MAIN")), payload.get("count"))
            return json_reply(200, dict(state.assets.settings()))
        if parts[2:] == ["corrupt"] and method == "DELETE":
            state.assets.clear_corruption(asset_id)
            return json_reply(200, dict(state.assets.settings()))
    if parts == ["asset-outcomes"] and method in ("GET", "POST"):
        if method == "POST":
            if "pattern" not in payload:
                raise ValueError('body must be {"pattern": "*blocked*", "state": "BLOCK"}')
            state.assets.set_outcome(str(payload["pattern"]), payload.get("state"))
        return json_reply(200, dict(state.assets.settings()))
    if parts == ["faults"]:
        if method == "GET":
            return json_reply(200, state.fault_settings())
        if method == "DELETE":
            state.clear_faults()
            return json_reply(200, state.fault_settings())
        if method in ("PUT", "POST"):
            if payload.get("clear"):
                state.clear_faults()
            if "rates" in payload or "delay_seconds" in payload or "calls" in payload:
                state.set_faults(
                    payload.get("rates"),
                    delay_seconds=payload.get("delay_seconds"),
                    calls=payload.get("calls"),
                    replace=bool(payload.get("replace", True)),
                )
            for shot in payload.get("one_shots") or []:
                if not isinstance(shot, dict):
                    raise ValueError("one_shots must be a list of objects")
                state.inject(
                    str(shot.get("call", "*")),
                    str(shot["kind"]),
                    int(shot.get("count", 1)),
                    delay=shot.get("delay"),
                    status=shot.get("status"),
                    retry_after=shot.get("retry_after"),
                    size=shot.get("size"),
                )
            return json_reply(200, state.fault_settings())
    if parts == ["list-quirks"]:
        if method in ("PUT", "POST"):
            return json_reply(200, state.set_list_quirks(**payload))
        if method == "DELETE":
            return json_reply(200, state.set_list_quirks())
        if method == "GET":
            return json_reply(200, state.list_quirks())
    if parts == ["outages"] and method == "POST":
        if "seconds" not in payload:
            raise ValueError('body must be {"seconds": 5, "call": "*", "kind": "503"}')
        state.outage(
            float(payload["seconds"]),
            call=str(payload.get("call", "*")),
            kind=str(payload.get("kind", "503")),
        )
        return json_reply(200, state.fault_settings()["outages"])
    if parts == ["outcomes"]:
        if method == "POST":
            if payload.get("replace"):
                state.clear_outcomes()
            patterns = payload.get("patterns") or {}
            if "pattern" in payload:
                patterns = {**patterns, str(payload["pattern"]): payload.get("state")}
            for pattern, outcome in patterns.items():
                state.set_outcome(str(pattern), outcome)
            if payload.get("weights"):
                state.set_outcome_weights(payload["weights"])
        if method in ("GET", "POST"):
            return json_reply(200, state.outcome_settings())
    if parts == ["counters"] and method == "GET":
        return json_reply(200, state.counters())
    if parts == ["requests"] and method == "GET":
        return json_reply(200, {"requests": state.request_log()})
    if parts == ["reset-counters"] and method == "POST":
        state.reset_counters()
        return json_reply(200, state.counters())
    if parts == ["reset"] and method == "POST":
        state.reset()
        return json_reply(200, {"status": "reset"})
    if parts == ["clock"]:
        if method == "POST":
            if "advance" in payload:
                state.clock.advance(float(payload["advance"]))
            if "auth_time" in payload:
                state.auth_clock.set(
                    parse_rfc3339(str(payload["auth_time"])), frozen=bool(payload.get("frozen"))
                )
            if "auth_shift" in payload:
                state.auth_clock.shift(float(payload["auth_shift"]))
            if payload.get("auth_reset"):
                state.auth_clock.reset()
        if method in ("GET", "POST"):
            return json_reply(200, _clock_view(state))
    if parts[:1] == ["tokens"]:
        if method == "POST" and parts == ["tokens", "expire"]:
            return json_reply(200, {"expired": state.expire_tokens()})
        if method == "POST" and parts == ["tokens"]:
            token = state.issue_token(payload.get("project_id"), ttl=payload.get("ttl"))
            return json_reply(
                200,
                {
                    "token": token.value,
                    "project_id": token.project_id,
                    "expires_at": rfc3339_micro(token.expires_at),
                },
            )
    if parts == ["quotas"]:
        if method in ("PUT", "POST"):
            return json_reply(
                200,
                state.set_quotas(
                    enabled=payload.get("enabled"),
                    rates=payload.get("rates"),
                    global_rates=payload.get("global_rates"),
                    burst=payload.get("burst"),
                    tolerance=payload.get("tolerance"),
                ),
            )
        if method == "GET":
            return json_reply(200, state.quota_settings())
    raise KeyError(f"no admin operation {method} /_emulator{path}")


def _clock_view(state: EmulatorState) -> dict[str, Any]:
    now = state.clock.now()
    auth_now = state.auth_clock.now()
    return {
        "now": rfc3339_micro(now),
        "now_timestamp": now,
        "time_scale": state.clock.time_scale,
        "auth_now": rfc3339_micro(auth_now),
        "auth_now_timestamp": auth_now,
    }


class MetaStudioEmulator:
    """A MetaStudio emulator running on a background thread; use it as a context manager.

    :param config: the configuration; defaults to :class:`EmulatorConfig` ``()``.
    :param overrides: individual :class:`EmulatorConfig` fields, applied on top of ``config``.
    """

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        base = config or EmulatorConfig()
        self.config = replace(base, **overrides) if overrides else base
        self.state = EmulatorState(self.config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> MetaStudioEmulator:
        """Bind and serve on a background thread; return ``self``."""
        if self._server is not None:
            return self
        server = _Server((self.config.host, self.config.port), self.state, self.config.keepalive_timeout)
        self._server = server
        host, port = server.server_address[:2]
        shown = str(host)
        if shown in ("0.0.0.0", "::", ""):
            shown = "127.0.0.1"
        if ":" in shown:
            shown = f"[{shown}]"
        self.state.base_url = (self.config.advertised_url or f"http://{shown}:{port}").rstrip("/")
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="metastudio-emulator",
            daemon=True,
        )
        self._thread.start()
        log.info("MetaStudio emulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        # serve_forever() only notices shutdown() between select() calls; poke the listening
        # socket so a test's teardown does not wait out a poll interval.
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bound_host, bound_host)
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((host, bound_port), timeout=0.5).close()
            stopper.join(0.01)
        server.close_all_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MetaStudioEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses and credentials

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the service, IAM and cover endpoint alike."""
        if not self.state.base_url:
            raise RuntimeError("the emulator is not started")
        return self.state.base_url

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return int(self._server.server_address[1])

    @property
    def ak(self) -> str:
        return self.config.ak

    @property
    def sk(self) -> str:
        return self.config.sk

    @property
    def project_id(self) -> str:
        return self.config.project_id

    @property
    def security_token(self) -> str | None:
        return self.config.security_token

    @property
    def clock(self) -> EmulatorClock:
        """The emulated (possibly scaled) clock: ``emu.clock.advance(seconds)`` moves every job."""
        return self.state.clock

    @property
    def auth_clock(self) -> AuthClock:
        """The gateway's clock for ``X-Sdk-Date`` checks (real time plus an offset)."""
        return self.state.auth_clock

    def connection_destination(self) -> dict[str, Any]:
        """``host``, ``port`` and ``schema`` (the URL scheme) of this emulator, as the connection keeps
        them: a stored connection's secrets only go where these fields say (see ``config.py``)."""
        parts = urlsplit(self.base_url)
        return {"host": parts.hostname, "port": parts.port, "schema": parts.scheme}

    def connection_extra(self) -> dict[str, Any]:
        """Connection extras for this emulator: ``project_id``, ``iam_endpoint`` (and ``endpoint``
        when the advertised URL has a path); the server itself is in :meth:`connection_destination`."""
        extra: dict[str, Any] = {"project_id": self.project_id, "iam_endpoint": self.base_url}
        if urlsplit(self.base_url).path not in ("", "/"):
            extra["endpoint"] = self.base_url
        if self.config.security_token:
            extra["security_token"] = self.config.security_token
        return extra

    def connection_dict(self, auth_type: str = "aksk") -> dict[str, Any]:
        """The Airflow connection as a dict (JSON form), for ``aksk``, ``token`` or ``password``.

        :param auth_type: ``aksk`` (AK in login, SK in password), ``token`` (a freshly issued IAM
            token in password) or ``password`` (IAM user/password, account in ``domain``).
        """
        extra = self.connection_extra()
        dest = {"conn_type": "metastudio", **self.connection_destination()}
        if auth_type == "aksk":
            return {**dest, "login": self.ak, "password": self.sk, "extra": extra}
        if auth_type == "token":
            extra.pop("security_token", None)
            return {
                **dest,
                "password": self.issue_token(),
                "extra": {**extra, "auth_type": "token"},
            }
        if auth_type == "password":
            extra.pop("security_token", None)
            return {
                **dest,
                "login": self.config.iam_user,
                "password": self.config.iam_password,
                "extra": {**extra, "auth_type": "password", "domain": self.config.iam_domain},
            }
        raise ValueError(f"auth_type must be aksk, token or password, not {auth_type!r}")

    def connection_json(self, auth_type: str = "aksk") -> str:
        """The connection in Airflow's JSON form, e.g. for ``AIRFLOW_CONN_METASTUDIO_DEFAULT``.

        :param auth_type: see :meth:`connection_dict`.
        """
        return json.dumps(self.connection_dict(auth_type))

    def connection_uri(self, auth_type: str = "aksk") -> str:
        """The connection as an Airflow URI: ``metastudio://AK:SK@127.0.0.1:PORT/http?project_id=...``.

        Login and password are percent-encoded with nothing left bare, so any SK survives.

        :param auth_type: see :meth:`connection_dict`.
        """
        conn = self.connection_dict(auth_type)
        login = quote(str(conn.get("login") or ""), safe="")
        password = quote(str(conn.get("password") or ""), safe="")
        userinfo = f"{login}:{password}@" if password else (f"{login}@" if login else "")
        host = conn["host"] if ":" not in conn["host"] else f"[{conn['host']}]"
        port = f":{conn['port']}" if conn["port"] else ""
        return f"metastudio://{userinfo}{host}{port}/{conn['schema']}?{urlencode(conn['extra'])}"

    def airflow_connection(self, conn_id: str = "metastudio_default", auth_type: str = "aksk") -> Connection:
        """An ``airflow.models.connection.Connection`` for this emulator (imports Airflow lazily).

        :param conn_id: the connection id to give it.
        :param auth_type: see :meth:`connection_dict`.
        """
        from airflow.models.connection import Connection

        conn = self.connection_dict(auth_type)
        return Connection(
            conn_id=conn_id,
            conn_type=conn["conn_type"],
            host=conn["host"],
            port=conn["port"],
            schema=conn["schema"],
            login=conn.get("login"),
            password=conn.get("password"),
            extra=json.dumps(conn["extra"]),
        )

    # ------------------------------------------------------------------ jobs

    def create_job(
        self,
        name: str = "emulated_model",
        style_id: str = "system_male_001",
        *,
        project_id: str | None = None,
        outcome: str | None = None,
        waiting_seconds: float | None = None,
        processing_seconds: float | None = None,
        error_code: str | None = None,
        error_msg: str | None = None,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a job directly (no HTTP, no quota, not counted as an API create).

        :param name: model name (also matched against the outcome patterns).
        :param style_id: style id (not validated here, so tests can seed odd data).
        :param project_id: owning project; the primary one by default.
        :param outcome: terminal state to end in; else patterns, then weights decide.
        :param waiting_seconds: emulated seconds in WAITING (config default otherwise).
        :param processing_seconds: emulated seconds in PROCESSING.
        :param error_code: error code shown when the job FAILED.
        :param error_msg: error message shown when the job FAILED.
        :param job_id: an explicit job id (e.g. to replay a recorded request).
        :return: the job as the service shows it.
        """
        job = self.state.new_job(
            project_id=project_id or self.project_id,
            name=name,
            style_id=style_id,
            source="admin",
            outcome=outcome,
            waiting_seconds=waiting_seconds,
            processing_seconds=processing_seconds,
            error_code=error_code,
            error_msg=error_msg,
            job_id=job_id,
        )
        return self.state.job_info(job)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job as ``GET picture-modelings/{job_id}`` would show it now.

        :raises KeyError: no such job.
        """
        return self.state.job_info(self.state.job(job_id))

    def job_record(self, job_id: str) -> dict[str, Any]:
        """Everything known about a job: service view, outcome, durations, uploaded image digest."""
        return self.state.job_record(self.state.job(job_id))

    def jobs(self) -> list[dict[str, Any]]:
        """Every job's record, in creation order."""
        return [self.state.job_record(j) for j in sorted(self.state.jobs(), key=lambda j: j.seq)]

    def set_state(
        self, job_id: str, state: str, *, error_code: str | None = None, error_msg: str | None = None
    ) -> dict[str, Any]:
        """Pin a job to ``state`` from now on (e.g. ``CANCELED``).

        :param job_id: the job.
        :param state: any job state, or an upper-case word the contract does not list (the job
            then shows it as a started, unfinished job), to test handling of unknown states.
        :param error_code: error code to show if the state is FAILED.
        :param error_msg: error message to show if the state is FAILED.
        """
        return self.state.job_info(
            self.state.force_state(job_id, state, error_code=error_code, error_msg=error_msg)
        )

    def delete_job(self, job_id: str) -> None:
        """Make a job vanish: the details call answers 404 as for an unknown job, lists omit it.

        :raises KeyError: no such job.
        """
        self.state.delete_job(job_id)

    def set_job_error(self, job_id: str, status: int, error_code: str, error_msg: str | None = None) -> None:
        """Make the details call for ``job_id`` answer ``status`` with ``{"error_code", "error_msg"}``
        until :meth:`clear_job_error` (lists still show the job). The id need not exist.

        :param status: an HTTP error status, e.g. 400 or 404.
        :param error_code: e.g. ``MSS.00000003``.
        :param error_msg: the message; by default one that names the job id.
        """
        self.state.set_job_error(job_id, status, error_code, error_msg)

    def clear_job_error(self, job_id: str) -> None:
        """The details call for ``job_id`` answers normally again."""
        self.state.clear_job_error(job_id)

    def set_outcome(self, pattern: str, state: str | None) -> None:
        """Jobs created from now on whose name matches ``pattern`` (fnmatch) end in ``state``.

        :param pattern: e.g. ``"*fail*"``; the first matching pattern (insertion order) wins.
        :param state: a terminal state, or ``None`` to remove the pattern.
        """
        self.state.set_outcome(pattern, state)

    def set_outcome_weights(self, weights: Mapping[str, float]) -> None:
        """Relative weights of the terminal states for jobs no pattern matches (seeded draw).

        :param weights: e.g. ``{"SUCCEED": 0.8, "FAILED": 0.2}``.
        """
        self.state.set_outcome_weights(weights)

    # ------------------------------------------------------------------ faults, quotas, tokens

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

        :param call: ``show``, ``list``, ``create``, ``create_by_url``, ``iam``, ``cover`` or ``*``
            (any of the four service calls).
        :param kind: a :class:`FaultKind` or its value (``"500"``, ``"drop"``, ...).
        :param count: how many requests it hits.
        :param delay: real seconds for a ``delay`` fault (``delay_seconds`` by default).
        :param status: 502, 503 or 504 for an ``html`` fault (random otherwise).
        :param retry_after: emulated seconds announced by a ``429`` fault (1 by default).
        :param size: body size of a ``huge`` fault.
        """
        self.state.inject(call, kind, count, delay=delay, status=status, retry_after=retry_after, size=size)

    def set_faults(
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
        """
        return self.state.set_faults(rates, delay_seconds=delay_seconds, calls=calls, replace=replace)

    def outage(self, seconds: float, *, call: str = "*", kind: str | FaultKind = "503") -> None:
        """Answer every request of ``call`` with fault ``kind`` for the next ``seconds`` REAL seconds.

        Outages come before one-shot faults (which wait for the outage to end) and are counted in
        the fault counters like any other fault.

        :param seconds: real seconds (not emulated: an outage is about clients' retry timing).
        :param call: a call name as for :meth:`inject`, or ``*`` (any of the four service calls).
        :param kind: any :class:`FaultKind` (``"500"``, ``"503"``, ``"html"``, ``"drop"``, ``"429"``...).
        """
        self.state.outage(seconds, call=call, kind=kind)

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
        return self.state.set_list_quirks(
            ignore_sort=ignore_sort, visibility_delay=visibility_delay, stale_update_time=stale_update_time
        )

    def clear_faults(self) -> None:
        """Remove every probabilistic share, queued one-shot, outage, per-job error and list quirk."""
        self.state.clear_faults()

    def set_quotas(
        self,
        *,
        enabled: bool | None = None,
        rates: Mapping[str, float] | None = None,
        global_rates: Mapping[str, float] | None = None,
        burst: float | None = None,
        tolerance: float | None = None,
    ) -> dict[str, Any]:
        """Change quotas at run time (history is cleared).

        :param enabled: switch quotas on or off.
        :param rates: per-tenant requests/second by call (merged; 0 or None removes a call's limit).
        :param global_rates: all-tenants requests/second by call (merged likewise).
        :param burst: back-to-back requests allowed per tenant and call.
        :param tolerance: how early (emulated seconds) a request may arrive and still pass.
        """
        return self.state.set_quotas(
            enabled=enabled, rates=rates, global_rates=global_rates, burst=burst, tolerance=tolerance
        )

    def issue_token(self, project_id: str | None = None, *, ttl: float | None = None) -> str:
        """Issue an IAM token directly (as a password login would) and return it.

        :param project_id: its project (the primary one by default).
        :param ttl: lifetime in emulated seconds (``token_ttl`` by default).
        """
        return self.state.issue_token(project_id, ttl=ttl).value

    def expire_tokens(self) -> int:
        """Invalidate every token issued so far (a token expiring mid-wait); return how many were live."""
        return self.state.expire_tokens()

    # ------------------------------------------------------------------ observation

    def counters(self) -> dict[str, Any]:
        """Requests per call, per (call, status), 429s, faults, jobs created, requests per path."""
        return self.state.counters()

    def count(self, call: str | None = None, status: int | None = None) -> int:
        """How many requests were seen, optionally for one call and/or status.

        :param call: a call name (``show``, ``list``, ..., ``unknown``), or all.
        :param status: an HTTP status (0 for dropped connections), or all.
        """
        statuses = self.counters()["statuses"]
        total = 0
        for name, by_status in statuses.items():
            if call is not None and name != call:
                continue
            for code, n in by_status.items():
                if status is None or int(code) == status:
                    total += n
        return total

    def request_log(self) -> list[dict[str, Any]]:
        """Every request (admin calls excluded): method, raw path, call, status, times, fault."""
        return self.state.request_log()

    def reset_counters(self) -> None:
        """Zero every counter and empty the request log."""
        self.state.reset_counters()

    def reset(self) -> None:
        """Forget jobs, tokens, quota history, one-shot faults, outages, per-job errors, list quirks
        and counters; keep fault shares, quotas and outcomes."""
        self.state.reset()

    # ------------------------------------------------------------------ the asset library (issue #14)

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        """The asset as ``GET /v1/{project_id}/digital-assets/{asset_id}`` would show it now.

        :raises KeyError: no job has this ``model_asset_id``.
        """
        return self.state.assets.info(self.state.assets.job_of(asset_id))

    def asset_file_bytes(self, asset_id: str, category: str = "MAIN") -> bytes:
        """The true content of one of an asset's files (whatever its state)."""
        files = self.state.assets.files(self.state.assets.job_of(asset_id))
        return next(f.data for f in files if f.category == category)

    def set_asset_state(self, asset_id: str, state: str) -> dict[str, Any]:
        """Pin an asset to ``state`` from now on (``DELETED``, ``BLOCK``, ``FAILED``, an unknown word)."""
        return self.state.assets.force_state(asset_id, state)

    def set_asset_outcome(self, pattern: str, state: str | None) -> None:
        """Assets of jobs whose name matches ``pattern`` end ``ACTIVED``, ``FAILED`` or ``BLOCK``."""
        self.state.assets.set_outcome(pattern, state)

    def corrupt_asset_file(self, asset_id: str, category: str = "MAIN", count: int | None = None) -> None:
        """Serve wrong bytes (same length, so only the MD5 tells) for one of an asset's files.

        :param count: how many downloads are corrupted; None: every one until :meth:`reset`.
        """
        self.state.assets.corrupt(asset_id, category, count)
