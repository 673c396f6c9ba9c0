#!/usr/bin/env bash
# Run the main example DAG for real: a throw-away AIRFLOW_HOME with SQLite, the MetaStudio emulator
# on a free loopback port, `airflow dags test`, then print the XCom results.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.3.2}
VENV=${VENV:-.venv}
echo "==> preparing $VENV (Airflow $AIRFLOW_VERSION)" >&2
ensure_venv "$VENV" "$AIRFLOW_VERSION"
exec "$VENV/bin/python" scripts/run_example.py "$@"
