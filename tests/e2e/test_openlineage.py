"""End to end (issue #14, item 5): Airflow's own OpenLineage listener, with a file transport, reports
what the operators' ``get_openlineage_facets_on_complete`` say while ``dag.test()`` runs a DAG.

The run is a child process: the OpenLineage provider reads its configuration and registers its
listener (a plugin) once per process, and this suite's process has neither configured.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testsupport import E2E_DAGS, TESTS

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("airflow.providers.openlineage") is None
        and not os.environ.get("METASTUDIO_EXPECT_OPENLINEAGE"),
        reason="apache-airflow-providers-openlineage is not installed (pip install '.[openlineage]')",
    ),
    pytest.mark.metastudio_emulator(waiting_seconds=1, processing_seconds=2, asset_active_delay=2, seed=5),
]

# Runs one DAG of dags/metastudio_asset_dags.py like the run_asset_dag fixture, prints its run id.
RUN_DAG = """
import importlib.util, json, sys

def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module

conftest, dags, dag_id, conf = sys.argv[1:]
dag = load("metastudio_asset_dags", dags).DAGS[dag_id]
load("e2e_conftest", conftest).register_dag_assets(dag)
dr = dag.test(run_conf=json.loads(conf))
print("RESULT " + json.dumps({"run_id": dr.run_id, "state": str(getattr(dr.state, "value", dr.state))}))
"""


def _pairs(datasets: list[dict]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def test_listener_reports_the_photo_the_model_asset_and_the_files(
    airflow_db, read_xcoms, metastudio_emulator, metastudio_connection, tmp_path
):
    log_file = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(log_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "metastudio-e2e",
        # The e2e conftest it loads imports testsupport (tests/, on pytest's path, not the child's).
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    dest = tmp_path / "models"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN_DAG,
            str(TESTS / "e2e" / "conftest.py"),
            str(E2E_DAGS / "metastudio_asset_dags.py"),
            "e2e_asset_poke",
            json.dumps({"name": "lineage", "dest": str(dest)}),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(results[-1].split(" ", 1)[1])
    assert run["state"] == "success"
    xcoms = read_xcoms("e2e_asset_poke", run["run_id"])
    asset_id = xcoms[("create", "model_asset_id")]
    model = (f"metastudio://{metastudio_emulator.project_id}", f"assets/{asset_id}")

    events = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    complete = {
        e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE" and "." in e["job"]["name"]
    }
    create = complete["e2e_asset_poke.create"]
    assert _pairs(create["inputs"]) == [("https://photos.example.com", "face.png")]
    assert _pairs(create["outputs"]) == [model]
    download = complete["e2e_asset_poke.download"]
    assert _pairs(download["inputs"]) == [model]
    written = [*xcoms[("download", "paths")], xcoms[("download", "manifest_path")]]
    assert _pairs(download["outputs"]) == [("file", p) for p in written]
    # The events carry no download URL nor signature (bearer credentials).
    assert "Signature=" not in log_file.read_text()
    assert Path(written[0]).is_file()
