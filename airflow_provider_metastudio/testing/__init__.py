"""A local MetaStudio emulator for tests, demos, benchmarks and CI.

``MetaStudioEmulator`` runs a real HTTP server on loopback that plays MetaStudio's stylized
picture-modeling API, its API gateway (AK/SK signatures, tokens, quotas) and IAM. It is stdlib-only
and never imports Airflow at import time. See :mod:`airflow_provider_metastudio.testing.emulator`.

Command line: ``python -m airflow_provider_metastudio.testing --help``.
pytest: the ``metastudio_emulator`` and ``metastudio_connection`` fixtures live in
:mod:`airflow_provider_metastudio.testing.pytest_plugin`; enable them with
``pytest_plugins = ["airflow_provider_metastudio.testing.pytest_plugin"]`` in ``conftest.py``.
"""

from __future__ import annotations

from airflow_provider_metastudio.testing._clock import AuthClock, EmulatorClock, format_retry_after
from airflow_provider_metastudio.testing._config import (
    ALL_CALLS,
    DEFAULT_AK,
    DEFAULT_PROJECT_ID,
    DEFAULT_SK,
    FAULT_KINDS,
    JOB_STATES,
    SERVICE_CALLS,
    STYLE_IDS,
    TERMINAL_STATES,
    Credentials,
    EmulatorConfig,
    FaultKind,
)
from airflow_provider_metastudio.testing._media import cover_png, make_jpeg_header, make_png, make_png_header
from airflow_provider_metastudio.testing.emulator import MetaStudioEmulator

__all__ = [
    "ALL_CALLS",
    "DEFAULT_AK",
    "DEFAULT_PROJECT_ID",
    "DEFAULT_SK",
    "FAULT_KINDS",
    "JOB_STATES",
    "SERVICE_CALLS",
    "STYLE_IDS",
    "TERMINAL_STATES",
    "AuthClock",
    "Credentials",
    "EmulatorClock",
    "EmulatorConfig",
    "FaultKind",
    "MetaStudioEmulator",
    "cover_png",
    "format_retry_after",
    "make_jpeg_header",
    "make_png",
    "make_png_header",
]
