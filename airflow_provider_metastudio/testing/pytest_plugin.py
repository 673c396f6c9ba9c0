"""pytest fixtures that run a MetaStudio emulator per test.

The plugin is opt-in (installing the provider does not load it into every pytest run): enable it
in your top-level ``conftest.py``::

    pytest_plugins = ["airflow_provider_metastudio.testing.pytest_plugin"]

or on the command line with ``-p airflow_provider_metastudio.testing.pytest_plugin``. Configure a
test's emulator with the marker, whose keyword arguments go into
:class:`~airflow_provider_metastudio.testing.EmulatorConfig`::

    @pytest.mark.metastudio_emulator(time_scale=60, quotas_enabled=False)
    def test_something(metastudio_emulator, metastudio_connection): ...

Markers on a class or module apply too; the closest one wins key by key.
Importing this module is cheap: the emulator is imported when a fixture is first used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_metastudio.testing.emulator import MetaStudioEmulator

MARKER = "metastudio_emulator"
CONN_ENV = "AIRFLOW_CONN_METASTUDIO_DEFAULT"
CONN_ID = "metastudio_default"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): configure the metastudio_emulator fixture; kwargs go into EmulatorConfig",
    )


def _marker_kwargs(node: pytest.Item) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    # iter_markers yields the closest marker first: apply from the farthest so closer ones win.
    for marker in reversed(list(node.iter_markers(MARKER))):
        if marker.args:
            raise pytest.UsageError(f"@pytest.mark.{MARKER} takes keyword arguments only")
        kwargs.update(marker.kwargs)
    return kwargs


@pytest.fixture
def metastudio_emulator(request: pytest.FixtureRequest) -> Iterator[MetaStudioEmulator]:
    """A fresh emulator on a free loopback port for this test, stopped afterwards."""
    from airflow_provider_metastudio.testing import EmulatorConfig, MetaStudioEmulator

    config = EmulatorConfig(**_marker_kwargs(request.node))
    with MetaStudioEmulator(config) as emulator:
        yield emulator


@pytest.fixture
def metastudio_connection(
    metastudio_emulator: MetaStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Point ``metastudio_default`` (``AIRFLOW_CONN_METASTUDIO_DEFAULT``, JSON form, AK/SK) at the
    emulator; yields the connection id."""
    monkeypatch.setenv(CONN_ENV, metastudio_emulator.connection_json())
    yield CONN_ID
