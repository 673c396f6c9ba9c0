"""Fixtures for end-to-end runs: real Airflow (``dag.test()``, the triggerer code path for deferrable
tasks) against the emulator over loopback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from testsupport import import_file

DAGS = Path(__file__).parent / "dags"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the session's SQLite metadata database once."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"


def _load_dag_file(name: str) -> Any:
    """Import ``dags/<name>.py`` by path (the DAG folder is not a package)."""
    return import_file(DAGS / f"{name}.py")


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
    task_logs: str = ""  # what tasks logged where capfd/caplog miss it (Airflow 3.0, see run_asset_dag)


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


def register_dag_assets(dag: Any) -> None:
    """Record the DAG's assets (datasets) in the metadata database as a DAG processor would, so that
    ``dag.test()`` without one can emit their events.

    2.11's ``dag.test()`` records dataset events only for datasets in the database; 3.0's refuses a
    task whose inlet or outlet asset is not active (``AirflowInactiveAssetInInletOrOutletException``)
    and, unlike 3.1+, never syncs the DAG itself. 3.0 gets only the asset rows and their activation
    (``AssetModelOperation``, the DAG processor's code), not a DagModel: that needs a DAG bundle row.
    """
    from airflow_provider_metastudio._compat import AIRFLOW_V_3, AIRFLOW_VERSION

    if not AIRFLOW_V_3:
        dag.sync_to_db()
    elif AIRFLOW_VERSION.startswith("3.0."):
        from airflow.dag_processing.collection import AssetModelOperation
        from airflow.serialization.serialized_objects import SerializedDAG
        from airflow.utils.session import create_session

        # The scheduler's form of the DAG, as dag.test() builds it: collect() needs its methods.
        scheduler_dag = SerializedDAG.deserialize_dag(SerializedDAG.serialize_dag(dag))
        assets = AssetModelOperation.collect({dag.dag_id: scheduler_dag})
        with create_session() as session:
            models = assets.sync_assets(session=session)
            session.flush()
            assets.activate_assets_if_possible(models.values(), session=session)


@pytest.fixture(scope="session")
def asset_dags(airflow_db: Path) -> Any:
    return _load_dag_file("metastudio_asset_dags")


@pytest.fixture
def run_asset_dag(asset_dags: Any, airflow_db: Path, metastudio_connection: str):
    """Like ``run_dag``, for the DAGs of ``dags/metastudio_asset_dags.py``."""

    def run(dag_id: str, **conf: Any) -> DagResult:
        dag = asset_dags.DAGS[dag_id]
        register_dag_assets(dag)
        with _task_logs() as logs:
            dr = dag.test(run_conf=conf)
        tasks = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
        tries = {ti.task_id: ti.try_number for ti in dr.get_task_instances()}
        state = str(getattr(dr.state, "value", dr.state))
        xcoms = _xcoms(airflow_db, dag_id, dr.run_id)
        return DagResult(state, tasks, xcoms, dr.run_id, tries, "\n".join(str(e) for e in logs))

    return run


@contextmanager
def _task_logs() -> Iterator[list[Any]]:
    """Airflow 3.0's ``dag.test()`` sends a task's own log (e.g. "Task failed with exception" and the
    error) to structlog, which neither capfd nor caplog sees there: capture those events, with the
    exception's text. On 2.11 and 3.3 the tests find these lines in capfd/caplog."""
    from airflow_provider_metastudio._compat import AIRFLOW_VERSION

    if not AIRFLOW_VERSION.startswith("3.0."):
        yield []
        return
    import structlog
    from structlog.testing import capture_logs

    with capture_logs(processors=[structlog.processors.format_exc_info]) as logs:
        yield logs
