"""The ``deployment`` fixture: one production-shaped Airflow stack for the whole session.

Runs only under ``scripts/run-deployment.sh`` (or ``METASTUDIO_DEPLOYMENT=1``): tests/conftest.py
keeps this folder out of the normal suites.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from deployment.services import MissingService
from deployment.stack import Deployment

from airflow_provider_metastudio.testing import EmulatorConfig, MetaStudioEmulator

# Emulated time runs twice as fast as real time: a job ends about 22 s after its create (4 s
# waiting, 40 s processing, emulated), well after its task has deferred, and the documented
# per-second quotas allow twice as many calls per real second, which keeps the lane short.
EMULATOR_CONFIG = EmulatorConfig(time_scale=2.0, waiting_seconds=4.0, processing_seconds=40.0)


def _interrupt(signum, frame):  # signal handler signature
    raise KeyboardInterrupt  # pytest then tears the stack down, as on Ctrl-C


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """PostgreSQL, Redis, the emulator and eight Airflow processes; all stopped at the end."""
    chosen = os.environ.get("METASTUDIO_DEPLOYMENT_OUTPUT")
    output = Path(chosen) if chosen else tmp_path_factory.mktemp("deployment")
    output.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    with MetaStudioEmulator(EMULATOR_CONFIG) as emulator:
        try:
            stack = Deployment(emulator, output)
        except MissingService as missing:
            # In CI a missing service is a failure: the lane must never pass by skipping.
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(str(missing), pytrace=False)
            pytest.skip(str(missing))
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()
            print(f"\ndeployment test output (component logs, AIRFLOW_HOME): {output}")
