"""The provider's metrics, sent through Airflow's ``Stats`` so StatsD, Datadog and OpenTelemetry
all receive them as configured in ``[metrics]`` (``docs/metrics.md`` lists every metric).

Each metric is named ``metastudio.<name>`` followed by its dimensions' values in a fixed order
(``metastudio.api.calls.show.200``), because plain StatsD drops tags; the same dimensions also go
as tags, for backends that keep them. Metrics never raise: a broken metrics backend must not fail
a call, a wait or a task.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "metastudio"
# Airflow's stat-name check allows these only; anything else in a dimension becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# Airflow 3.3 keeps two copies of its stats module: the triggerer, scheduler and api-server
# initialise the core copy, the task runner the task SDK's. Calls must go to whichever this process
# initialised, or they vanish into the other copy's no-op backend.
_SHARED_STATS = (
    "airflow.sdk._shared.observability.metrics.stats",
    "airflow._shared.observability.metrics.stats",
)


def _stats() -> Any:
    for name in _SHARED_STATS:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "_factory", None) is not None:
            return module
    try:  # Airflow 3.3: import the task SDK's copy (not yet initialised: a no-op until it is)
        from airflow.sdk.observability import stats

        return stats
    except ImportError:  # Airflow 2.11 to 3.2: one Stats, configured from [metrics] on first use
        from airflow.stats import Stats

        return Stats


def stat_name(name: str, dims: dict[str, Any]) -> str:
    """``metastudio.<name>.<dim value>...`` with each value made safe for a stat name."""
    parts = [PREFIX, name, *(_UNSAFE.sub("_", str(v)) or "_" for v in dims.values())]
    return ".".join(parts)


def _emit(kind: str, name: str, value: Any, dims: dict[str, Any]) -> None:
    try:
        tags = {k: str(v) for k, v in dims.items()}
        getattr(_stats(), kind)(stat_name(name, dims), value, tags=tags)
    except Exception:  # metrics must never break what they measure
        log.debug("Could not emit metric %s", name, exc_info=True)


def incr(name: str, count: int = 1, **dims: Any) -> None:
    """Add ``count`` to the counter ``name`` (dimensions in the order given)."""
    _emit("incr", name, count, dims)


def gauge(name: str, value: float, **dims: Any) -> None:
    """Set the gauge ``name`` to ``value``."""
    _emit("gauge", name, value, dims)


def timing(name: str, seconds: float, **dims: Any) -> None:
    """Record a duration (sent as a timer, in milliseconds on StatsD)."""
    _emit("timing", name, timedelta(seconds=max(seconds, 0.0)), dims)
