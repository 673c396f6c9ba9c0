"""The provider is installed the way users install it, and Airflow discovers it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from testsupport import REPO

from airflow_provider_metastudio import __version__
from airflow_provider_metastudio.get_provider_info import get_provider_info


def test_airflow_providers_list_shows_the_provider():
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    # Some Airflow versions print log lines before the JSON document: start at the JSON array.
    start = re.search(r"^\[\s*(\{|\])", out, re.MULTILINE)
    assert start, out[-2000:]
    providers = {p["package_name"]: p for p in json.JSONDecoder().raw_decode(out[start.start() :])[0]}
    assert providers["airflow-provider-metastudio"]["version"] == __version__


def test_providers_manager_registers_hook_connection_and_link():
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    try:  # newer Airflow 3 releases deprecate ProvidersManager.hooks for the task SDK's registry
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        hooks = ProvidersManagerTaskRuntime().hooks
    except ImportError:
        hooks = pm.hooks
    hook = hooks["metastudio"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_metastudio.hooks.metastudio.MetaStudioHook"
    assert hook.connection_type == "metastudio"
    assert (
        "airflow_provider_metastudio.links.picture_modeling.MetaStudioPictureModelingJobLink"
        in pm.extra_links_class_names
    )


def test_importing_the_hook_trigger_and_sensor_does_not_import_requests(tmp_path):
    # requests (with urllib3 and charset_normalizer) is most of the provider's import cost; the
    # triggerer and DAG parsing never use the sync transport, so it is imported on first sync call.
    code = (
        "import sys, json, airflow\n"
        "before = 'requests' in sys.modules\n"
        "import airflow_provider_metastudio.hooks.metastudio\n"
        "import airflow_provider_metastudio.triggers.picture_modeling\n"
        "import airflow_provider_metastudio.sensors.picture_modeling\n"
        "import airflow_provider_metastudio.operators.picture_modeling\n"
        "print(json.dumps([before, 'requests' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300, cwd=tmp_path
    ).stdout
    before, after = json.loads(out.strip().splitlines()[-1])
    if before:
        pytest.skip("this Airflow imports requests itself: nothing for the provider to save")
    assert after is False


@pytest.mark.skipif(
    not os.environ.get("METASTUDIO_EXPECT_INSTALLED"), reason="only under scripts/run-tests.sh"
)
def test_the_suite_runs_against_the_installed_wheel():
    import airflow_provider_metastudio

    assert "site-packages" in Path(airflow_provider_metastudio.__file__).parts


def test_provider_info_matches_airflows_schema_and_names_the_guides():
    import airflow
    import jsonschema

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    (integration,) = info["integrations"]
    assert integration["tags"] == ["service"]
    assert integration["external-doc-url"].startswith("https://")
    names = {integration["integration-name"]}
    for kind in ("hooks", "triggers", "sensors", "operators"):
        assert {entry["integration-name"] for entry in info[kind]} == names, kind
    for guide in integration["how-to-guide"]:
        assert guide.startswith("/docs/")
        assert (REPO / guide.lstrip("/")).is_file(), guide


def test_changelog_describes_the_current_version():
    changelog = (REPO / "docs" / "changelog.md").read_text()
    assert re.search(rf"^## {re.escape(__version__)}\b", changelog, re.MULTILINE), changelog[:500]


def test_the_project_declares_no_pytest11_entry_point():
    # A pytest11 entry point would load the emulator plugin into every pytest run of any image with
    # the provider installed; the plugin is opt-in through pytest_plugins instead.
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = set(project.get("entry-points", {}))
    assert "apache_airflow_provider" in groups
    assert "pytest11" not in groups


@pytest.mark.skipif(
    not os.environ.get("METASTUDIO_EXPECT_INSTALLED"), reason="only under scripts/run-tests.sh"
)
def test_the_installed_distribution_declares_no_pytest11_entry_point():
    from importlib.metadata import distribution

    entry_points = distribution("airflow-provider-metastudio").entry_points
    groups = {ep.group for ep in entry_points}
    assert "apache_airflow_provider" in groups  # the metadata was really read
    assert "pytest11" not in groups
