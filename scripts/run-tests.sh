#!/usr/bin/env bash
# Run lint, typing and the whole test suite on every supported Airflow line, each in its own
# virtual environment with the provider installed as users install it.
#   AIRFLOW_VERSIONS="3.3.2" scripts/run-tests.sh      # one version only
#   PARALLEL=0 scripts/run-tests.sh                    # every Airflow line one after the other
#   WORKERS=0 scripts/run-tests.sh                     # each suite in one process (no pytest-xdist)
#   scripts/run-tests.sh -k emulator                   # extra arguments go to pytest (one run per line)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
AIRFLOW_VERSIONS=${AIRFLOW_VERSIONS:-"2.11.2 3.0.6 3.3.2"}
# Airflow lines whose venv also gets the OpenLineage provider (the "openlineage" extra), so the
# lineage tests run there with it; the lines without it test that the provider works without it.
OPENLINEAGE_VERSIONS=${OPENLINEAGE_VERSIONS:-"2.11.2 3.3.2"}
# Airflow lines whose venv also gets the official Huawei SDK (the "sdk-conformance" extra, tests
# only): there the emulator's answers must parse with it (tests/integration/test_official_sdk.py).
SDK_VERSIONS=${SDK_VERSIONS:-"3.0.6"}
# The suites mostly wait (emulated jobs, DAG runs; one uses 20-60 % of a core), so two lanes run
# side by side: the newest Airflow (which also runs the full-stack test) in one, the other lines one
# after the other in the second. Three suites at once pushed a 2-core machine's load past 30.
PARALLEL=${PARALLEL:-1}
# Within a suite, pytest-xdist runs the tests in WORKERS processes: one process mostly sleeps on
# emulated jobs (3.0.6's suite: 13:45 in one process, 8:29 in four, 5 min of CPU), and one after the
# other the suites took CI past its 30 minutes.
WORKERS=${WORKERS:-3}
# Tests that start real Airflow or worker processes, or measure a quota's pace across processes: they
# run after the rest, one at a time, so no other test's load skews them (newest line only; they skip
# elsewhere).
SERIAL_TESTS=(tests/fullstack tests/integration/test_quota_processes.py tests/integration/test_host_quota.py)
# The production-shaped deployment test (scripts/run-deployment.sh: PostgreSQL, Celery, eight Airflow
# processes) runs on the newest line's venv, after the older lines in their lane: the newest line's
# pytest (with the full-stack and watcher tests) is the longer suite, so this lengthens the whole run
# least. DEPLOYMENT=0 leaves it out.
DEPLOYMENT=${DEPLOYMENT:-1}
failed=()
newest=${AIRFLOW_VERSIONS##* }
LINT_VENV=".venv-tests/airflow-$newest"
logs=$(mktemp -d)

for version in $AIRFLOW_VERSIONS; do  # installs one at a time: they share uv's cache
    echo "==> Airflow $version: preparing .venv-tests/airflow-$version" >&2
    extras=test,lint
    [[ " $OPENLINEAGE_VERSIONS " == *" $version "* ]] && extras=$extras,openlineage
    [[ " $SDK_VERSIONS " == *" $version "* ]] && extras=$extras,sdk-conformance
    [ "$DEPLOYMENT" = 1 ] && [ "$version" = "$newest" ] && extras=$extras,deployment
    ensure_venv ".venv-tests/airflow-$version" "$version" "$extras"
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
    # Where the venv has the OpenLineage provider, its lineage tests must run, not skip.
    local openlineage=""
    [[ " $OPENLINEAGE_VERSIONS " == *" $version "* ]] && openlineage=1
    # What does not depend on Airflow (signing, parsing, the emulator) runs once, on the newest line.
    local only=()
    [ "$version" = "$newest" ] || only=(-m "not airflow_independent")
    local sdk=""
    [[ " $SDK_VERSIONS " == *" $version "* ]] && sdk=1
    # The venv's pytest script, not `python -m pytest`: that puts the work tree first on sys.path,
    # and the suite would test the source tree instead of the installed wheel.
    local rc=0 parallel=() ignore=() path
    # worksteal: an idle worker takes tests queued on a busy one (the e2e tests take 10-60 s each)
    [ "$WORKERS" -gt 0 ] && parallel=(-n "$WORKERS" --dist worksteal)
    for path in "${SERIAL_TESTS[@]}"; do ignore+=(--ignore="$path"); done
    suite() {
        AIRFLOW_HOME="$home" AIRFLOW__CORE__LOAD_EXAMPLES=False METASTUDIO_FULLSTACK=$fullstack \
            METASTUDIO_EXPECT_INSTALLED=1 METASTUDIO_EXPECT_OPENLINEAGE=$openlineage \
            METASTUDIO_EXPECT_SDK=$sdk "$venv/bin/pytest" -p no:cacheprovider --durations=10 "${only[@]}" "$@"
    }
    if [ ${#PYTEST_ARGS[@]} -gt 0 ]; then
        suite "${PYTEST_ARGS[@]}" || rc=$?
    else
        suite "${parallel[@]}" "${ignore[@]}" || rc=$?
        if [ "$fullstack" = 1 ]; then
            echo "==> Airflow $version: the serial tests (${SERIAL_TESTS[*]})"
            suite "${SERIAL_TESTS[@]}" || rc=$?
        fi
    fi
    rm -rf "$home"
    return $rc
}

run_lane() {  # the given versions one after the other; each leaves its output and exit code
    local version rc
    for version in "$@"; do
        echo "==> Airflow $version: pytest" >&2
        rc=0
        run_suite "$version" >"$logs/$version.log" 2>&1 || rc=$?
        echo "$rc" >"$logs/$version.rc"
    done
}

run_deployment() {
    [ "$DEPLOYMENT" = 1 ] || return 0
    echo "==> Airflow $newest: deployment test" >&2
    local rc=0
    AIRFLOW_VERSION=$newest DEPLOYMENT_VENV_READY=1 scripts/run-deployment.sh >"$logs/deployment.log" 2>&1 || rc=$?
    echo "$rc" >"$logs/deployment.rc"
}

PYTEST_ARGS=("$@")
others=${AIRFLOW_VERSIONS%"$newest"}
if [ "$PARALLEL" = 1 ] && [ -n "${others// /}" ]; then
    run_lane "$newest" &
    lane=$!
    # shellcheck disable=SC2086  # a list of versions
    run_lane $others
    run_deployment
    wait "$lane" || true
else
    # shellcheck disable=SC2086
    run_lane $AIRFLOW_VERSIONS
    run_deployment
fi
for version in $AIRFLOW_VERSIONS; do
    rc=$(cat "$logs/$version.rc" 2>/dev/null || echo 1)
    echo "==> Airflow $version: pytest output (exit $rc)" >&2
    cat "$logs/$version.log"
    [ "$rc" = 0 ] || failed+=("pytest on Airflow $version")
done
if [ "$DEPLOYMENT" = 1 ]; then
    rc=$(cat "$logs/deployment.rc" 2>/dev/null || echo 1)
    echo "==> Airflow $newest: deployment test output (exit $rc)" >&2
    cat "$logs/deployment.log" 2>/dev/null || true
    [ "$rc" = 0 ] || failed+=("deployment test on Airflow $newest")
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
