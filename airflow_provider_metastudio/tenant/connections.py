"""The connection-lookup cache and the tenant key: which triggers share one tenant client.

A connection lookup costs about a millisecond of the event loop's CPU (secrets backends, Fernet);
10,000 triggers starting at once (a triggerer restart) would stall the loop for seconds. Triggers of
one connection in one loop share a lookup for :data:`CONFIG_TTL`, so a changed connection is still
seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref

from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.tenant._core import POLLER_RETRY_LIMIT, POLLER_THROTTLE_RETRY_LIMIT, now

CONFIG_TTL = 30.0
_HOOKS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Task[MetaStudioHook]]]
] = weakref.WeakKeyDictionary()


def _digest(*values: str | None) -> str:
    # Secrets take part in the key only as a digest: the key may appear in a debugger or a repr.
    return hashlib.sha256("\0".join(v or "" for v in values).encode()).hexdigest()[:16]


def tenant_key(config: MetaStudioConnectionConfig) -> tuple[str, ...]:
    """Everything that changes what a call sends: two configs with the same key share a poller."""
    return (
        config.endpoint,
        config.project_id,
        config.auth_type,
        config.ak or config.user or "",
        config.app_user_id or "",
        _digest(config.sk, config.token, config.password, config.security_token, config.domain),
        _digest(config.iam_endpoint, str(config.verify), repr(config.timeout), repr(config.rate_limits)),
    )


async def _lookup_hook(conn_id: str) -> MetaStudioHook:
    """A hook for a poller, its connection looked up (and its secrets masked) without blocking."""
    hook = MetaStudioHook(
        conn_id,
        retry_limit=POLLER_RETRY_LIMIT,
        throttle_retry_limit=POLLER_THROTTLE_RETRY_LIMIT,
        retry_log_level=logging.DEBUG,
    )
    await hook.aget_config()
    return hook


async def lookup(conn_id: str) -> MetaStudioHook:
    """The poller hook of ``conn_id``, looked up once per :data:`CONFIG_TTL` in this loop. Its config
    says which tenant poller the connection's triggers join; the poller that starts keeps it."""
    loop = asyncio.get_running_loop()
    hooks = _HOOKS.setdefault(loop, {})
    entry = hooks.get(conn_id)
    if entry is None or now() - entry[0] >= CONFIG_TTL:
        # A task, so triggers starting together wait for one lookup instead of each making its own.
        entry = hooks[conn_id] = (now(), loop.create_task(_lookup_hook(conn_id)))
    try:
        return await asyncio.shield(entry[1])
    except Exception:
        if hooks.get(conn_id) is entry:  # a failed lookup is not kept: the next trigger retries
            del hooks[conn_id]
        raise


def forget(conn_id: str) -> None:
    """Drop the cached lookup of ``conn_id`` in this loop: the next :func:`lookup` reads it again."""
    _HOOKS.get(asyncio.get_running_loop(), {}).pop(conn_id, None)
