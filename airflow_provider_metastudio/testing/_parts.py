"""What the server and the admin routes need of an emulator: its components, as a protocol.

``_server`` and ``_admin`` type against :class:`EmulatorParts` instead of importing
``emulator.MetaStudioEmulator``, which imports them: the modules form a tree, not a circle.
"""

from __future__ import annotations

from typing import Protocol

from airflow_provider_metastudio.testing._assets import Assets
from airflow_provider_metastudio.testing._clock import AuthClock, EmulatorClock
from airflow_provider_metastudio.testing._config import EmulatorConfig
from airflow_provider_metastudio.testing._faults import Faults
from airflow_provider_metastudio.testing._gateway import Gateway
from airflow_provider_metastudio.testing._iam import Iam
from airflow_provider_metastudio.testing._jobs import Jobs
from airflow_provider_metastudio.testing._quotas import Quotas
from airflow_provider_metastudio.testing._recorder import Recorder


class EmulatorParts(Protocol):
    """The components of a running emulator (``MetaStudioEmulator`` is one)."""

    config: EmulatorConfig
    recorder: Recorder
    iam: Iam
    gateway: Gateway
    quotas: Quotas
    faults: Faults
    jobs: Jobs
    assets: Assets

    @property
    def base_url(self) -> str: ...

    @property
    def clock(self) -> EmulatorClock: ...

    @property
    def auth_clock(self) -> AuthClock: ...

    def reset(self) -> None: ...
