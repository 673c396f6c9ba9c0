"""The main example DAG on a running Airflow: scheduler, triggerer (and on Airflow 3 the
dag-processor and api-server) as separate processes with SQLite, triggered from the CLI.

The sensor defers, a real triggerer process runs MetaStudioPictureModelingJobTrigger against the
emulator, and the run ends with the model's XComs. This is the deferrable path exactly as users
run it; it is the slowest test, so it runs once per Airflow version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from testsupport.airflow_procs import BIN, airflow_cli, base_env, free_port, start, stop

from airflow_provider_metastudio._compat import AIRFLOW_V_3

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "example_metastudio_picture_modeling"
WAITS_DAG_ID = "fullstack_three_waits"
PRODUCER_DAG_ID = "example_metastudio_asset_producer"
CONSUMER_DAG_ID = "example_metastudio_asset_consumer"
ALL_DAGS = (DAG_ID, WAITS_DAG_ID, PRODUCER_DAG_ID, CONSUMER_DAG_ID)

# Jobs end about 20 s after they are created, well after their sensor has deferred. A trigger that
# fires while the deferring task's process is still winding down (5 s and more on a loaded machine)
# meets an Airflow 3 scheduler race: the late "success" of the deferring workload, seen while the
# resumed try is queued, fails the task as "changed externally". Seen once in CI; not ours to fix.
pytestmark = pytest.mark.metastudio_emulator(waiting_seconds=2, processing_seconds=18)


def _dags_folder(tmp_path: Path) -> Path:
    """The example DAGs (main; asset producer and consumer) and this suite's own DAG, side by side."""
    folder = tmp_path / "dags"
    folder.mkdir()
    for dag_id in (DAG_ID, PRODUCER_DAG_ID, CONSUMER_DAG_ID):
        shutil.copy(REPO / "example_dags" / f"{dag_id}.py", folder)
    shutil.copy(Path(__file__).parent / "dags" / f"{WAITS_DAG_ID}.py", folder)
    return folder


@pytest.fixture
def airflow_env(tmp_path, metastudio_emulator):
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = base_env(home, free_port())
    env.update(
        AIRFLOW__CORE__DAGS_FOLDER=str(_dags_folder(tmp_path)),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor" if AIRFLOW_V_3 else "SequentialExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="5",
        AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
        AIRFLOW_CONN_METASTUDIO_DEFAULT=metastudio_emulator.connection_json(),
        METASTUDIO_COVER_DIR=str(tmp_path / "covers"),
        METASTUDIO_MODEL_DIR=str(tmp_path / "models"),
        METASTUDIO_PROJECT_ID=metastudio_emulator.project_id,
    )
    airflow_cli(env, "db", "migrate")
    return env


def _xcoms(home: Path, run_id: str, dag_id: str = DAG_ID) -> dict[tuple[str, str], Any]:
    db = sqlite3.connect(home / "airflow.db")
    try:
        rows = db.execute(
            "SELECT task_id, key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND map_index = -1",
            (dag_id, run_id),
        )
        out = {}
        for task_id, key, value in rows.fetchall():
            value = bytes(value).decode() if isinstance(value, (bytes, memoryview)) else value
            out[(task_id, key)] = json.loads(value) if isinstance(value, str) else value
        return out
    finally:
        db.close()


def _only_run(home: Path, dag_id: str) -> str:
    db = sqlite3.connect(home / "airflow.db")
    try:
        (run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ?", (dag_id,)).fetchone()
        return run_id
    finally:
        db.close()


def _dag_parsed(home: Path) -> bool:
    db = sqlite3.connect(home / "airflow.db")
    try:
        marks = ", ".join("?" for _ in ALL_DAGS)
        found = db.execute(
            f"SELECT COUNT(DISTINCT dag_id) FROM serialized_dag WHERE dag_id IN ({marks})", ALL_DAGS
        ).fetchone()
        return found[0] == len(ALL_DAGS)
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


def _run_state(home: Path, run_id: str, dag_id: str = DAG_ID) -> tuple[str | None, dict[str, str | None]]:
    db = sqlite3.connect(home / "airflow.db")
    try:
        if run_id == "*":  # the DAG's only run (one the scheduler started)
            row = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ?", (dag_id,)).fetchone()
            if row is None:
                return None, {}
            run_id = row[0]
        state = db.execute(
            "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        ).fetchone()
        tis = db.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        )
        return (state[0] if state else None), dict(tis.fetchall())
    finally:
        db.close()


@pytest.mark.skipif(shutil.which("airflow", path=str(BIN)) is None, reason="airflow CLI not installed")
@pytest.mark.skipif(
    not AIRFLOW_V_3 or os.environ.get("METASTUDIO_FULLSTACK", "1") == "0",
    reason="runs once per matrix, on the newest Airflow (Airflow 2 has only the SequentialExecutor on "
    "SQLite); dag.test() covers the deferrable path on every version",
)
def test_example_dag_through_scheduler_and_triggerer(airflow_env, metastudio_emulator, tmp_path):
    home = Path(airflow_env["AIRFLOW_HOME"])
    components = [("scheduler",), ("triggerer",)]
    if AIRFLOW_V_3:
        components += [("dag-processor",), ("api-server", "--port", airflow_env["AIRFLOW__API__PORT"])]
    procs = [start(airflow_env, tmp_path, *c) for c in components]
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _dag_parsed(home):
            time.sleep(2)
        for dag_id in ALL_DAGS:
            airflow_cli(airflow_env, "dags", "unpause", dag_id)
        run_id = f"fullstack_{int(time.time())}"
        conf = json.dumps({"cover_dir": str(tmp_path / "covers"), "poll_interval": 2})
        airflow_cli(airflow_env, "dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", conf)
        # Three more waits on one triggerer, ending at different times while all are deferred.
        waited = [
            metastudio_emulator.jobs.create(
                name=f"waited-{i}", waiting_seconds=2, processing_seconds=25 + 6 * i
            )
            for i in range(3)
        ]
        conf = json.dumps({"job_ids": [j["job_id"] for j in waited]})
        airflow_cli(airflow_env, "dags", "trigger", WAITS_DAG_ID, "--run-id", run_id, "--conf", conf)
        # The producer's asset event must make the scheduler start the consumer on its own.
        airflow_cli(airflow_env, "dags", "trigger", PRODUCER_DAG_ID, "--run-id", run_id)
        runs = {DAG_ID: run_id, WAITS_DAG_ID: run_id, PRODUCER_DAG_ID: run_id, CONSUMER_DAG_ID: "*"}
        states: dict[str, tuple[str | None, dict[str, str | None]]] = {}
        while time.monotonic() < deadline:
            states = {d: _run_state(home, r, d) for d, r in runs.items()}
            if all(s in ("success", "failed") for s, _ in states.values()):
                break
            time.sleep(2)
        logs = {p[1].stem: p[1].read_text() for p in procs}
        assert all(s == "success" for s, _ in states.values()), (
            states,
            {k: v[-3000:] for k, v in logs.items()},
        )
    finally:
        stop(procs)

    # The deferrable sensor really went through the triggerer process: its trigger's progress
    # lines are in the trigger log (Airflow writes them next to the task's log).
    trigger_logs = [(tmp_path / "triggerer.log").read_text()] + [
        p.read_text() for p in (home / "logs").rglob("*") if p.is_file() and ".trigger." in p.name
    ]
    assert any("-> SUCCEED after" in text and "Picture modeling job" in text for text in trigger_logs)
    all_logs = "\n".join(
        trigger_logs + [p.read_text() for p in (home / "logs").rglob("*.log") if p.is_file()]
    )
    assert "Signature=" in all_logs and re.search(r"Signature=(?!\*\*\*)", all_logs) is None
    # Each deferred task's log (its task log and its trigger's, which Airflow keeps beside it)
    # tells its own job's end, and no other job's: the poller hands observations to each trigger.
    for i, job in enumerate(waited):
        task_dir = [
            p for p in (home / "logs").rglob(f"task_id=wait_{i}") if f"dag_id={WAITS_DAG_ID}" in str(p)
        ]
        assert task_dir, sorted(str(p) for p in (home / "logs").rglob("task_id=*"))
        own = "\n".join(p.read_text() for d in task_dir for p in d.rglob("*") if p.is_file())
        assert re.search(rf"Picture modeling job {job['job_id']}: \w+ -> SUCCEED after", own), own[-3000:]
        for other in waited:
            if other is not job:
                assert other["job_id"] not in own, (i, own[-3000:])
    x = _xcoms(home, run_id)
    job_id = x[("create_job", "job_id")]
    job = metastudio_emulator.jobs.get(job_id)
    assert x[("wait_for_model", "return_value")]["state"] == "SUCCEED"
    assert x[("fetch_model", "model_asset_id")] == job["model_asset_id"]
    cover = Path(x[("fetch_model", "model_cover_path")])
    assert cover.read_bytes().startswith(b"\x89PNG")
    manifest = x[("process_model", "return_value")]
    assert manifest["model_asset_id"] == job["model_asset_id"]
    assert manifest["cover"]["width"] > 0
    # The consumer, started by the scheduler from the producer's asset event, downloaded and checked
    # the producer's model (a GLB file verified by MD5).
    produced = _xcoms(home, run_id, PRODUCER_DAG_ID)[("create_job", "model_asset_id")]
    consumer_run = _only_run(home, CONSUMER_DAG_ID)
    checked = _xcoms(home, consumer_run, CONSUMER_DAG_ID)[("check_models", "return_value")]
    assert [c["model_asset_id"] for c in checked] == [produced]
    assert Path(checked[0]["glb"]).read_bytes()[:4] == b"glTF"
    assert metastudio_emulator.recorder.counters()["jobs_created"] == 2  # API creates: main example, producer
    # Each process keeps the quota on its own and they do not coordinate (the README's advice: a
    # pool, or deferrable sensors). Here four sensors' first pokes (four worker processes) and the
    # triggerer's poller meet within seconds: some calls draw a 429, and each must be retried to
    # success, never fail a task. The bound only catches a storm.
    log = [(e["call"], e["status"], round(e["time"], 2)) for e in metastudio_emulator.recorder.request_log()]
    throttled = [i for i, (_, status, _) in enumerate(log) if status == 429]
    assert len(throttled) <= 20, log
    for i in throttled:
        assert any(call == log[i][0] and status == 200 for call, status, _ in log[i + 1 :]), log
