"""Airflow 3 as production runs it: PostgreSQL metadata DB, CeleryExecutor on Redis, two workers,
two schedulers, two triggerers, a DAG processor and the api-server, each a real process in its own
process group, with StatsD metrics sent to a listener of the test.

:class:`Deployment` is what the ``deployment`` fixture yields; the components reuse
``testsupport.airflow_procs`` (the full-stack test's SQLite version).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from deployment.services import Postgres, Redis, StatsdListener
from testsupport.airflow_procs import airflow_cli, base_env, free_port, start, stop

from airflow_provider_metastudio.testing import MetaStudioEmulator

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
EXAMPLE_DAGS = (
    "example_metastudio_picture_modeling",
    "example_metastudio_asset_producer",
    "example_metastudio_asset_consumer",
)
WORKER_CONCURRENCY = 4
# Components that run a job with a heartbeat (their hostname is their component name).
HEARTBEATING = ("scheduler-1", "scheduler-2", "triggerer-1", "triggerer-2")


def _components(api_port: int) -> dict[str, tuple[str, ...]]:
    # No log servers (they listen on every interface): the components share AIRFLOW_HOME/logs, which
    # the api-server reads directly.
    worker = ("celery", "worker", "--concurrency", str(WORKER_CONCURRENCY), "--skip-serve-logs")
    return {
        "scheduler-1": ("scheduler",),
        "scheduler-2": ("scheduler",),
        "triggerer-1": ("triggerer", "--skip-serve-logs"),
        "triggerer-2": ("triggerer", "--skip-serve-logs"),
        "worker-1": (*worker, "--celery-hostname", "worker-1@%h"),
        "worker-2": (*worker, "--celery-hostname", "worker-2@%h"),
        "dag-processor": ("dag-processor",),
        "api-server": ("api-server", "--host", "127.0.0.1", "--port", str(api_port)),
    }


@dataclass(frozen=True)
class TaskState:
    state: str | None
    try_number: int
    hostname: str | None


@dataclass(frozen=True)
class RunResult:
    dag_id: str
    run_id: str
    state: str | None
    tasks: dict[tuple[str, int], TaskState]  # (task_id, map_index) -> state

    def not_successful(self) -> dict[tuple[str, int], TaskState]:
        return {k: v for k, v in self.tasks.items() if v.state != "success"}


class Deployment:
    """The running stack. Attributes: ``api_url``, ``env`` (for ``airflow`` CLI calls), ``emulator``,
    ``output_dir`` (component logs in ``logs/``, AIRFLOW_HOME in ``airflow-home/``), ``statsd``."""

    def __init__(self, emulator: MetaStudioEmulator, output_dir: Path) -> None:
        self.emulator = emulator
        self.output_dir = output_dir
        self.log_dir = output_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.home = output_dir / "airflow-home"
        self.home.mkdir(exist_ok=True)
        self.postgres = Postgres(self.log_dir)
        self.redis = Redis(self.log_dir)
        self.statsd: StatsdListener | None = None
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.env: dict[str, str] = {}
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}
        self._args = _components(self.api_port)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> Deployment:
        self.postgres.start()
        self.redis.start()
        self.statsd = StatsdListener(self.log_dir)
        self.env = self._environment()
        self.cli("db", "migrate")
        for name in self._args:
            self.start_component(name)
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Stop everything started, in reverse order of need; safe to call twice."""
        try:
            stop(self.procs.values())
            self.procs.clear()
        finally:
            self.redis.stop()
            self.postgres.stop()
            if self.statsd is not None:
                self.statsd.stop()
                self.statsd = None

    def _environment(self) -> dict[str, str]:
        assert self.statsd is not None
        dags = self.output_dir / "dags"
        dags.mkdir(exist_ok=True)
        for dag_id in EXAMPLE_DAGS:
            shutil.copy(REPO / "example_dags" / f"{dag_id}.py", dags)
        for dag in (HERE / "dags").glob("*.py"):
            shutil.copy(dag, dags)
        env = base_env(self.home, self.api_port)
        env["PYTHONPATH"] = os.pathsep.join((str(HERE / "stackpath"), env["PYTHONPATH"]))
        db = self.postgres.dsn
        env.update(
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db.replace("postgresql://", "postgresql+psycopg2://"),
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CELERY__BROKER_URL=self.redis.url,
            AIRFLOW__CELERY__RESULT_BACKEND=db.replace("postgresql://", "db+postgresql+psycopg2://"),
            AIRFLOW__CELERY__WORKER_CONCURRENCY=str(WORKER_CONCURRENCY),
            AIRFLOW__CELERY__SYNC_PARALLELISM="1",
            AIRFLOW__CORE__PARALLELISM="32",
            AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="64",
            # 40 asset events in a minute start many consumer runs. At the default cap (16) events
            # queued meanwhile waited for a later event (apache/airflow#56050): 8 of 40 reached no run.
            AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG="64",
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            # Each component names itself (METASTUDIO_COMPONENT): task instances and triggerer jobs
            # record which worker or triggerer holds them, so a scenario kills the right one.
            AIRFLOW__CORE__HOSTNAME_CALLABLE="metastudio_deployment_host.hostname",
            # Fast failure detection, so the kill scenarios take seconds, not the default minutes.
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
            AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD="10",
            AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL="10",
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="20",
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="5",
            AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
            AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="10",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="10",
            # For the UI test: the connection form's Test button, and no login on the default
            # (simple) auth manager.
            AIRFLOW__CORE__TEST_CONNECTION="Enabled",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__METRICS__STATSD_ON="True",
            AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
            AIRFLOW__METRICS__STATSD_PORT=str(self.statsd.port),
            AIRFLOW__METRICS__STATSD_PREFIX="airflow",
            AIRFLOW_CONN_METASTUDIO_DEFAULT=self.emulator.connection_json(),
            METASTUDIO_PROJECT_ID=self.emulator.project_id,
            METASTUDIO_COVER_DIR=str(self.output_dir / "covers"),
            METASTUDIO_MODEL_DIR=str(self.output_dir / "models"),
        )
        return env

    def start_component(self, name: str) -> None:
        env = dict(self.env, METASTUDIO_COMPONENT=name)
        self.procs[name] = start(env, self.log_dir, *self._args[name], name=name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one component's whole process group (``"worker-1"``, ``"triggerer-2"``, ...)."""
        proc, log = self.procs.pop(name)
        with open(log, "a") as f:
            f.write(f"\n=== deployment test: signal {sig} to {name} at {time.strftime('%H:%M:%S')} ===\n")
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def restart(self, name: str) -> None:
        """Start a component again (killing it first if it runs)."""
        if name in self.procs:
            self.kill(name, signal.SIGTERM)
        self.start_component(name)

    def _wait_ready(self, timeout: float = 300) -> None:
        dag_ids = [*EXAMPLE_DAGS, *(p.stem for p in (HERE / "dags").glob("*.py"))]
        deadline = time.monotonic() + timeout
        missing: list[str] = []
        while time.monotonic() < deadline:
            missing = []
            parsed = {r[0] for r in self.query("SELECT dag_id FROM serialized_dag")}
            missing += [f"DAG {d} not parsed" for d in dag_ids if d not in parsed]
            alive = {
                host
                for (host,) in self.query(
                    "SELECT hostname FROM job WHERE state = 'running' "
                    "AND latest_heartbeat > now() - interval '10 seconds'"
                )
            }
            missing += [f"{n} not heartbeating" for n in HEARTBEATING if n not in alive]
            for name in ("worker-1", "worker-2"):
                if " ready." not in self.procs[name][1].read_text(errors="replace"):
                    missing.append(f"{name} not ready")
            try:
                with urllib.request.urlopen(f"{self.api_url}/api/v2/monitor/health", timeout=5) as r:
                    r.read()
            except OSError:
                missing.append("api-server not answering")
            dead = [n for n, (p, _) in self.procs.items() if p.poll() is not None]
            if dead:
                self.fail(f"components exited during start-up: {dead}")
            if not missing:
                return
            time.sleep(2)
        self.fail(f"stack not ready after {timeout:.0f} s: {missing}")

    # ------------------------------------------------------------------ DAG runs

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        run_id = run_id or f"deployment_{dag_id}_{time.time_ns()}"
        args = ["dags", "trigger", dag_id, "--run-id", run_id]
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        self.cli(*args)
        return run_id

    def cli(self, *args: str) -> str:
        """``airflow <args>`` with the stack's environment; fails with its output if it fails."""
        done = airflow_cli(self.env, *args, check=False)
        if done.returncode != 0:
            output = f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
            self.fail(f"airflow {' '.join(args)} exited {done.returncode}:\n{output}")
        return done.stdout

    def run_state(self, dag_id: str, run_id: str) -> RunResult:
        row = self.query("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", dag_id, run_id)
        tis = self.query(
            "SELECT task_id, map_index, state, try_number, hostname FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s",
            dag_id,
            run_id,
        )
        tasks = {(t, m): TaskState(s, n, h) for t, m, s, n, h in tis}
        return RunResult(dag_id, run_id, row[0][0] if row else None, tasks)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> RunResult:
        """Wait until the run ends; fail (with every component's log tail) if it does not."""
        deadline = time.monotonic() + timeout
        result = self.run_state(dag_id, run_id)
        while time.monotonic() < deadline:
            result = self.run_state(dag_id, run_id)
            if result.state in ("success", "failed"):
                return result
            time.sleep(2)
        self.fail(f"{dag_id} run {run_id} not finished after {timeout:.0f} s: {result}")

    @staticmethod
    def poll(check: Any, timeout: float, interval: float = 0.5) -> Any:
        """``check()``'s first truthy value within ``timeout`` seconds, else None (no failure)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(interval)
        return None

    def wait_for(self, what: str, check: Any, timeout: float, interval: float = 0.5) -> Any:
        """Poll ``check()`` until it returns something truthy; fail naming ``what`` otherwise."""
        value = self.poll(check, timeout, interval)
        return value if value else self.fail(f"timed out after {timeout:.0f} s waiting for {what}")

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s AND key = %s "
            "AND map_index = %s",
            dag_id, run_id, task_id, key, map_index,
        )  # fmt: skip
        if not rows:
            return None
        return rows[0][0]  # a JSON column: psycopg2 decodes it

    # ------------------------------------------------------------------ inspection

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg2.connect(self.postgres.dsn) as db, db.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
        db.close()
        return rows

    def log_tails(self, names: Iterable[str] | None = None, chars: int = 2500) -> str:
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            if names is None or log.stem in names:
                text = log.read_text(errors="replace")
                parts.append(f"----- {log.name} (last {chars} chars) -----\n{text[-chars:]}")
        return "\n".join(parts)

    def fail(self, message: str) -> Any:
        import pytest

        pytest.fail(f"{message}\n\nComponent logs under {self.log_dir}:\n{self.log_tails()}", pytrace=False)
