"""Run example_metastudio_picture_modeling on real Airflow against the local emulator.

Steps: start the emulator on a free loopback port, create a throw-away AIRFLOW_HOME (SQLite), set
the connection through AIRFLOW_CONN_METASTUDIO_DEFAULT, migrate the database, run
``airflow dags test``, print the XCom results from the metadata database, stop the emulator.
Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "example_metastudio_picture_modeling"
BIN = Path(sys.executable).parent
# The provider's own progress lines, without Airflow's timestamp/logger decorations.
PROGRESS_LINE = re.compile(
    r"(Created picture modeling job|Picture modeling job|Copied the cover|Obtained an IAM token).*?"
    r"(?=\s+\[[a-z_.]+(\.[A-Za-z_]+)*\]\s+loc=|$)"
)


def redact(url: str | None) -> str | None:
    from airflow_provider_metastudio.models import redact_url

    return redact_url(url)


def start_emulator(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str, str]:
    cmd = [
        sys.executable,
        "-m",
        "airflow_provider_metastudio.testing",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--waiting-seconds",
        str(args.waiting_seconds),
        "--processing-seconds",
        str(args.processing_seconds),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    conn_line = proc.stdout.readline().strip()
    if not base_url.startswith("http://127.0.0.1:") or not conn_line.startswith(
        "AIRFLOW_CONN_METASTUDIO_DEFAULT="
    ):
        proc.kill()
        raise SystemExit(f"emulator did not start: {base_url!r} {conn_line[:40]!r}")
    return proc, base_url, conn_line.split("=", 1)[1]


def read_xcoms(home: Path) -> dict[tuple[str, str], object]:
    """XComs of the last run, straight from the SQLite metadata database (Airflow 2 and 3 alike)."""
    db = sqlite3.connect(home / "airflow.db")
    try:
        rows = db.execute(
            "SELECT task_id, key, value FROM xcom WHERE dag_id = ? AND run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
            (DAG_ID, DAG_ID),
        ).fetchall()
    finally:
        db.close()
    out: dict[tuple[str, str], object] = {}
    for task_id, key, value in rows:
        if isinstance(value, (bytes, memoryview)):
            value = bytes(value).decode()
        try:
            out[(task_id, key)] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            out[(task_id, key)] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--waiting-seconds", type=float, default=2.0)
    parser.add_argument("--processing-seconds", type=float, default=6.0)
    parser.add_argument("--keep-home", action="store_true", help="keep the throw-away AIRFLOW_HOME")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="metastudio-airflow-home-"))
    emulator, base_url, conn_json = start_emulator(args)
    print(f"==> emulator at {base_url}; AIRFLOW_HOME={home}", flush=True)
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "example_dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        AIRFLOW_CONN_METASTUDIO_DEFAULT=conn_json,
        METASTUDIO_COVER_DIR=str(home / "covers"),
        NO_PROXY="127.0.0.1,localhost",
    )
    airflow = str(BIN / "airflow")
    try:
        subprocess.run(
            [airflow, "db", "migrate"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        conf = json.dumps({"cover_dir": str(home / "covers"), "poll_interval": 2})
        started = time.monotonic()
        run = subprocess.run(
            [airflow, "dags", "test", DAG_ID, "-c", conf], env=env, text=True, capture_output=True
        )
        elapsed = time.monotonic() - started
        log_path = home / "dags_test.log"
        log_path.write_text(run.stdout + run.stderr)
        for line in (run.stdout + run.stderr).splitlines():
            match = PROGRESS_LINE.search(line)
            if match:
                print("    " + match.group(0).strip())
        if run.returncode != 0:
            print((run.stdout + run.stderr)[-6000:])
            print(f"==> airflow dags test failed (exit {run.returncode}); full log in {log_path}")
            return 1
        xcoms = read_xcoms(home)
        manifest = xcoms.get(("process_model", "return_value"))
        print(f"==> airflow dags test {DAG_ID}: success in {elapsed:.1f}s; XCom results:")
        results = {
            "job_id": xcoms.get(("create_job", "job_id")),
            "state": xcoms.get(("fetch_model", "state")),
            "model_asset_id": xcoms.get(("fetch_model", "model_asset_id")),
            "model_cover_url": redact(xcoms.get(("fetch_model", "model_cover_url"))),  # type: ignore[arg-type]
            "model_cover_url_expires_at": xcoms.get(("fetch_model", "model_cover_url_expires_at")),
            "model_cover_path": xcoms.get(("fetch_model", "model_cover_path")),
            "manifest": manifest,
        }
        for key, value in results.items():
            print(f"    {key}: {json.dumps(value) if isinstance(value, dict) else value}")
        missing = [k for k, v in results.items() if v in (None, "")]
        if missing:
            print(f"==> missing XCom values: {missing}")
            return 1
        return 0
    finally:
        emulator.send_signal(signal.SIGTERM)
        try:
            emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emulator.kill()
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
