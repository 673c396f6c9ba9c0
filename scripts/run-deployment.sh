#!/usr/bin/env bash
# The production-shaped deployment test (tests/deployment): Airflow on PostgreSQL with the
# CeleryExecutor (Redis broker), two workers, two schedulers, two triggerers, a DAG processor and
# the api-server, all real processes on 127.0.0.1, against the MetaStudio emulator, with StatsD
# metrics, and the UI in headless Chromium. Installs PostgreSQL, Redis, Chromium and its driver from
# Debian packages when missing (as root).
#   scripts/run-deployment.sh                 # every scenario
#   scripts/run-deployment.sh -k worker       # extra arguments go to pytest
# Component logs and AIRFLOW_HOME stay in .deployment-output/ (METASTUDIO_DEPLOYMENT_OUTPUT).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.3.2}
VENV=${DEPLOYMENT_VENV:-.venv-tests/airflow-$AIRFLOW_VERSION}

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ -x /usr/bin/redis-server ] || command -v redis-server >/dev/null || missing+=(redis-server)
# The browser test (tests/deployment/test_ui.py) drives Debian's Chromium through its chromedriver.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> deployment test: installing ${missing[*]} (Debian packages)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "==> deployment test needs Debian packages: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

echo "==> deployment test: preparing $VENV" >&2
# scripts/run-tests.sh prepared the venv already and may be running another suite from it: a
# reinstall under a running suite would swap its files, so it says so.
[ "${DEPLOYMENT_VENV_READY:-0}" = 1 ] || ensure_venv "$VENV" "$AIRFLOW_VERSION" "test,deployment"
out=${METASTUDIO_DEPLOYMENT_OUTPUT:-$PWD/.deployment-output}
rm -rf "$out"
mkdir -p "$out"
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
echo "==> deployment test: pytest tests/deployment (output in $out)" >&2
# The venv's pytest script, not `python -m pytest`: the suite must import the installed wheel.
rc=0
AIRFLOW_HOME="$home" AIRFLOW__CORE__LOAD_EXAMPLES=False METASTUDIO_EXPECT_INSTALLED=1 \
    METASTUDIO_DEPLOYMENT=1 METASTUDIO_DEPLOYMENT_OUTPUT="$out" \
    "$VENV/bin/pytest" -p no:cacheprovider -v --durations=0 tests/deployment "$@" || rc=$?
for finding in race metrics asset-events watcher; do  # what the scenarios measured, also on success
    [ -f "$out/$finding.json" ] && echo "==> $finding.json: $(tr -d '\n' <"$out/$finding.json")" >&2
done
exit $rc
