#!/usr/bin/env bash
# Run lint, typing and the whole test suite on every supported Airflow line, each in its own
# virtual environment with the provider installed as users install it.
#   AIRFLOW_VERSIONS="3.3.2" scripts/run-tests.sh      # one version only
#   scripts/run-tests.sh -k emulator                   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
AIRFLOW_VERSIONS=${AIRFLOW_VERSIONS:-"2.11.2 3.0.6 3.3.2"}
LINT_VENV=""
failed=()
newest=${AIRFLOW_VERSIONS##* }
for version in $AIRFLOW_VERSIONS; do
    venv=".venv-tests/airflow-$version"
    echo "==> Airflow $version: preparing $venv" >&2
    ensure_venv "$venv" "$version"
    LINT_VENV=$venv
    echo "==> Airflow $version: pytest" >&2
    # Each version gets its own AIRFLOW_HOME (SQLite) so runs never share state.
    home=$(mktemp -d)
    # The full-stack run (scheduler, triggerer, dag-processor, api-server) is the slowest test:
    # it runs once, on the newest Airflow; dag.test() covers the deferrable path on every version.
    fullstack=0
    [ "$version" = "$newest" ] && fullstack=1
    # The venv's pytest script, not `python -m pytest`: that puts the work tree first on sys.path,
    # and the suite would test the source tree instead of the installed wheel.
    if ! AIRFLOW_HOME="$home" AIRFLOW__CORE__LOAD_EXAMPLES=False METASTUDIO_FULLSTACK=$fullstack \
        METASTUDIO_EXPECT_INSTALLED=1 "$venv/bin/pytest" -p no:cacheprovider --durations=10 "$@"; then
        failed+=("pytest on Airflow $version")
    fi
    rm -rf "$home"
done
echo "==> lint and typing ($LINT_VENV)" >&2
"$LINT_VENV/bin/ruff" check airflow_provider_metastudio tests example_dags benchmarks scripts || failed+=("ruff check")
"$LINT_VENV/bin/ruff" format --check airflow_provider_metastudio tests example_dags benchmarks scripts || failed+=("ruff format")
"$LINT_VENV/bin/mypy" airflow_provider_metastudio || failed+=("mypy")
if [ ${#failed[@]} -gt 0 ]; then
    printf '==> FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "==> all checks passed on Airflow: $AIRFLOW_VERSIONS" >&2
