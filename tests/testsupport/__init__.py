"""What several test suites share: paths and test data. On ``sys.path`` through pytest's
``pythonpath`` setting (pyproject.toml), so a suite imports it as ``testsupport``."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
DATA = TESTS / "data"
E2E_DAGS = TESTS / "e2e" / "dags"
EXAMPLE_DAGS = REPO / "example_dags"
BENCHMARKS = REPO / "benchmarks"
