"""Test session set-up: a throw-away AIRFLOW_HOME with SQLite, and helpers to run DAGs for real."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports Airflow: never touch a developer's real AIRFLOW_HOME.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="metastudio-tests-home-"))
# Under pytest-xdist (scripts/run-tests.sh: the suite mostly waits on emulated jobs) each worker gets
# its own home below the given one, so its own SQLite database: DAG runs of two workers never share.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _home = Path(os.environ["AIRFLOW_HOME"]) / os.environ["PYTEST_XDIST_WORKER"]
    _home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(_home)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).parent / "e2e" / "dags")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

# The production-shaped deployment test (PostgreSQL, Celery, eight Airflow processes) runs only in
# its own lane: scripts/run-deployment.sh sets METASTUDIO_DEPLOYMENT=1.
if os.environ.get("METASTUDIO_DEPLOYMENT") != "1":
    collect_ignore = ["deployment"]

# The emulator fixtures (metastudio_emulator, metastudio_connection) are opt-in, as for any user.
pytest_plugins = ["airflow_provider_metastudio.testing.pytest_plugin"]


def _fix_reschedule_start_date_in_dag_test() -> None:
    """Work around apache/airflow#58777 (fixed by apache/airflow#58791; 3.3.2 has the fix, the 3.0
    line never got it).

    In ``dag.test()`` the task SDK's in-process comms hand a reschedule sensor the first reschedule
    date as the raw JSON string (``model_construct`` skips validation), so every reschedule-mode
    sensor (any sensor, not only ours) dies with ``TypeError`` on the second poke that finds nothing.
    Real deployments go through the supervisor's socket, which validates the message. Here we only
    validate it, and only where Airflow's own code still has the bug.
    """
    import inspect

    try:
        from airflow.sdk.api.client import TaskInstanceOperations
        from airflow.sdk.execution_time.comms import TaskRescheduleStartDate
    except ImportError:  # Airflow 2
        return
    if "model_construct" not in inspect.getsource(TaskInstanceOperations.get_reschedule_start_date):
        return

    def get_reschedule_start_date(self, id, try_number=1):  # Airflow's signature
        resp = self.client.get(f"task-reschedules/{id}/start_date", params={"try_number": try_number})
        return TaskRescheduleStartDate(start_date=resp.json())

    TaskInstanceOperations.get_reschedule_start_date = get_reschedule_start_date


_fix_reschedule_start_date_in_dag_test()


def _loopback_only() -> None:
    """Refuse to resolve any host but this machine's: a test that builds a connection wrongly must
    fail at once, never send a request (or even a DNS query) towards the real service."""
    import ipaddress
    import socket

    allowed = {"localhost", socket.gethostname()}
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # socket.getaddrinfo's signature
        name = host.decode() if isinstance(host, bytes) else host
        if name and name not in allowed:
            try:
                loopback = ipaddress.ip_address(name.strip("[]")).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise socket.gaierror(socket.EAI_NONAME, f"tests reach only 127.0.0.1, not {name!r}")
        return real(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


_loopback_only()
