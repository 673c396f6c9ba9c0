"""The provider is installed the way users install it, and Airflow discovers it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from airflow_provider_metastudio import __version__


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
    hook = pm.hooks["metastudio"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_metastudio.hooks.metastudio.MetaStudioHook"
    assert hook.connection_type == "metastudio"
    assert (
        "airflow_provider_metastudio.links.picture_modeling.MetaStudioPictureModelingJobLink"
        in pm.extra_links_class_names
    )
