"""Outage and authentication patience: how the tenant client's loops react to failed calls.

* A definitive answer about one job (404, or 400 to a details call, whose only variable part is the
  job id) ends only that job's watches (see :mod:`.safety_net`).
* Transient errors (5xx, gateway pages, connection errors, 429 after the hook's retries, malformed
  bodies, anything unexpected) end no wait: the loop backs off with jitter and keeps every watch.
  An outage is logged once when it starts and once when it ends, in the triggerer's log and, through
  each watch and subscription, in every waiting task's own log (or the watcher's).
* Authentication errors (401/403) end the tenant's waits only when they persist for
  :attr:`~._core.PollerState.auth_patience` (5 minutes); meanwhile the connection is looked up again
  after each refusal, so a connection fixed in Airflow is picked up without restarting anything.
"""

from __future__ import annotations

import logging

from airflow_provider_metastudio import metrics
from airflow_provider_metastudio.exceptions import MetaStudioAuthError, MetaStudioError
from airflow_provider_metastudio.tenant import connections
from airflow_provider_metastudio.tenant._core import Observation, PollerState, Trouble, log, now


class Health(PollerState):
    """Outage bookkeeping (one notice when a kind of call starts failing, one when it works again)
    and the auth patience."""

    def _outage_text(self, trouble: Trouble) -> str:
        return (
            f"MetaStudio answers no calls for project {self.project} since "
            f"{now() - trouble.since:.0f}s ago ({trouble.error}); still waiting, retrying"
        )

    def _current_outages(self) -> list[Observation]:
        """What a wait or subscription that starts now must hear: the outages under way."""
        return [
            Observation(notice=self._outage_text(trouble), level=logging.WARNING)
            for trouble in self._troubles.values()
        ]

    async def _failed(self, call: str, e: Exception) -> None:
        t = now()
        if isinstance(e, MetaStudioAuthError):
            await self._auth_failed(e, t)
        elif not isinstance(e, MetaStudioError):
            log.warning("Unexpected error in the MetaStudio poller (%s call)", call, exc_info=e)
        trouble = self._troubles.get(call)
        if trouble is not None:
            trouble.failures += 1
            trouble.error = e
            return
        self._troubles[call] = Trouble(t, e)
        text = (
            f"MetaStudio {call} calls fail for project {self.project} ({e}); "
            f"every wait is kept and retried with backoff"
        )
        log.warning("%s", text)
        self._notify_all(text, logging.WARNING)

    def _recovered(self, call: str) -> None:
        self._auth_since = None
        trouble = self._troubles.pop(call, None)
        if trouble is None:
            return
        metrics.timing("poller.outage_seconds", now() - trouble.since, call=call)
        text = (
            f"MetaStudio {call} calls work again for project {self.project} after "
            f"{now() - trouble.since:.0f}s ({trouble.failures} failed rounds of retries)"
        )
        log.info("%s", text)
        self._notify_all(text, logging.INFO)

    async def _auth_failed(self, e: MetaStudioAuthError, t: float) -> None:
        if self._auth_since is None:
            self._auth_since = t
        elif t - self._auth_since >= self.auth_patience:
            err = e.with_advice(
                f"authentication was refused for {t - self._auth_since:.0f}s "
                f"(the poller's patience is {self.auth_patience:.0f}s); fix the connection "
                f"{self.conn_id!r} and retry the task"
            )
            for job_id in list(self.watches):
                self._end(job_id, err)
            for sub in self.subscriptions:  # a watcher hears it too; its stream keeps going
                sub._notice(Observation(error=err))
            self._auth_since = None
            return
        # The connection may have been fixed meanwhile: look it up again, use it if it changed.
        connections.forget(self.conn_id)
        try:
            hook = await connections.lookup(self.conn_id)
        except Exception as lookup_error:  # a broken lookup is one more reason to keep waiting
            log.warning("Looking up connection %r again failed: %s", self.conn_id, lookup_error)
            return
        if hook.config != self.hook.config:
            log.info(
                "Connection %r changed; the poller for project %s uses it now", self.conn_id, self.project
            )
            old, self.hook = self.hook, hook
            await old.aclose()
