"""Fixtures for end-to-end runs: real Airflow (``dag.test()``, the triggerer code path for deferrable
tasks) against the emulator over loopback."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DAGS = Path(__file__).parent / "dags"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the session's SQLite metadata database once."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"


def _load_dag_file(name: str) -> Any:
    """Import ``dags/<name>.py`` by path (the DAG folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, DAGS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def e2e_dags(airflow_db: Path) -> Any:
    return _load_dag_file("metastudio_e2e_dags")


@pytest.fixture(scope="session")
def fault_dags(airflow_db: Path) -> Any:
    return _load_dag_file("metastudio_fault_dags")


@dataclass
class DagResult:
    state: str
    tasks: dict[str, str]
    xcoms: dict[tuple[str, str], Any]
    run_id: str
    tries: dict[str, int] = field(default_factory=dict)  # task id -> try number of its last try


def _xcoms(db: Path, dag_id: str, run_id: str) -> dict[tuple[str, str], Any]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT task_id, key, value FROM xcom WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        ).fetchall()
    finally:
        conn.close()
    out: dict[tuple[str, str], Any] = {}
    for task_id, key, value in rows:
        if isinstance(value, (bytes, memoryview)):
            value = bytes(value).decode()
        out[(task_id, key)] = json.loads(value) if isinstance(value, str) else value
    return out


@pytest.fixture(scope="session")
def read_xcoms(airflow_db: Path):
    """``read_xcoms(dag_id, run_id)``: a run's XComs from the SQLite database, Airflow 2 and 3 alike."""
    return lambda dag_id, run_id: _xcoms(airflow_db, dag_id, run_id)


@pytest.fixture
def run_dag(e2e_dags: Any, airflow_db: Path, metastudio_connection: str):
    """Run one of the e2e DAGs with ``dag.test()`` and return its states and XComs."""

    def run(dag_id: str, **conf: Any) -> DagResult:
        dag = e2e_dags.DAGS[dag_id]
        dr = dag.test(run_conf=conf)
        tasks = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
        state = str(getattr(dr.state, "value", dr.state))
        tries = {ti.task_id: ti.try_number for ti in dr.get_task_instances()}
        return DagResult(state, tasks, _xcoms(airflow_db, dag_id, dr.run_id), dr.run_id, tries)

    return run


# -- model assets (issue #14) ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def asset_dags(airflow_db: Path) -> Any:
    return _load_dag_file("metastudio_asset_dags")


@pytest.fixture
def run_asset_dag(asset_dags: Any, airflow_db: Path, metastudio_connection: str):
    """Like ``run_dag``, for the DAGs of ``dags/metastudio_asset_dags.py``."""

    def run(dag_id: str, **conf: Any) -> DagResult:
        dag = asset_dags.DAGS[dag_id]
        from airflow_provider_metastudio._compat import AIRFLOW_V_3

        if not AIRFLOW_V_3:  # 2.11's dag.test() records dataset events only for datasets in the db
            dag.sync_to_db()
        dr = dag.test(run_conf=conf)
        tasks = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
        tries = {ti.task_id: ti.try_number for ti in dr.get_task_instances()}
        state = str(getattr(dr.state, "value", dr.state))
        return DagResult(state, tasks, _xcoms(airflow_db, dag_id, dr.run_id), dr.run_id, tries)

    return run
