"""Real Airflow components as subprocesses with a throw-away AIRFLOW_HOME and SQLite (shared by the
full-stack tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import airflow_provider_metastudio

BIN = Path(sys.executable).parent
#: Where this test run imports the provider from (the source tree, or the installed wheel under
#: scripts/run-tests.sh): subprocesses import the same code.
PROVIDER_PATH = str(Path(airflow_provider_metastudio.__file__).resolve().parents[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(home: Path, api_port: int) -> dict[str, str]:
    """The environment of every component: no AIRFLOW_* of the caller, SQLite in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{api_port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET="fullstack-test-jwt-secret-not-a-real-one",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=os.pathsep.join(p for p in (PROVIDER_PATH, os.environ.get("PYTHONPATH")) if p),
    )
    return env


def airflow_cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "airflow"), *args], env=env, text=True, capture_output=True, check=check, timeout=180
    )


def start(
    env: dict[str, str], log_dir: Path, *args: str, name: str | None = None
) -> tuple[subprocess.Popen, Path]:
    """``airflow <args>`` in its own process group, its output in ``log_dir/<name or args[0]>.log``."""
    log = log_dir / f"{name or args[0]}.log"
    proc = subprocess.Popen(
        [str(BIN / "airflow"), *args],
        env=env,
        stdout=log.open("a"),  # "a": a restarted component keeps its earlier output
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, log


def stop(procs: Iterable[tuple[subprocess.Popen, Path]]) -> None:
    """SIGTERM each process group, then SIGKILL what is still there after 30 s."""
    procs = list(procs)
    for proc, _ in procs:
        try:
            os.killpg(proc.pid, 15)
        except ProcessLookupError:
            pass
    for proc, _ in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
