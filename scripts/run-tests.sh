#!/usr/bin/env bash
# Run lint, typing and the whole test suite on every supported Airflow line, each in its own
# virtual environment with the provider installed as users install it.
#   AIRFLOW_VERSIONS="3.3.2" scripts/run-tests.sh      # one version only
#   PARALLEL=0 scripts/run-tests.sh                    # one Airflow line after the other
#   scripts/run-tests.sh -k emulator                   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
AIRFLOW_VERSIONS=${AIRFLOW_VERSIONS:-"2.11.2 3.0.6 3.3.2"}
# The suites mostly wait (emulated jobs, DAG runs): one uses 20-60 % of a core, so the Airflow lines
# run side by side and the whole run takes about as long as the slowest line.
PARALLEL=${PARALLEL:-1}
failed=()
newest=${AIRFLOW_VERSIONS##* }
LINT_VENV=".venv-tests/airflow-$newest"
logs=$(mktemp -d)

for version in $AIRFLOW_VERSIONS; do  # installs one at a time: they share uv's cache
    echo "==> Airflow $version: preparing .venv-tests/airflow-$version" >&2
    ensure_venv ".venv-tests/airflow-$version" "$version"
done

run_suite() {
    local version=$1
    shift
    local venv=".venv-tests/airflow-$version" home fullstack=0
    # Each version gets its own AIRFLOW_HOME (SQLite) so runs never share state.
    home=$(mktemp -d)
    # The full-stack run (scheduler, triggerer, dag-processor, api-server) is the slowest test:
    # it runs once, on the newest Airflow; dag.test() covers the deferrable path on every version.
    [ "$version" = "$newest" ] && fullstack=1
    # The venv's pytest script, not `python -m pytest`: that puts the work tree first on sys.path,
    # and the suite would test the source tree instead of the installed wheel.
    local rc=0
    AIRFLOW_HOME="$home" AIRFLOW__CORE__LOAD_EXAMPLES=False METASTUDIO_FULLSTACK=$fullstack \
        METASTUDIO_EXPECT_INSTALLED=1 "$venv/bin/pytest" -p no:cacheprovider --durations=10 "$@" || rc=$?
    rm -rf "$home"
    return $rc
}

declare -A pids=()
for version in $AIRFLOW_VERSIONS; do
    echo "==> Airflow $version: pytest" >&2
    if [ "$PARALLEL" = 1 ]; then
        run_suite "$version" "$@" >"$logs/$version.log" 2>&1 &
        pids[$version]=$!
    elif ! run_suite "$version" "$@"; then
        failed+=("pytest on Airflow $version")
    fi
done
if [ "$PARALLEL" = 1 ]; then
    for version in $AIRFLOW_VERSIONS; do
        rc=0
        wait "${pids[$version]}" || rc=$?
        echo "==> Airflow $version: pytest output (exit $rc)" >&2
        cat "$logs/$version.log"
        [ $rc -eq 0 ] || failed+=("pytest on Airflow $version")
    done
fi
rm -rf "$logs"

echo "==> lint and typing ($LINT_VENV)" >&2
"$LINT_VENV/bin/ruff" check airflow_provider_metastudio tests example_dags benchmarks scripts || failed+=("ruff check")
"$LINT_VENV/bin/ruff" format --check airflow_provider_metastudio tests example_dags benchmarks scripts || failed+=("ruff format")
"$LINT_VENV/bin/mypy" airflow_provider_metastudio || failed+=("mypy")
if [ ${#failed[@]} -gt 0 ]; then
    printf '==> FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "==> all checks passed on Airflow: $AIRFLOW_VERSIONS" >&2
