"""Host-wide quota: the processes of one machine share a tenant's quota through a small file.

Each worker process has its own :class:`~airflow_provider_metastudio.ratelimit.RateLimiter`, so 32
worker processes creating at once would each send at the full quota and draw a storm of 429s. Here
they take turns instead: a file per tenant (in a per-user temporary directory, named by a hash of
endpoint and project: the quota is the project's, whoever calls) holds the next free slot time of
each call. A call takes the next slot (``max(now, next)``, then ``next = slot + 1/rate``) under
``fcntl.flock`` and sleeps until it outside the lock: first come first served, with no polling.
The lock is held only to read and write a few bytes, never while sleeping or during HTTP.

It degrades safely: when the directory cannot be created or written, the lock fails, or the
platform has no ``fcntl``, the process falls back to its own limiter with one WARNING. Slot times are
``time.time()`` seconds (shared by all processes and kept across reboots); a slot more than an
hour ahead (a clock step back) is treated as stale.

The connection's ``host_quota`` extra turns it off (``false``) or names the directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the process limiter alone
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from airflow_provider_metastudio.config import MetaStudioConnectionConfig
    from airflow_provider_metastudio.ratelimit import RateLimiter

log = logging.getLogger(__name__)

# A slot further ahead than this is not a queue but a stale file (a clock stepped back).
STALE_AHEAD = 3600.0


def default_dir() -> str:
    """The per-user directory of the host-wide reservations."""
    return os.path.join(tempfile.gettempdir(), f"airflow-metastudio-{os.getuid()}")


def parse_host_quota(value: Any) -> str | None:
    """The connection's ``host_quota`` extra: unset/true = :func:`default_dir`, false = off, else a
    directory."""
    if value is None or value is True:
        return default_dir()
    if value is False:
        return None
    text = str(value).strip()
    if text.lower() in ("true", "on", "yes", "1"):
        return default_dir()
    if text.lower() in ("false", "off", "no", "0", "none"):
        return None
    return os.path.expanduser(text)


def reservation_path(config: MetaStudioConnectionConfig) -> str | None:
    """The tenant's file, or None when the connection turns the host-wide quota off. Named by a hash
    of endpoint and project, as the process limiters are keyed: the quota is the project's, so an AK/SK
    and an IAM-password connection of one project share it (apart, they drew 429s in the same second).
    The name tells nothing about the tenant."""
    if not config.host_quota:
        return None
    key = "\0".join((config.endpoint, config.project_id))
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return os.path.join(config.host_quota, f"quota-{digest}.json")


class HostReservations:
    """The next free slot per call of one tenant, shared by the processes of a host through a file.

    :param path: the file (its directory is created, mode 0700, on first use).
    :param clock: wall-clock seconds; injectable for tests.
    """

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self.failed: str | None = None  # why the file is not used (then the process limiter is)

    def reserve(self, call: str, interval: float) -> float | None:
        """Take the next slot of ``call``; seconds to wait for it, or None if the file is unusable."""

        def take(now: float, free: float) -> tuple[float, float]:
            slot = max(now, free)
            return slot + interval, slot - now

        return self._update(call, take)

    def push(self, call: str, seconds: float, shift: float = 0.0) -> None:
        """No slot of ``call`` before ``seconds`` from now (after an answer, or a 429's Retry-After),
        and the free slots ``shift`` later (see ``RateLimiter.backoff``)."""
        self._update(call, lambda now, free: (max(free + shift, now + seconds), 0.0))

    def _update(self, call: str, change: Callable[[float, float], tuple[float, float]]) -> float | None:
        if self.failed is not None:
            return None
        try:
            return self._locked(call, change)
        except OSError as e:
            self._fail(f"{type(e).__name__}: {e.strerror or e}")
            return None

    def _locked(self, call: str, change: Callable[[float, float], tuple[float, float]]) -> float:
        if fcntl is None:  # pragma: no cover
            raise OSError("no fcntl on this platform")
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.stat(directory)
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            # Another user could edit (or pre-create) the slots and stall every create of ours.
            raise PermissionError(0, f"{directory} is not owned by this user only")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # closing the file releases it
            slots = _parse(os.pread(fd, 4096, 0))
            now = self._clock()
            free = slots.get(call, 0.0)
            if free > now + STALE_AHEAD:
                free = now
            slots[call], result = change(now, free)
            data = json.dumps(slots).encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            return result
        finally:
            os.close(fd)

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.warning(
            "MetaStudio host-wide quota file %s is not usable (%s): this process keeps to the quota "
            "on its own, and other processes on this host may draw 429s",
            self.path,
            reason,
        )


def _parse(raw: bytes) -> dict[str, float]:
    """The slots in the file; a torn or foreign content counts as empty (slots free now)."""
    try:
        value: Any = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    slots = {}
    for call, at in value.items():
        if isinstance(at, (int, float)) and at == at:  # not NaN
            slots[str(call)] = float(at)
    return slots


class HostLimiter:
    """The process limiter's interface over the host-wide file; the process limiter when it fails.

    :param process: this process's limiter of the call (also kept up to date, for the fallback).
    :param host: the tenant's reservations.
    :param call: the call's name (a key in the file).
    """

    def __init__(self, process: RateLimiter, host: HostReservations, call: str) -> None:
        self.process = process
        self.host = host
        self.call = call
        self.interval = process.interval

    def reserve(self) -> float:
        wait = self.host.reserve(self.call, self.interval)
        return self.process.reserve() if wait is None else wait

    def settle(self) -> None:
        # The gateway saw the request no later than now: the next slot is a full interval from here.
        self.process.settle()
        self.host.push(self.call, self.interval)

    def backoff(self, seconds: float) -> None:
        self.process.backoff(seconds)
        self.host.push(self.call, seconds, self.interval / 2)


_HOSTS: dict[str, HostReservations] = {}
_HOSTS_LOCK = threading.Lock()


def host_reservations(path: str) -> HostReservations:
    """The process-wide reservations of one file (so a broken file warns once per process)."""
    with _HOSTS_LOCK:
        host = _HOSTS.get(path)
        if host is None:
            host = _HOSTS[path] = HostReservations(path)
        return host
