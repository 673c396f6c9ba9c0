"""Test session set-up: a throw-away AIRFLOW_HOME with SQLite, and helpers to run DAGs for real."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports Airflow: never touch a developer's real AIRFLOW_HOME.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="metastudio-tests-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).parent / "e2e" / "dags")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
