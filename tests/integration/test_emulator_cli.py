"""The emulator's command line, its pytest fixtures and its Airflow connection helpers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from testsupport import REPO

from airflow_provider_metastudio.testing import EmulatorConfig, MetaStudioEmulator
from airflow_provider_metastudio.testing.__main__ import build_parser, config_from_args

pytestmark = pytest.mark.airflow_independent  # runs on the newest Airflow line only

REPO_ROOT = REPO


def _readline(stream: Any, timeout: float) -> str:
    """Read one line with a deadline, so a broken CLI fails the test instead of hanging it."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        raise AssertionError(f"no output line within {timeout} s")
    return result[0]


@pytest.fixture
def cli() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str, dict[str, Any]]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_metastudio.testing", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(REPO_ROOT),
        )
        procs.append(proc)
        first = _readline(proc.stdout, 30).strip()
        second = _readline(proc.stdout, 10).strip()
        name, _, conn = second.partition("=")
        assert name == "AIRFLOW_CONN_METASTUDIO_DEFAULT"
        return proc, first, json.loads(conn)

    yield start
    for proc in procs:  # only the processes this fixture started
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_prints_url_and_connection_then_stops_cleanly(cli: Any, signum: int) -> None:
    proc, url, conn = cli(
        "--ak",
        "CLITESTAK00000000000",
        "--sk",
        "cli-secret/+=",
        "--project-id",
        "cliproject",
        "--time-scale",
        "60",
        "--no-quotas",
        "--seed",
        "5",
        "--outcome",
        "*fail*=FAILED",
    )
    assert url.startswith("http://127.0.0.1:") and url.rsplit(":", 1)[1].isdigit()
    assert conn == {
        "conn_type": "metastudio",
        "login": "CLITESTAK00000000000",
        "password": "cli-secret/+=",
        "host": "127.0.0.1",
        "port": int(url.rsplit(":", 1)[1]),
        "schema": "http",
        "extra": {"project_id": "cliproject", "iam_endpoint": url},
    }
    assert requests.get(f"{url}/_emulator/health", timeout=10).json()["status"] == "ok"
    # it answers the service too: the gateway refuses an unsigned call with its own error
    resp = requests.get(f"{url}/v1/cliproject/digital-human/stylized/picture-modelings", timeout=10)
    assert resp.status_code == 401 and resp.json()["error_code"] == "APIGW.0301"
    job = requests.post(f"{url}/_emulator/jobs", json={"name": "will fail"}, timeout=10).json()
    requests.post(f"{url}/_emulator/clock", json={"advance": 60}, timeout=10)
    record = requests.get(f"{url}/_emulator/jobs/{job['job_id']}", timeout=10).json()
    assert record["state"] == "FAILED"
    clock = requests.get(f"{url}/_emulator/clock", timeout=10).json()
    assert clock["time_scale"] == 60.0
    proc.send_signal(signum)
    assert proc.wait(15) == 0


def test_cli_token_connection(cli: Any) -> None:
    proc, url, conn = cli("--auth-type", "token", "--token-ttl", "120")
    assert conn["extra"]["auth_type"] == "token"
    listed = requests.get(
        f"{url}/v1/{conn['extra']['project_id']}/digital-human/stylized/picture-modelings",
        headers={"X-Auth-Token": conn["password"]},
        timeout=10,
    )
    assert listed.status_code == 200
    proc.terminate()
    assert proc.wait(15) == 0


def test_cli_drives_the_asset_library(cli: Any) -> None:
    proc, url, _ = cli(
        "--waiting-seconds",
        "0",
        "--processing-seconds",
        "0",
        "--asset-active-delay",
        "0",
        "--asset-url-ttl",
        "60",
        "--asset-outcome",
        "*blocked*=BLOCK",
        "--asset-outcome",
        "*lost*=FAILED",
    )
    states = {}
    for name in ("portrait", "blocked-portrait", "lost-portrait"):
        job = requests.post(f"{url}/_emulator/jobs", json={"name": name}, timeout=10).json()
        asset = requests.get(f"{url}/_emulator/assets/{job['model_asset_id']}", timeout=10).json()
        states[name] = asset["asset_state"]
        if name == "portrait":
            now = requests.get(f"{url}/_emulator/clock", timeout=10).json()["now_timestamp"]
            expires = {int(f["download_url"].split("Expires=")[1].split("&")[0]) for f in asset["files"]}
            assert expires and all(now < e <= now + 61 for e in expires)
    assert states == {"portrait": "ACTIVED", "blocked-portrait": "BLOCK", "lost-portrait": "FAILED"}
    settings = requests.get(f"{url}/_emulator/asset-outcomes", timeout=10).json()
    assert settings["outcomes"] == {"*blocked*": "BLOCK", "*lost*": "FAILED"}
    assert (settings["active_delay"], settings["url_ttl"]) == (0, 60)
    proc.terminate()
    assert proc.wait(15) == 0


def test_cli_asset_flags_map_to_the_config() -> None:
    args = build_parser().parse_args(
        ["--asset-active-delay", "7", "--asset-url-ttl", "90", "--asset-outcome", "*x*=BLOCK"]
    )
    config = config_from_args(args)
    assert (config.asset_active_delay, config.asset_url_ttl) == (7, 90)
    assert dict(config.asset_outcomes_by_name) == {"*x*": "BLOCK"}
    assert config_from_args(build_parser().parse_args([])).asset_outcomes_by_name == {}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--asset-outcome", "*=DELETED"])  # not an outcome of a ready asset
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--asset-outcome", "no-equals-sign"])


def test_importing_and_running_the_emulator_loads_no_airflow() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_metastudio.testing as t\n"
        "import airflow_provider_metastudio.testing.pytest_plugin\n"
        "with t.MetaStudioEmulator() as emu:\n"
        "    emu.jobs.create('x'); emu.connection_json(); emu.connection_uri()\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')"
        " or m == 'airflow_provider_metastudio.auth'))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(REPO_ROOT), timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cli_flags_map_to_the_config() -> None:
    args = build_parser().parse_args(
        [
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ak",
            "AK",
            "--sk",
            "SK",
            "--project-id",
            "PID",
            "--time-scale",
            "60",
            "--no-quotas",
            "--seed",
            "9",
            "--waiting-seconds",
            "1",
            "--processing-seconds",
            "2",
            "--fault-500",
            "0.2",
            "--fault-html",
            "0.1",
            "--fault-drop",
            "0.05",
            "--outcome",
            "*fail*=FAILED",
            "--outcome",
            "*part*=PARTIAL_SUCCEED",
            "--weight",
            "SUCCEED=3",
            "--weight",
            "FAILED=1",
            "--token-ttl",
            "30",
            "--user",
            "u",
            "--password",
            "p",
            "--domain",
            "d",
        ]
    )
    config = config_from_args(args)
    assert (config.ak, config.sk, config.project_id) == ("AK", "SK", "PID")
    assert config.time_scale == 60 and config.quotas_enabled is False and config.seed == 9
    assert (config.waiting_seconds, config.processing_seconds) == (1, 2)
    assert (config.fault_500, config.fault_html, config.fault_drop) == (0.2, 0.1, 0.05)
    assert dict(config.outcomes_by_name) == {"*fail*": "FAILED", "*part*": "PARTIAL_SUCCEED"}
    assert dict(config.outcome_weights) == {"SUCCEED": 3.0, "FAILED": 1.0}
    assert (config.token_ttl, config.iam_user, config.iam_password, config.iam_domain) == (30, "u", "p", "d")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--outcome", "*=DONE"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fault-500", "2"])


# ------------------------------------------------------------------------------------------
# pytest fixtures
# ------------------------------------------------------------------------------------------


def test_fixture_gives_a_running_emulator(metastudio_emulator: MetaStudioEmulator) -> None:
    assert metastudio_emulator.config.quotas_enabled is True
    assert metastudio_emulator.config.time_scale == 1.0
    assert requests.get(f"{metastudio_emulator.base_url}/_emulator/health", timeout=10).status_code == 200


@pytest.mark.metastudio_emulator(time_scale=60.0, quotas_enabled=False)
def test_marker_configures_the_fixture(metastudio_emulator: MetaStudioEmulator) -> None:
    assert metastudio_emulator.config.time_scale == 60.0
    assert metastudio_emulator.config.quotas_enabled is False


@pytest.mark.metastudio_emulator(seed=1, waiting_seconds=2)
class TestClassMarker:
    @pytest.mark.metastudio_emulator(seed=2)
    def test_closest_marker_wins_key_by_key(self, metastudio_emulator: MetaStudioEmulator) -> None:
        assert metastudio_emulator.config.seed == 2
        assert metastudio_emulator.config.waiting_seconds == 2


def test_connection_fixture_sets_the_environment(
    metastudio_emulator: MetaStudioEmulator, metastudio_connection: str
) -> None:
    assert metastudio_connection == "metastudio_default"
    conn = json.loads(os.environ["AIRFLOW_CONN_METASTUDIO_DEFAULT"])
    assert conn["login"] == metastudio_emulator.ak
    assert f"{conn['schema']}://{conn['host']}:{conn['port']}" == metastudio_emulator.base_url


def test_connection_fixture_resolves_through_airflow(
    metastudio_emulator: MetaStudioEmulator, metastudio_connection: str
) -> None:
    connection_module = pytest.importorskip("airflow.models.connection")
    conn = connection_module.Connection.get_connection_from_secrets(metastudio_connection)
    assert conn.conn_type == "metastudio"
    assert (conn.login, conn.password) == (metastudio_emulator.ak, metastudio_emulator.sk)
    assert conn.extra_dejson == metastudio_emulator.connection_extra()


# ------------------------------------------------------------------------------------------
# Airflow connection helpers
# ------------------------------------------------------------------------------------------

ODD_SK = "s/k+with=odd:chars@and%percent?&#"


def test_connection_uri_parses_back_in_airflow() -> None:
    connection_module = pytest.importorskip("airflow.models.connection")
    with MetaStudioEmulator(EmulatorConfig(sk=ODD_SK, project_id="proj_1-a")) as emu:
        uri = emu.connection_uri()
        assert uri.startswith(f"metastudio://{emu.ak}:")
        conn = connection_module.Connection(conn_id="metastudio_default", uri=uri)
        assert conn.conn_type == "metastudio"
        assert conn.login == emu.ak
        assert conn.password == ODD_SK
        assert f"{conn.schema}://{conn.host}:{conn.port}" == emu.base_url
        assert conn.extra_dejson == {"project_id": "proj_1-a", "iam_endpoint": emu.base_url}
        password_uri = connection_module.Connection(uri=emu.connection_uri("password"))
        assert password_uri.login == emu.config.iam_user
        assert password_uri.extra_dejson["auth_type"] == "password"


def test_airflow_connection_and_json_form() -> None:
    connection_module = pytest.importorskip("airflow.models.connection")
    with MetaStudioEmulator(EmulatorConfig(sk=ODD_SK, security_token="temp-token")) as emu:
        conn = emu.airflow_connection("my_conn")
        assert isinstance(conn, connection_module.Connection)
        assert (conn.conn_id, conn.conn_type, conn.login, conn.password) == (
            "my_conn",
            "metastudio",
            emu.ak,
            ODD_SK,
        )
        assert conn.extra_dejson["security_token"] == "temp-token"
        from_json = connection_module.Connection.from_json(emu.connection_json(), conn_id="x")
        assert from_json.password == ODD_SK and from_json.extra_dejson == emu.connection_extra()
        token_conn = emu.airflow_connection(auth_type="token")
        assert token_conn.extra_dejson["auth_type"] == "token" and token_conn.password.startswith("MIIT")


def test_connection_is_accepted_by_the_provider_config() -> None:
    config_module = pytest.importorskip("airflow_provider_metastudio.config")
    with MetaStudioEmulator() as emu:
        for auth_type in ("aksk", "token", "password"):
            conn = emu.connection_dict(auth_type)
            parsed = config_module.MetaStudioConnectionConfig.from_parts(
                login=conn.get("login"),
                password=conn.get("password"),
                extra=conn["extra"],
                host=conn["host"],
                port=conn["port"],
                schema=conn["schema"],
            )
            assert parsed.endpoint == emu.base_url and parsed.project_id == emu.project_id
            assert parsed.auth_type == auth_type
