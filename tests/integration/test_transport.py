"""What a real deployment puts between the hook and the service: an egress proxy (sync, async and
the triggerer's poller), a Test button that answers fast, and logs of HTTP libraries that must not
carry signed URLs. Everything on 127.0.0.1: the emulator, a recording proxy, a silent listener."""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from airflow_provider_metastudio import transport as transport_module
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.triggers.picture_modeling import MetaStudioPictureModelingJobTrigger

CONN_ENV = "AIRFLOW_CONN_METASTUDIO_DEFAULT"
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
NO_PROXY_VARS = ("NO_PROXY", "no_proxy")
FAST = pytest.mark.metastudio_emulator(waiting_seconds=0.2, processing_seconds=0.5, quotas_enabled=False)


# -- a recording forward proxy for plain http ---------------------------------------------------------


@dataclass
class ProxiedRequest:
    request_line: str
    headers: dict[str, str] = field(default_factory=dict)


class RecordingProxy:
    """A forward proxy on 127.0.0.1 for plain http (absolute-URI requests): records each request
    line and its headers, then forwards it to the target, which must be on 127.0.0.1 too."""

    def __init__(self) -> None:
        self.requests: list[ProxiedRequest] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                proxy.requests.append(ProxiedRequest(self.requestline, dict(self.headers.items())))
                target = urlsplit(self.path)
                if target.scheme != "http" or target.hostname != "127.0.0.1":  # never leave the machine
                    self.send_error(502, "this test proxy only forwards to http://127.0.0.1")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower()
                    not in ("proxy-authorization", "proxy-connection", "connection", "keep-alive")
                }
                upstream = http.client.HTTPConnection("127.0.0.1", target.port or 80, timeout=30)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    upstream.request(self.command, path, body=body, headers=headers)
                    resp = upstream.getresponse()
                    data = resp.read()
                finally:
                    upstream.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [urlsplit(r.request_line.split()[1]).path for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recording_proxy() -> Iterator[RecordingProxy]:
    proxy = RecordingProxy()
    yield proxy
    proxy.close()


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable from the machine: the target and the proxy are both on 127.0.0.1, so a
    NO_PROXY=127.0.0.1 or localhost of the CI would bypass the proxy under test."""
    for name in PROXY_VARS + NO_PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sync_and_async_show(job_id: str) -> None:
    hook = MetaStudioHook()
    assert hook.get_picture_modeling_job(job_id).job_id == job_id

    async def show() -> None:
        ahook = MetaStudioHook()
        try:
            assert (await ahook.aget_picture_modeling_job(job_id)).job_id == job_id
        finally:
            await ahook.aclose()

    asyncio.run(show())


@FAST
def test_sync_and_async_calls_go_through_http_proxy(
    metastudio_emulator, metastudio_connection, recording_proxy, clean_proxy_env
):
    job = metastudio_emulator.jobs.create("proxied")
    clean_proxy_env.setenv("HTTP_PROXY", recording_proxy.url)
    _sync_and_async_show(job["job_id"])
    show_path = (
        f"/v1/{metastudio_emulator.project_id}/digital-human/stylized/picture-modelings/{job['job_id']}"
    )
    assert recording_proxy.paths() == [show_path, show_path]
    # Absolute URIs to the emulator, as a forward proxy receives them; both signed for the target.
    for request in recording_proxy.requests:
        assert request.request_line.startswith(f"GET {metastudio_emulator.base_url}/")
        assert "Authorization" in request.headers
    assert metastudio_emulator.recorder.count("show", 200) == 2


@FAST
def test_no_proxy_bypasses_the_proxy(
    metastudio_emulator, metastudio_connection, recording_proxy, clean_proxy_env
):
    job = metastudio_emulator.jobs.create("direct")
    clean_proxy_env.setenv("HTTP_PROXY", recording_proxy.url)
    clean_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    _sync_and_async_show(job["job_id"])
    assert recording_proxy.requests == []
    assert metastudio_emulator.recorder.count("show", 200) == 2


@FAST
def test_proxy_extra_is_used_without_variables_and_before_them(
    metastudio_emulator, recording_proxy, clean_proxy_env, caplog
):
    caplog.set_level(logging.DEBUG)
    password = "pr0xy-s3cret-pw"
    proxy_url = recording_proxy.url.replace("http://", f"http://alice:{password}@")
    conn = metastudio_emulator.connection_dict()
    conn["extra"]["proxy"] = proxy_url
    clean_proxy_env.setenv(CONN_ENV, json.dumps(conn))
    job = metastudio_emulator.jobs.create("via_extra")

    _sync_and_async_show(job["job_id"])
    assert len(recording_proxy.requests) == 2
    expected = "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
    assert all(r.headers.get("Proxy-Authorization") == expected for r in recording_proxy.requests)

    # The extra wins over the environment, even one that points at nothing.
    clean_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{_free_port()}")
    clean_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    _sync_and_async_show(job["job_id"])
    assert len(recording_proxy.requests) == 4

    # A proxy URL with credentials is a secret: not in repr, logs, or the masker's blind spot.
    config = MetaStudioHook().config
    assert password not in repr(config) and proxy_url in config.secrets and password in config.secrets
    assert all(password not in r.getMessage() for r in caplog.records)


def test_bad_proxy_extra_is_refused_without_quoting_it():
    with pytest.raises(Exception, match="proxy") as exc:
        MetaStudioConnectionConfig.from_parts(
            login="ak",
            password="sk-transport-proxy-test",
            extra={"project_id": "p" * 32, "proxy": "socks5://u:hidden-pw@h:1"},
        )
    assert "hidden-pw" not in str(exc.value)


@FAST
def test_deferred_wait_polls_through_the_proxy(
    metastudio_emulator, metastudio_connection, recording_proxy, clean_proxy_env
):
    job = metastudio_emulator.jobs.create("deferred", outcome="SUCCEED")
    clean_proxy_env.setenv("HTTP_PROXY", recording_proxy.url)
    trigger = MetaStudioPictureModelingJobTrigger(
        job_id=job["job_id"], end_time=time.time() + 30, poll_interval=0.2
    )

    async def first_event() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    payload = asyncio.run(first_event())
    assert payload["status"] == "success"
    # Every call the poller made went through the proxy (lists and details alike).
    assert recording_proxy.requests and len(recording_proxy.requests) == len(
        metastudio_emulator.recorder.request_log()
    )
    assert all(p.endswith("/picture-modelings") or job["job_id"] in p for p in recording_proxy.paths())


@pytest.mark.parametrize(
    ("verify", "env", "expected"),
    [
        (False, {"SSL_CERT_FILE": "/env/ca.pem", "REQUESTS_CA_BUNDLE": "/env/ca.pem"}, False),
        ("BUNDLE", {"SSL_CERT_FILE": "/env/ca.pem", "REQUESTS_CA_BUNDLE": "/env/ca.pem"}, "BUNDLE"),
        (True, {"SSL_CERT_FILE": "/env/ssl.pem"}, "/env/ssl.pem"),
        (True, {"SSL_CERT_FILE": "/env/ssl.pem", "REQUESTS_CA_BUNDLE": "/env/req.pem"}, "/env/req.pem"),
        (True, {}, True),
    ],
)
def test_both_transports_take_tls_verification_from_the_connection_first(
    verify, env, expected, monkeypatch, tmp_path
):
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bundle = tmp_path / "conn-ca.pem"
    bundle.write_text("x")
    if verify == "BUNDLE":
        verify = expected = str(bundle)
    hook = MetaStudioHook(
        config=MetaStudioConnectionConfig.from_parts(
            login="ak", password="sk-transport-verify-test", extra={"project_id": "p" * 32, "verify": verify}
        )
    )
    url = hook.config.endpoint + "/x"
    # One route decides for both: the async client is built from it, the sync send gets it.
    assert hook.transport.route(url).verify == expected
    assert hook.transport.environment(url)["verify"] == expected


# -- the Test button --------------------------------------------------------------------------------


def _hook_at(endpoint: str) -> MetaStudioHook:
    parts = urlsplit(endpoint)
    return MetaStudioHook(
        config=MetaStudioConnectionConfig.from_parts(
            login="AKTEST",
            password="SK-very-secret",
            extra={"project_id": "p" * 32},
            host=parts.hostname,
            port=parts.port,
            schema=parts.scheme,
        )
    )


def test_test_connection_answers_fast_when_nothing_listens(clean_proxy_env):
    port = _free_port()  # closed again: connections are refused
    began = time.monotonic()
    ok, message = _hook_at(f"http://127.0.0.1:{port}").test_connection()
    assert time.monotonic() - began < 5.0
    assert ok is False
    assert "could not connect" in message and f"127.0.0.1:{port}" in message
    assert "SK-very-secret" not in message


def test_test_connection_answers_within_5s_when_the_endpoint_never_answers(clean_proxy_env):
    with socket.socket() as silent:  # the kernel completes the handshake; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        began = time.monotonic()
        ok, message = _hook_at(f"http://127.0.0.1:{port}").test_connection()
        elapsed = time.monotonic() - began
    assert elapsed < 5.0, elapsed
    assert ok is False
    assert "timed out" in message and f"127.0.0.1:{port}" in message
    assert "SK-very-secret" not in message


# -- signed URLs in logs ------------------------------------------------------------------------------


@pytest.mark.metastudio_emulator(waiting_seconds=0, processing_seconds=0, quotas_enabled=False)
def test_no_signed_url_in_any_log_record_while_a_cover_is_downloaded(
    metastudio_emulator, metastudio_connection, clean_proxy_env, caplog, monkeypatch
):
    masked = mock.Mock()
    monkeypatch.setattr(transport_module, "mask_secret", masked)  # the filter alone must keep it out
    # Every logger at DEBUG: the root, and those Airflow's logging config quietens on its own.
    for name in (None, "urllib3", "httpx", "httpcore", "airflow_provider_metastudio"):
        caplog.set_level(logging.DEBUG, logger=name)
    job = metastudio_emulator.jobs.create("covered", outcome="SUCCEED")
    hook = MetaStudioHook()
    cover_url = hook.get_picture_modeling_job(job["job_id"]).model_cover_url
    assert cover_url and "Signature=" in cover_url
    raw = cover_url.split("Signature=", 1)[1].split("&", 1)[0]
    decoded = parse_qs(urlsplit(cover_url).query)["Signature"][0]

    out = io.BytesIO()
    size = hook.download_cover(cover_url, out)
    assert size > 0 and out.getvalue().startswith(b"\x89PNG")

    async def fetch_with_httpx() -> int:  # the async stack logs URLs at INFO
        async with httpx.AsyncClient(trust_env=False) as client:
            return (await client.get(cover_url)).status_code

    assert asyncio.run(fetch_with_httpx()) == 200

    messages = [f"{r.name}: {r.getMessage()}" for r in caplog.records]
    assert all(raw not in m and decoded not in m for m in messages)
    assert raw not in caplog.text and decoded not in caplog.text
    # The libraries did log the requests, redacted: the filter ran, the test can fail.
    assert any(m.startswith("urllib3.connectionpool") and "Signature=***" in m for m in messages)
    assert any(m.startswith("httpx") and "Signature=***" in m for m in messages)
    # And the signature went to the secrets masker, for handlers the filter does not cover.
    assert {c.args[0] for c in masked.call_args_list} >= {raw, decoded} - {""}
