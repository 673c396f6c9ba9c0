"""The emulated gateway's request quotas: per tenant and for all tenants, by call (GCRA on the
emulated clock)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_metastudio.testing._config import DEFAULT_GLOBAL_RATES, DEFAULT_RATES
from airflow_provider_metastudio.testing._replies import Reply, error_reply

if TYPE_CHECKING:
    from airflow_provider_metastudio.testing._shared import Shared


class Quotas:
    """Rates in requests per second by call; a request over a rate gets 429 with ``Retry-After``."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        config = shared.config
        self.enabled = config.quotas_enabled
        # Given rates are merged over the documented defaults; 0 (or None) lifts a call's limit.
        self.rates: dict[str, float] = {
            k: float(v) for k, v in {**DEFAULT_RATES, **config.rates}.items() if v
        }
        self.global_rates: dict[str, float] = {
            k: float(v) for k, v in {**DEFAULT_GLOBAL_RATES, **config.global_rates}.items() if v
        }
        self.burst = config.burst
        self.tolerance = config.quota_tolerance
        self._tat: dict[tuple[str, str], float] = {}

    def throttle(self, call: str, tenant: str) -> Reply | None:
        """Apply the per-tenant and all-tenants rates (GCRA, emulated clock); 429 when over."""
        if not self.enabled:
            return None
        with self._shared.lock:
            now = self._shared.now()
            checks: list[tuple[tuple[str, str], float, str]] = []
            rate = self.rates.get(call)
            if rate:
                checks.append(((tenant, call), rate, "user"))
            global_rate = self.global_rates.get(call)
            if global_rate:
                checks.append((("*", call), global_rate, "api"))
            waits: list[tuple[float, float, str]] = []
            updates: list[tuple[tuple[str, str], float]] = []
            for key, limit, scope in checks:
                interval = 1.0 / limit
                tolerance = (self.burst - 1.0) * interval + self.tolerance
                tat = self._tat.get(key, now)
                if tat - tolerance > now:
                    waits.append((tat - tolerance - now, limit, scope))
                else:
                    updates.append((key, max(tat, now) + interval))
            if not waits:
                for key, tat in updates:
                    self._tat[key] = tat
                return None
            wait, limit, scope = max(waits)
        return error_reply(
            429,
            "APIGW.0308",
            f"The throttling threshold has been reached: policy {scope} over ratelimit, "
            f"limit:{limit:g}, time:1 second",
            {"Retry-After": self._shared.retry_after(wait)},
        )

    def set(
        self,
        *,
        enabled: bool | None = None,
        rates: Mapping[str, float] | None = None,
        global_rates: Mapping[str, float] | None = None,
        burst: float | None = None,
        tolerance: float | None = None,
    ) -> dict[str, Any]:
        """Change quotas at run time (the request history is cleared).

        :param enabled: switch quotas on or off.
        :param rates: per-tenant requests/second by call (merged; 0 or None removes a call's limit).
        :param global_rates: all-tenants requests/second by call (merged likewise).
        :param burst: back-to-back requests allowed per tenant and call.
        :param tolerance: how early (emulated seconds) a request may arrive and still pass.
        :return: the settings now in force.
        """
        with self._shared.lock:
            if enabled is not None:
                self.enabled = bool(enabled)
            for target, given in ((self.rates, rates), (self.global_rates, global_rates)):
                for call, value in (given or {}).items():
                    if value is None or float(value) <= 0:
                        target.pop(call, None)
                    else:
                        target[call] = float(value)
            if burst is not None:
                if burst < 1:
                    raise ValueError("burst must be at least 1")
                self.burst = float(burst)
            if tolerance is not None:
                self.tolerance = max(0.0, float(tolerance))
            self._tat.clear()
            return self.settings()

    def settings(self) -> dict[str, Any]:
        """The quota settings in force (the admin interface's ``GET /_emulator/quotas``)."""
        with self._shared.lock:
            return {
                "enabled": self.enabled,
                "rates": dict(self.rates),
                "global_rates": dict(self.global_rates),
                "burst": self.burst,
                "tolerance": self.tolerance,
            }

    def reset(self) -> None:
        """Forget the request history (settings are kept)."""
        with self._shared.lock:
            self._tat.clear()
