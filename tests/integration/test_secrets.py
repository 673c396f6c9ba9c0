"""No secret ever leaves the provider: not in logs, XCom, rendered fields, trigger kwargs or errors.

Real DAG runs (``dag.test()``, the e2e and fault DAGs) and direct hook/trigger calls run against an
emulator with distinctive credentials; then every place a value can end up is scanned for the SK,
the security token, the IAM password, every IAM token issued and every ``Authorization`` signature
the client sent (recorded on the emulator's side). The pre-signed cover URL is a bearer credential
too: its ``Signature`` must reach XCom (that is the point) but no log line.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from testsupport import E2E_DAGS

from airflow_provider_metastudio import auth
from airflow_provider_metastudio._compat import AIRFLOW_V_3, AIRFLOW_VERSION, TaskDeferred
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import MetaStudioAuthError, MetaStudioError
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.operators.picture_modeling import (
    MetaStudioCreatePictureModelingJobOperator,
    MetaStudioGetPictureModelingJobOperator,
)
from airflow_provider_metastudio.sensors.picture_modeling import MetaStudioPictureModelingJobSensor
from airflow_provider_metastudio.tenant import TenantPoller
from airflow_provider_metastudio.testing import DEFAULT_PROJECT_ID, Credentials, MetaStudioEmulator
from airflow_provider_metastudio.triggers.picture_modeling import MetaStudioPictureModelingJobTrigger

try:  # Airflow >= 3.1: the Task SDK's masker, the one mask_secret feeds
    from airflow.sdk.log import redact
except ImportError:
    try:  # Airflow 3.0
        from airflow.sdk.execution_time.secrets_masker import redact  # type: ignore[no-redef]
    except ImportError:  # Airflow 2.11
        from airflow.utils.log.secrets_masker import redact  # type: ignore[no-redef]

AK = "SECRETSTESTAKEY00001"
SK = "sk-DISTINCT-4f1c9e2a7b-never-in-logs-0123456789"
SECURITY_TOKEN = "sectok-DISTINCT-8e21d0c3-never-in-logs"
IAM_PASSWORD = "pw-DISTINCT-b7a6c5d4-never-in-logs"
# Refused credentials: the errors they cause must not echo them either.
WRONG_SK = "sk-WRONG-DISTINCT-61e0aa93-never-in-logs"
WRONG_SECURITY_TOKEN = "sectok-WRONG-DISTINCT-0d9f33b1-never-in-logs"
WRONG_PASSWORD = "pw-WRONG-DISTINCT-77c2e4f0-never-in-logs"
# Used by exactly one test each, so the masker cannot have learnt them anywhere else first.
MASK_SK_SYNC = "sk-MASK-SYNC-3a8d1c55-never-in-logs"
MASK_SK_ASYNC = "sk-MASK-ASYNC-9b04e7d2-never-in-logs"
MASK_AK_SYNC, MASK_AK_ASYNC = "SECRETSTESTAKEY00002", "SECRETSTESTAKEY00003"
CONFIG_AK, CONFIG_SK = "SECRETSTESTAKEY00004", "sk-MASK-CONFIG-5e6f7a8b-never-in-logs"
CONFIG_SECURITY_TOKEN = "sectok-MASK-CONFIG-1a2b3c4d-never-in-logs"

pytestmark = pytest.mark.metastudio_emulator(
    ak=AK,
    sk=SK,
    security_token=SECURITY_TOKEN,
    iam_password=IAM_PASSWORD,
    extra_credentials=(
        Credentials(MASK_AK_SYNC, MASK_SK_SYNC, DEFAULT_PROJECT_ID),
        Credentials(MASK_AK_ASYNC, MASK_SK_ASYNC, DEFAULT_PROJECT_ID),
    ),
    waiting_seconds=1,
    processing_seconds=3,
    seed=5,
)

CONN_ENV = "AIRFLOW_CONN_METASTUDIO_DEFAULT"
DAG_DIR = E2E_DAGS
DAG_FILES = {"e2e": DAG_DIR / "metastudio_e2e_dags.py", "faults": DAG_DIR / "metastudio_fault_dags.py"}
SIGNATURE_RE = re.compile(r"Signature=([0-9a-fA-F]{64})")
MASKED = "***"
EXPIRE_AFTER = 2.0  # seconds after the create, in the token-expiry scenario


# -- what the emulator saw: every signature and token that went over the wire -------------------------


@dataclass
class Seen:
    signatures: set[str] = field(default_factory=set)
    tokens: set[str] = field(default_factory=set)

    def secrets(self) -> dict[str, str]:
        """Name -> value of everything that must never show up outside the wire."""
        named = {"SK": SK, "security token": SECURITY_TOKEN, "IAM password": IAM_PASSWORD}
        named.update({f"IAM token #{i}": t for i, t in enumerate(sorted(self.tokens))})
        named.update({f"Authorization signature #{i}": s for i, s in enumerate(sorted(self.signatures))})
        return named


@pytest.fixture
def seen(metastudio_emulator: MetaStudioEmulator, monkeypatch: pytest.MonkeyPatch) -> Seen:
    """Record, on the emulator's side, every Authorization signature and IAM token."""
    record = Seen()
    gateway, iam = metastudio_emulator.gateway, metastudio_emulator.iam
    authenticate, issue = gateway.authenticate, iam.issue

    def spy_authenticate(**kwargs: Any) -> Any:
        headers = kwargs["headers"]
        match = SIGNATURE_RE.search(headers.get("authorization") or "")
        if match:
            record.signatures.add(match.group(1).lower())
        if headers.get("x-auth-token"):
            record.tokens.add(headers["x-auth-token"].strip())
        return authenticate(**kwargs)

    def spy_issue_token(*args: Any, **kwargs: Any) -> Any:
        token = issue(*args, **kwargs)
        record.tokens.add(token.value)
        return token

    monkeypatch.setattr(gateway, "authenticate", spy_authenticate)
    monkeypatch.setattr(iam, "issue", spy_issue_token)
    return record


@pytest.fixture(autouse=True)
def fresh_token_cache() -> Iterator[None]:
    auth._TOKEN_CACHE.clear()
    yield
    auth._TOKEN_CACHE.clear()


def use_connection(
    monkeypatch: pytest.MonkeyPatch, emu: MetaStudioEmulator, auth_type: str = "aksk", **changes: Any
) -> None:
    """``metastudio_default`` for ``emu``; ``changes`` replace top-level fields (``password``) or extras."""
    conn = emu.connection_dict(auth_type)
    for key, value in changes.items():
        if key in ("login", "password"):
            conn[key] = value
        else:
            conn["extra"][key] = value
    monkeypatch.setenv(CONN_ENV, json.dumps(conn))


# -- scanning ------------------------------------------------------------------------------------------


def assert_no_secret(where: str, text: str, secrets: dict[str, str]) -> None:
    leaked = [name for name, value in secrets.items() if value and value in text]
    # Names and the surrounding text with the value cut out: never print the values themselves.
    context = [
        text[max(0, i - 160) : i].replace(value, "<" + name + ">") + "<" + name + ">"
        for name, value in secrets.items()
        if value and (i := text.find(value)) >= 0
    ]
    assert not leaked, f"{where} contains {', '.join(leaked)}; after: {context[:2]}"


def cover_signature(url: str) -> list[str]:
    """The cover URL's ``Signature`` as it appears on the wire (percent-encoded) and decoded."""
    raw = re.search(r"[?&]Signature=([^&#]+)", url)
    assert raw, "the cover URL has no Signature"
    decoded = parse_qs(urlsplit(url).query)["Signature"][0]
    return [raw.group(1), decoded]


# Airflow 3.0's dag.test() supervisor traces every message between task and supervisor at DEBUG,
# whole: the MaskSecret message that registers a secret, the SetXCom that carries the cover URL
# (fixed in later 3.x). Those are Airflow's lines, not the provider's.
_AIRFLOW_30_MASK_TRACE = re.compile(
    r"^.*(Sending request\s+msg=|Received message from task runner).*$", re.MULTILINE
)


def captured_logs(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    out, err = capfd.readouterr()
    records = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    text = "\n".join([out, err, caplog.text, records])
    if AIRFLOW_VERSION.startswith("3.0."):
        text = _AIRFLOW_30_MASK_TRACE.sub("", text)
    return text


# -- running DAGs, as tests/e2e/conftest.py does -----------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_db() -> Path:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"


@pytest.fixture(scope="module")
def dag_modules(airflow_db: Path) -> dict[str, Any]:
    modules = {}
    for name, path in DAG_FILES.items():
        spec = importlib.util.spec_from_file_location(f"secrets_{name}_dags", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
    return modules


@dataclass
class Run:
    dag_id: str
    run_id: str
    tasks: dict[str, str]
    xcoms: dict[tuple[str, str], Any]
    rendered: list[str]
    trigger_kwargs: list[str]


def _rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _text(value: Any) -> str:
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else json.dumps(value, default=str)


@pytest.fixture
def run_dag(dag_modules: dict[str, Any], airflow_db: Path, metastudio_connection: str) -> Callable[..., Run]:
    def run(module: str, dag_id: str, **conf: Any) -> Run:
        dr = dag_modules[module].DAGS[dag_id].test(run_conf=conf)
        tasks = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
        xcoms = {
            (task_id, key): json.loads(_text(value))
            for task_id, key, value in _rows(
                airflow_db,
                "SELECT task_id, key, value FROM xcom WHERE dag_id = ? AND run_id = ?",
                dag_id,
                dr.run_id,
            )
        }
        rendered = [
            _text(v)
            for (v,) in _rows(
                airflow_db,
                "SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = ? AND run_id = ?",
                dag_id,
                dr.run_id,
            )
        ]
        trigger_kwargs = [_text(v) for (v,) in _rows(airflow_db, "SELECT kwargs FROM trigger")]
        return Run(dag_id, dr.run_id, tasks, xcoms, rendered, trigger_kwargs)

    return run


# -- DAG runs, clean and under faults ---------------------------------------------------------------------


def _expire_tokens_mid_wait(
    emu: MetaStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> list[threading.Timer]:
    timers: list[threading.Timer] = []
    new_job = emu.jobs.add

    def new_job_then_expire(**kwargs: Any) -> Any:
        job = new_job(**kwargs)
        timers.append(threading.Timer(EXPIRE_AFTER, emu.iam.expire_tokens))
        timers[-1].start()
        return job

    monkeypatch.setattr(emu.jobs, "add", new_job_then_expire)
    return timers


def _faults_reads(emu: MetaStudioEmulator, monkeypatch: pytest.MonkeyPatch) -> list[threading.Timer]:
    emu.faults.inject("show", "500")
    emu.faults.inject("show", "drop")
    emu.faults.inject("list", "malformed")
    emu.faults.inject("cover", "html", status=502)
    emu.faults.inject("create_by_url", "429")
    return []


def _faults_auth(emu: MetaStudioEmulator, monkeypatch: pytest.MonkeyPatch) -> list[threading.Timer]:
    emu.faults.inject("show", "html", status=503)
    return _expire_tokens_mid_wait(emu, monkeypatch)


def _nothing(emu: MetaStudioEmulator, monkeypatch: pytest.MonkeyPatch) -> list[threading.Timer]:
    return []


# id -> (auth type, DAG module, DAG id, arrange, task that copies the cover)
RUNS: dict[str, tuple[str, str, str, Callable[..., list[threading.Timer]], str]] = {
    "aksk-poke": ("aksk", "e2e", "e2e_poke", _nothing, "fetch"),
    "aksk-reschedule": ("aksk", "e2e", "e2e_reschedule", _nothing, "fetch"),
    "aksk-deferrable": ("aksk", "e2e", "e2e_deferrable", _nothing, "fetch"),
    "aksk-create-operator-deferrable": ("aksk", "e2e", "e2e_create_wait_deferrable", _nothing, "create"),
    "password-reschedule": ("password", "e2e", "e2e_reschedule", _nothing, "fetch"),
    "password-deferrable": ("password", "e2e", "e2e_deferrable", _nothing, "fetch"),
    "aksk-faulty-reads-deferrable": ("aksk", "faults", "fault_main_deferrable", _faults_reads, "fetch"),
    "password-token-expiry-reschedule": (
        "password",
        "faults",
        "fault_main_reschedule",
        _faults_auth,
        "fetch",
    ),
    "password-token-expiry-deferrable": (
        "password",
        "faults",
        "fault_main_deferrable",
        _faults_auth,
        "fetch",
    ),
}


@pytest.mark.parametrize("case", list(RUNS), ids=list(RUNS))
def test_dag_run_leaks_no_secret(
    case, run_dag, metastudio_emulator, seen, monkeypatch, tmp_path, capfd, caplog
):
    auth_type, module, dag_id, arrange, cover_task = RUNS[case]
    emu = metastudio_emulator
    caplog.set_level(logging.DEBUG, logger="airflow_provider_metastudio.hooks")
    caplog.set_level(logging.DEBUG, logger="airflow_provider_metastudio.triggers")
    use_connection(monkeypatch, emu, auth_type)
    timers = arrange(emu, monkeypatch)
    try:
        result = run_dag(module, dag_id, name=f"secrets-{case}", cover_dir=str(tmp_path))
    finally:
        for timer in timers:
            timer.cancel()
    logs = captured_logs(capfd, caplog)

    assert set(result.tasks.values()) == {"success"}, result.tasks  # a complete run was scanned
    if auth_type == "aksk":
        assert seen.signatures and not seen.tokens
    else:
        assert seen.tokens and not seen.signatures
    if timers:  # the token really expired and was renewed during the run
        assert emu.recorder.count(status=401) == 1 and emu.recorder.counters()["tokens_issued"] == 2
    assert result.rendered, "no rendered template fields were stored"
    secrets = seen.secrets()
    assert_no_secret("task logs", logs, secrets)
    assert_no_secret("XCom", json.dumps({f"{t}.{k}": v for (t, k), v in result.xcoms.items()}), secrets)
    for rendered in result.rendered:
        assert_no_secret("rendered template fields", rendered, secrets)
    for kwargs in result.trigger_kwargs:
        assert_no_secret("the trigger table", kwargs, secrets)
    # Airflow 2's and 3.0's dag.test() run triggers inline, without a row in the trigger table.
    if AIRFLOW_V_3 and not AIRFLOW_VERSION.startswith("3.0.") and "deferrable" in dag_id:
        job_id = result.xcoms[("create", "job_id")]
        assert any(job_id in kwargs for kwargs in result.trigger_kwargs), "no trigger row was scanned"

    # The cover URL: whole in XCom (a later task may need it), its signature in no log line.
    cover_url = result.xcoms[(cover_task, "model_cover_url")]
    assert Path(result.xcoms[(cover_task, "model_cover_path")]).is_file()
    on_the_wire, decoded = cover_signature(cover_url)
    assert on_the_wire in json.dumps(result.xcoms[(cover_task, "return_value")])
    for signature in (on_the_wire, decoded):
        assert signature not in logs, "the cover URL's Signature is in the task logs"

    # Everything the connection holds was registered with Airflow's secrets masker.
    for name in ("SK", "security token") if auth_type == "aksk" else ("IAM password",):
        assert redact(secrets[name]) == MASKED, name
    for token in seen.tokens:
        assert redact(token) == MASKED


# -- trigger kwargs of a deferral ------------------------------------------------------------------------

TRIGGER_KWARGS = {
    "job_id",
    "end_time",
    "metastudio_conn_id",
    "poll_interval",
    "accept_partial_success",
    "last_state",
    "wait_started",
    "timeout",
    "last_seen",
    "try_number",
}


def _defer_sensor(job_id: str) -> TaskDeferred:
    sensor = MetaStudioPictureModelingJobSensor(task_id="wait", job_id=job_id, deferrable=True, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": mock.Mock()})
    return deferred.value


def _defer_get_operator(job_id: str) -> TaskDeferred:
    op = MetaStudioGetPictureModelingJobOperator(
        task_id="fetch", job_id=job_id, wait_for_completion=True, deferrable=True, timeout=60
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": mock.Mock()})
    return deferred.value


def _defer_create_operator(job_id: str) -> TaskDeferred:
    op = MetaStudioCreatePictureModelingJobOperator(
        task_id="create",
        picture_url="https://photos.example.com/face.png",
        style_id="system_male_001",
        name="slow-model",
        deferrable=True,
        timeout=60,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": mock.Mock()})
    return deferred.value


DEFERRALS = {
    "sensor": _defer_sensor,
    "get-operator": _defer_get_operator,
    "create-operator": _defer_create_operator,
}


@pytest.mark.parametrize("auth_type", ["aksk", "password"])
@pytest.mark.parametrize("who", list(DEFERRALS), ids=list(DEFERRALS))
def test_deferral_trigger_kwargs_hold_no_secret(who, auth_type, metastudio_emulator, seen, monkeypatch):
    emu = metastudio_emulator
    emu.jobs.set_outcome("slow-*", "SUCCEED")
    use_connection(monkeypatch, emu, auth_type)
    job = emu.jobs.create(name="slow", waiting_seconds=3600)

    deferred = DEFERRALS[who](job["job_id"])

    classpath, kwargs = deferred.trigger.serialize()
    assert classpath.endswith("MetaStudioPictureModelingJobTrigger")
    assert set(kwargs) == TRIGGER_KWARGS
    assert kwargs["metastudio_conn_id"] == "metastudio_default"
    assert seen.signatures or seen.tokens  # the deferral followed real, authenticated calls
    assert_no_secret("serialized trigger kwargs", json.dumps(kwargs), seen.secrets())
    assert_no_secret("the trigger's repr", repr(deferred.trigger), seen.secrets())


# -- errors of refused authentication --------------------------------------------------------------------


def _wrong_sk(emu: MetaStudioEmulator, mp: pytest.MonkeyPatch) -> None:
    use_connection(mp, emu, "aksk", password=WRONG_SK)


def _wrong_security_token(emu: MetaStudioEmulator, mp: pytest.MonkeyPatch) -> None:
    use_connection(mp, emu, "aksk", security_token=WRONG_SECURITY_TOKEN)


def _wrong_password(emu: MetaStudioEmulator, mp: pytest.MonkeyPatch) -> None:
    use_connection(mp, emu, "password", password=WRONG_PASSWORD)


def _expired_static_token(emu: MetaStudioEmulator, mp: pytest.MonkeyPatch) -> None:
    use_connection(mp, emu, "token")
    emu.iam.expire_tokens()


def _password_token_revoked_twice(emu: MetaStudioEmulator, mp: pytest.MonkeyPatch) -> None:
    """The fresh token is refused too (e.g. revoked at once): the one renewal ends in a final 401."""
    use_connection(mp, emu, "password")
    authenticate = emu.gateway.authenticate

    def expire_then_authenticate(**kwargs: Any) -> Any:
        emu.iam.expire_tokens()
        return authenticate(**kwargs)

    mp.setattr(emu.gateway, "authenticate", expire_then_authenticate)


AUTH_FAILURES: dict[str, Callable[[MetaStudioEmulator, pytest.MonkeyPatch], None]] = {
    "wrong-sk": _wrong_sk,
    "wrong-security-token": _wrong_security_token,
    "wrong-iam-password": _wrong_password,
    "expired-static-token": _expired_static_token,
    "password-token-refused-twice": _password_token_revoked_twice,
}
REFUSED = {
    "wrong SK": WRONG_SK,
    "wrong security token": WRONG_SECURITY_TOKEN,
    "wrong password": WRONG_PASSWORD,
}


def _sync_error(job_id: str) -> MetaStudioError:
    with pytest.raises(MetaStudioAuthError) as err:
        MetaStudioHook(retry_limit=1, retry_delay=0.01).get_picture_modeling_job(job_id)
    return err.value


def _async_error(job_id: str) -> MetaStudioError:
    async def call() -> None:
        hook = MetaStudioHook(retry_limit=1, retry_delay=0.01)
        try:
            await hook.aget_picture_modeling_job(job_id)
        finally:
            await hook.aclose()

    with pytest.raises(MetaStudioAuthError) as err:
        asyncio.run(call())
    return err.value


@pytest.mark.parametrize("case", list(AUTH_FAILURES), ids=list(AUTH_FAILURES))
def test_auth_failures_echo_no_secret(case, metastudio_emulator, seen, monkeypatch, capfd, caplog):
    emu = metastudio_emulator
    caplog.set_level(logging.DEBUG, logger="airflow_provider_metastudio.hooks")
    job_id = emu.jobs.create(name="any")["job_id"]
    AUTH_FAILURES[case](emu, monkeypatch)

    errors = [_sync_error(job_id), _async_error(job_id)]
    # The poller ends waits on refused authentication only once it persists this long.
    monkeypatch.setattr(TenantPoller, "auth_patience", 0.5)
    trigger = MetaStudioPictureModelingJobTrigger(job_id=job_id, end_time=time.time() + 30, poll_interval=0.2)

    async def events() -> list[dict[str, Any]]:
        return [e.payload async for e in trigger.run()]

    (event,) = asyncio.run(events())
    ok, message = MetaStudioHook().test_connection()

    assert event["status"] == "error" and event["status_code"] == 401
    assert not ok and "401" in message
    assert all(e.status == 401 for e in errors)
    secrets = {**seen.secrets(), **REFUSED}
    for e in errors:
        assert e.request_id  # still says which request failed
        assert_no_secret("the error's str", str(e), secrets)
        assert_no_secret("the error's repr", repr(e), secrets)
        assert_no_secret("the error's to_dict()", json.dumps(e.to_dict()), secrets)
        assert_no_secret("the error's args", repr(e.args), secrets)
    assert_no_secret("the trigger's error event", json.dumps(event), secrets)
    assert_no_secret("test_connection()", message, secrets)
    assert_no_secret("the logs", captured_logs(capfd, caplog), secrets)


# -- the secrets masker learns every secret, on the sync and on the async path ---------------------------


def _conn_with_keys(emu: MetaStudioEmulator, ak: str, sk: str) -> str:
    conn = emu.connection_dict("aksk")
    conn["login"], conn["password"] = ak, sk
    conn["extra"].pop("security_token")  # the extra credentials are permanent ones
    return json.dumps(conn)


def test_hook_given_a_config_registers_its_secrets(metastudio_emulator):
    """No Airflow connection lookup (which masks a connection's password by itself): the hook's own
    registration is all there is."""
    config = MetaStudioConnectionConfig.from_parts(
        login=CONFIG_AK,
        password=CONFIG_SK,
        extra={**metastudio_emulator.connection_extra(), "security_token": CONFIG_SECURITY_TOKEN},
    )
    assert redact(CONFIG_SK) == CONFIG_SK and redact(CONFIG_SECURITY_TOKEN) == CONFIG_SECURITY_TOKEN

    MetaStudioHook(config=config)

    assert redact(CONFIG_SK) == MASKED
    assert redact(CONFIG_SECURITY_TOKEN) == MASKED


def test_sync_config_registers_the_sk(metastudio_emulator, monkeypatch):
    monkeypatch.setenv(CONN_ENV, _conn_with_keys(metastudio_emulator, MASK_AK_SYNC, MASK_SK_SYNC))
    assert redact(MASK_SK_SYNC) == MASK_SK_SYNC  # not known before

    MetaStudioHook().list_picture_modeling_jobs_page(limit=1)

    assert redact(MASK_SK_SYNC) == MASKED
    assert redact(f"x {MASK_SK_SYNC} y") == f"x {MASKED} y"


def test_trigger_config_registers_the_sk(metastudio_emulator, monkeypatch):
    monkeypatch.setenv(CONN_ENV, _conn_with_keys(metastudio_emulator, MASK_AK_ASYNC, MASK_SK_ASYNC))
    job = metastudio_emulator.jobs.create(name="any", waiting_seconds=3600)
    assert redact(MASK_SK_ASYNC) == MASK_SK_ASYNC  # not known before
    trigger = MetaStudioPictureModelingJobTrigger(
        job_id=job["job_id"], end_time=time.time() + 1.5, poll_interval=0.2
    )

    async def events() -> list[dict[str, Any]]:
        return [e.payload async for e in trigger.run()]

    (event,) = asyncio.run(events())

    assert event["status"] == "timeout"  # it polled with these credentials until the deadline
    assert metastudio_emulator.recorder.count(call="list", status=200) >= 1
    assert redact(MASK_SK_ASYNC) == MASKED


def test_password_flow_registers_password_and_token(metastudio_emulator, seen, monkeypatch):
    use_connection(monkeypatch, metastudio_emulator, "password")
    MetaStudioHook().list_picture_modeling_jobs_page(limit=1)
    assert len(seen.tokens) == 1
    assert redact(IAM_PASSWORD) == MASKED
    assert redact(next(iter(seen.tokens))) == MASKED


# -- the triggerer logs every event it fires ------------------------------------------------------------


@pytest.mark.metastudio_emulator(waiting_seconds=0, processing_seconds=0.5, quotas_enabled=False)
def test_triggerer_fired_log_line_hides_the_cover_signature(
    metastudio_emulator, metastudio_connection, monkeypatch
):
    emu = metastudio_emulator
    handed_out: list[str] = []  # every pre-signed cover URL the service gave the trigger
    cover_url = emu.jobs.cover_url

    def spy_cover_url(*args: Any) -> str:
        handed_out.append(cover_url(*args))
        return handed_out[-1]

    monkeypatch.setattr(emu.jobs, "cover_url", spy_cover_url)
    job = emu.jobs.create(name="done")
    trigger = MetaStudioPictureModelingJobTrigger(
        job_id=job["job_id"], end_time=time.time() + 30, poll_interval=0.2
    )

    async def events() -> list[Any]:
        return [e async for e in trigger.run()]

    (event,) = asyncio.run(events())

    assert event.payload["status"] == "success"
    assert handed_out, "the trigger never saw the finished job's cover URL"
    # What Airflow's triggerer writes when a trigger fires (2.x: "Trigger %s fired: %s"; 3.x logs the
    # event as "result"), and stores in its database: with or without its secrets masker, no signature.
    line = f"Trigger {trigger!r} fired: {event!r}"
    for url in handed_out:
        for signature in cover_signature(url):
            assert signature not in line
            assert signature not in redact(line)
    assert not any("cover" in key for key in event.payload)  # the task reads a fresh URL itself
