# Sourced by the README's commands: create (or refresh) a virtual environment with one Airflow
# version and this provider installed the way users install it (a wheel, not the source tree).
# Needs only python3 and access to the package index; uv (from PyPI) makes the installs fast.

ensure_venv() {  # ensure_venv DIR AIRFLOW_VERSION [EXTRAS], EXTRAS of this project, default test,lint
    local dir=$1 airflow_version=$2 extras=${3:-test,lint}
    local py=${PYTHON:-python3}
    if [ ! -x "$dir/bin/python" ]; then
        "$py" -m venv "$dir"
    fi
    if [ ! -x "$dir/bin/uv" ]; then
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "uv>=0.4"
    fi
    local constraints=()
    local pinned=".ci/constraints/airflow-${airflow_version}.txt"
    if [ -f "$pinned" ]; then
        constraints=(--constraint "$pinned")
    fi
    "$dir/bin/uv" pip install --quiet --python "$dir/bin/python" "${constraints[@]}" \
        "apache-airflow==${airflow_version}" ".[${extras}]"
    # Always reinstall the provider itself so the venv tests the working tree's code.
    "$dir/bin/uv" pip install --quiet --python "$dir/bin/python" --no-deps --reinstall-package \
        airflow-provider-metastudio .
}
