"""The tenant's one client per event loop: every call a triggerer makes to one MetaStudio tenant.

All picture-modeling waits of a tenant in one event loop share one :class:`TenantPoller` (quota-aware,
see :mod:`.poller`). Its rooms:

* :mod:`.registry` - one client per (loop, tenant), reference counted: :func:`acquire`,
  :func:`release`, :func:`watch_job` (a wait for one job) and :func:`finished_jobs` (a subscription
  to the tenant's finished-job stream, for event watchers; its contract is in :mod:`.stream`).
* :mod:`.connections` - the connection-lookup cache and :func:`tenant_key`.
* :mod:`.health` - outage and authentication patience.
* :mod:`.stream` - the list loop: the finished-job stream and the running-list confirmations.
* :mod:`.safety_net` - the details loop, for what lists miss.
"""

from __future__ import annotations

from airflow_provider_metastudio.tenant._core import (
    END_TIME_MARGIN,
    MAX_SCAN_PAGES,
    RUNNING,
    TERMINAL,
    Observation,
    Watch,
)
from airflow_provider_metastudio.tenant.connections import tenant_key
from airflow_provider_metastudio.tenant.poller import TenantPoller
from airflow_provider_metastudio.tenant.registry import acquire, finished_jobs, release, watch_job
from airflow_provider_metastudio.tenant.stream import Subscription

__all__ = [
    "END_TIME_MARGIN",
    "RUNNING",
    "TERMINAL",
    "MAX_SCAN_PAGES",
    "Observation",
    "Subscription",
    "TenantPoller",
    "Watch",
    "acquire",
    "finished_jobs",
    "release",
    "tenant_key",
    "watch_job",
]
