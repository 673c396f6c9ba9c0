"""Stand-in for the deployment stack's ``deployment`` fixture, for developing the browser test alone.

Load it with ``pytest -p deployment._minimal_stack tests/deployment/test_ui.py``. It starts the
smallest stack that serves Airflow 3's UI and runs a deferrable sensor (SQLite, LocalExecutor,
scheduler, triggerer, dag-processor and api-server) behind the attribute names of the real fixture
(``api_url``, ``env``, ``emulator``, ``output_dir``). A ``deployment`` fixture in
``tests/deployment/conftest.py`` overrides this one, and without ``-p`` it is never loaded: delete
this file once the deployment stack has landed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from testsupport.airflow_procs import airflow_cli, base_env, free_port, start, stop

from airflow_provider_metastudio.testing import EmulatorConfig, MetaStudioEmulator

REPO = Path(__file__).resolve().parents[2]


@dataclass
class MinimalStack:
    api_url: str
    env: dict[str, str]
    emulator: MetaStudioEmulator
    output_dir: Path


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinimalStack]:
    root = tmp_path_factory.mktemp("minimal-stack")
    (root / "dags").mkdir()
    shutil.copy(REPO / "example_dags" / "example_metastudio_picture_modeling.py", root / "dags")
    (root / "home").mkdir()
    port = free_port()
    # Jobs end ~20 s after creation, after their sensor deferred (see tests/fullstack/test_fullstack.py).
    with MetaStudioEmulator(EmulatorConfig(waiting_seconds=2, processing_seconds=18)) as emulator:
        env = base_env(root / "home", port)
        env.update(
            AIRFLOW__CORE__DAGS_FOLDER=str(root / "dags"),
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM="2",
            AIRFLOW__CORE__TEST_CONNECTION="Enabled",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
            AIRFLOW_CONN_METASTUDIO_DEFAULT=emulator.connection_json(),
            METASTUDIO_COVER_DIR=str(root / "covers"),
        )
        airflow_cli(env, "db", "migrate")
        procs = [
            start(env, root, *c)
            for c in (("scheduler",), ("triggerer",), ("dag-processor",), ("api-server", "--port", str(port)))
        ]
        try:
            api_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 180
            while True:
                try:
                    if requests.get(f"{api_url}/api/v2/monitor/health", timeout=5).ok:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"api-server not up on {api_url}: {(root / 'api-server.log').read_text()}"
                    )
                time.sleep(1)
            yield MinimalStack(api_url, env, emulator, root / "output")
        finally:
            stop(procs)
