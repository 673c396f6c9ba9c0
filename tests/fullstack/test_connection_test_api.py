"""Stored secrets go only to the destination they were stored with, through a real api-server.

Airflow 3.3's ``POST /api/v2/connections/test`` re-uses a stored connection's password and secret
extras (sent back as ``***``) while the request keeps the stored host and port
(``airflow/api_fastapi/core_api/routes/public/connections.py``, ``test_connection``; the merge is
``update_orm_from_pydantic`` with ``secrets_masker.merge``). Everything else in the request is the
tester's. Here a tester points each remaining field at a recording listener: it must receive
nothing, while the stored connections, unchanged, still test OK against the emulator.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from packaging.version import Version
from testsupport.airflow_procs import BIN, airflow_cli, base_env, free_port, start, stop

from airflow_provider_metastudio.testing import EmulatorConfig, MetaStudioEmulator

try:
    from airflow import __version__ as AIRFLOW_VERSION
except ImportError:  # pragma: no cover
    AIRFLOW_VERSION = "0"

SK = "stored-SK-never/leaves+9f8e7d6c5b4a"
SECURITY_TOKEN = "stored-security-token-1a2b3c4d5e"
IAM_PASSWORD = "stored-IAM-password-7h8i9j0k"

pytestmark = [
    pytest.mark.skipif(
        Version(AIRFLOW_VERSION).release[:2] < (3, 3),
        reason="only Airflow >= 3.3 re-uses stored secrets in a connection test",
    ),
    pytest.mark.skipif(not (BIN / "airflow").exists(), reason="airflow CLI not installed"),
]


class _Recorder(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append(
            {"line": self.requestline, "headers": dict(self.headers), "body": body.decode("latin-1")}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"count": 0, "picture_modeling_jobs": [], "token": {}}')

    do_GET = do_POST = do_PUT = _record

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def listener():
    handler = type("Recorder", (_Recorder,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler.received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def emulator():
    config = EmulatorConfig(sk=SK, security_token=SECURITY_TOKEN, iam_password=IAM_PASSWORD)
    with MetaStudioEmulator(config) as emu:
        yield emu


@pytest.fixture
def api_server(tmp_path, emulator):
    home = tmp_path / "airflow-home"
    home.mkdir()
    port = free_port()
    env = base_env(home, port)
    env.update(
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        AIRFLOW__CORE__AUTH_MANAGER=(
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
    )
    airflow_cli(env, "db", "migrate")
    stored = {"ms_aksk": emulator.connection_dict(), "ms_password": emulator.connection_dict("password")}
    # A connection from before Host was used: the region's Huawei Cloud endpoint, from extras.
    stored["ms_legacy"] = {
        "conn_type": "metastudio",
        "login": emulator.ak,
        "password": SK,
        "extra": {"project_id": emulator.project_id, "region": "cn-north-4"},
    }
    conns_file = tmp_path / "connections.json"
    conns_file.write_text(json.dumps({k: {**v, "extra": json.dumps(v["extra"])} for k, v in stored.items()}))
    airflow_cli(env, "connections", "import", str(conns_file))
    proc = start(env, tmp_path, "api-server", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if requests.get(f"{base}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc[0].poll() is not None:
                pytest.fail(f"api-server did not start: {Path(proc[1]).read_text()[-3000:]}")
            time.sleep(1)
        yield base, stored
    finally:
        stop([proc])


def _masked(conn_id: str, conn: dict[str, Any]) -> dict[str, Any]:
    """The test request the UI sends for a stored connection: secrets as ``***``."""
    extra = dict(conn["extra"])
    if "security_token" in extra:
        extra["security_token"] = "***"
    body = {
        "connection_id": conn_id,
        "conn_type": "metastudio",
        "host": conn.get("host"),
        "port": conn.get("port"),
        "schema": conn.get("schema"),
        "login": conn.get("login"),
        "password": "***",
        "extra": json.dumps(extra),
    }
    return body


def _test(base: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{base}/api/v2/connections/test", json=body, timeout=120)


def test_stored_secrets_never_reach_another_destination(api_server, listener, emulator):
    base, stored = api_server
    port, received = listener
    evil = f"http://127.0.0.1:{port}"

    def changed(conn_id: str, *, drop: tuple[str, ...] = (), extra: Any = None, **fields: Any):
        body = _masked(conn_id, stored[conn_id])
        body.update(fields)
        if extra is not None:
            body["extra"] = json.dumps({**json.loads(body["extra"]), **extra})
        for key in drop:
            body.pop(key)
        return body

    attempts = {
        "endpoint extra": changed("ms_aksk", extra={"endpoint": evil}),
        "endpoint extra, password left out": changed("ms_aksk", drop=("password",), extra={"endpoint": evil}),
        "port": changed("ms_aksk", port=port),
        "host as a URL": changed("ms_aksk", host=evil, port=None, schema=None),
        "host emptied, endpoint extra": changed("ms_aksk", host="", port=None, extra={"endpoint": evil}),
        "iam_endpoint extra": changed("ms_password", extra={"iam_endpoint": evil}),
        "password flow endpoint extra": changed("ms_password", extra={"endpoint": evil}),
        "legacy endpoint extra": changed("ms_legacy", extra={"endpoint": evil}),
    }
    for name, body in attempts.items():
        resp = _test(base, body)
        # Refused by Airflow (400, host or port changed) or by the provider (status false).
        seen = json.dumps(received).lower()
        for secret in (SK, SECURITY_TOKEN, IAM_PASSWORD, "SDK-HMAC-SHA256", "Authorization", "X-Auth-Token"):
            assert secret.lower() not in seen, (name, secret, received)
        assert received == [], (name, received)
        assert resp.status_code == 400 or (resp.status_code == 200 and resp.json()["status"] is False), (
            name,
            resp.status_code,
            resp.text[:500],
        )
        assert SK not in resp.text and IAM_PASSWORD not in resp.text and SECURITY_TOKEN not in resp.text

    # The stored connections, unchanged, still test OK where they were stored to go.
    for conn_id in ("ms_aksk", "ms_password"):
        resp = _test(base, _masked(conn_id, stored[conn_id]))
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] is True, (conn_id, resp.json())
        assert "Connection successfully tested" in resp.json()["message"]
    assert received == []
