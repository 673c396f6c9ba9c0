"""The emulator's HTTP side: routing, body reading, fault application and the request log.

Service logic lives in the components (:mod:`._gateway`, :mod:`._quotas`, :mod:`._faults`,
:mod:`._jobs`, :mod:`._assets`, :mod:`._iam`, :mod:`._recorder`); the admin interface is the route
table in :mod:`._admin`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import socketserver
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_provider_metastudio.testing import _admin
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
    FaultKind,
)
from airflow_provider_metastudio.testing._faults import FaultDecision, spoil
from airflow_provider_metastudio.testing._parts import EmulatorParts
from airflow_provider_metastudio.testing._replies import Reply, error_reply, first_headers, valid_app_user_id

log = logging.getLogger("airflow_provider_metastudio.testing.emulator")

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

    def __init__(self, address: tuple[str, int], emulator: EmulatorParts, keepalive_timeout: float) -> None:
        self.emulator = emulator
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
        # Checked first: redact_url's module imports Airflow, which takes seconds and would delay
        # the first answer of a stdlib-only emulator (the CLI) that logs nothing anyway.
        if not log.isEnabledFor(logging.DEBUG):
            return
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
        limit = self.server.emulator.config.max_body_bytes
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
        emu = self.server.emulator
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
            emu.recorder.record(
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
            self._send(self._admin(method, admin.group("rest") or "/", body), request_id)
            return
        if not allowed:
            if call == "unknown":
                reply = error_reply(404, "APIGW.0101", "The API does not exist or has not been published")
            else:
                reply = error_reply(405, "MSS.00010004", "SR.method not allowed")
            record(reply.status)
            self._send(reply, request_id)
            return

        fault = emu.faults.pick(call) if call in ALL_CALLS else None
        if fault is not None:
            emu.recorder.fault_injected(call, fault)
            log.debug("injecting fault %s into %s %s", fault.kind.value, method, raw_path)
            if fault.kind is FaultKind.DELAY:
                time.sleep(fault.delay)
        if fault is not None and fault.kind in SHORT_CIRCUIT_FAULTS:
            if fault.kind is FaultKind.DROP:
                record(0, fault)
                self._drop()
                return
            reply = emu.faults.reply(fault)
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
                reply = spoil(reply, fault)
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
        emu = self.server.emulator
        if call == CALL_IAM:
            reply, tenant = emu.iam.login(body)
            if tenant is not None:
                throttled = emu.quotas.throttle(CALL_IAM, tenant)
                if throttled is not None:
                    return throttled
            return reply
        if call == CALL_COVER:
            throttled = emu.quotas.throttle(CALL_COVER, unquote(params["project"]))
            if throttled is not None:  # only when a "cover" rate is configured
                return throttled
            return emu.jobs.cover(
                unquote(params["project"]),
                unquote(params["asset"]),
                unquote(params["object"]),
                raw_path,
                raw_query,
                request_id,
            )
        if call == CALL_ASSET_FILE:
            throttled = emu.quotas.throttle(CALL_ASSET_FILE, unquote(params["project"]))
            if throttled is not None:  # only when an "asset_file" rate is configured
                return throttled
            return emu.assets.download(
                unquote(params["project"]),
                unquote(params["asset"]),
                unquote(params["file"]),
                raw_path,
                raw_query,
                request_id,
            )
        project = unquote(params["project"])
        principal = emu.gateway.authenticate(
            method=method,
            raw_path=raw_path,
            raw_query=raw_query,
            headers=first_headers(self.headers.items()),
            body=body,
            path_project=project,
        )
        if isinstance(principal, Reply):
            return principal
        throttled = emu.quotas.throttle(call, principal.project_id)
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
            return emu.assets.show(project, unquote(params["asset"]))
        if call == CALL_ASSET_LIST:
            return emu.assets.list(project, raw_query)
        if call == CALL_SHOW:
            return emu.jobs.show(project, unquote(params["job"]))
        if call == CALL_LIST:
            return emu.jobs.list_jobs(project, raw_query)
        if call == CALL_CREATE:
            return emu.jobs.create_from_upload(project, content_type, body)
        return emu.jobs.create_from_url(project, content_type, body)

    # ------------------------------------------------------------------ admin

    def _admin(self, method: str, rest: str, body: bytes) -> Reply:
        host = str(self.client_address[0])
        if not host.startswith(_LOOPBACK):
            return error_reply(403, "EMU.0403", "the admin interface answers loopback clients only")
        return _admin.handle(self.server.emulator, method, rest, body)
