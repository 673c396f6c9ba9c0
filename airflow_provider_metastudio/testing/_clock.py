"""The emulator's two clocks and its time formats.

:class:`EmulatorClock` is the emulated (possibly scaled, ``advance()``-able) time that moves jobs,
quota windows, tokens and pre-signed URLs; :class:`AuthClock` is the gateway's wall clock for
``X-Sdk-Date`` checks.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timezone

# The clocks have a datetime() method; annotations inside them use this alias.
DateTime = datetime


def _epoch(value: datetime | float | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value)


def rfc3339(seconds: float | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds), as the service writes job times."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(math.floor(seconds), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(seconds: float) -> str:
    """IAM's form: ``2026-11-26T22:00:00.000000Z``."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(value: str) -> float:
    """Parse an RFC 3339 date-time (``Z`` or offset, optional fraction) to unix seconds."""
    text = value.strip()
    if len(text) < 20 or text[10] not in "Tt":
        raise ValueError(value)
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(value)
    return parsed.timestamp()


class EmulatorClock:
    """Emulated time: starts at real now (or ``start``) and runs ``time_scale`` times faster.

    Job lifecycles, quota windows, ``Retry-After``, cover URL expiry and token expiry all use it.

    :param time_scale: emulated seconds per real second.
    :param start: emulated time at creation (datetime or unix seconds).
    """

    def __init__(self, time_scale: float = 1.0, start: DateTime | float | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = float(time_scale)
        self._lock = threading.Lock()
        self._real0 = time.monotonic()
        self._start = _epoch(start, time.time())
        self._offset = 0.0

    def now(self) -> float:
        """Emulated unix seconds."""
        with self._lock:
            return self._start + (time.monotonic() - self._real0) * self.time_scale + self._offset

    def datetime(self) -> DateTime:
        """Emulated now as an aware UTC datetime."""
        return DateTime.fromtimestamp(self.now(), timezone.utc)

    def advance(self, seconds: float) -> float:
        """Jump forward by ``seconds`` of emulated time; return the new emulated now.

        :param seconds: how far to jump (must not be negative: jobs never go back in time).
        """
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += float(seconds)
        return self.now()

    def to_real(self, emulated_seconds: float) -> float:
        """How many real seconds ``emulated_seconds`` last."""
        return emulated_seconds / self.time_scale


class AuthClock:
    """The gateway's clock for ``X-Sdk-Date`` checks: real wall time plus an offset, or fixed.

    It is not the scaled job clock: a client signs with its real clock, so a time-scaled
    emulator would otherwise reject every signature.
    """

    def __init__(self, start: DateTime | float | None = None) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._fixed: float | None = None
        if start is not None:
            self.set(start)

    def now(self) -> float:
        with self._lock:
            return self._fixed if self._fixed is not None else time.time() + self._offset

    def datetime(self) -> DateTime:
        return DateTime.fromtimestamp(self.now(), timezone.utc)

    def set(self, when: DateTime | float, *, frozen: bool = False) -> None:
        """Make the auth clock read ``when`` now; it keeps ticking unless ``frozen``.

        :param when: the time to show (aware datetime or unix seconds).
        :param frozen: stop the clock at ``when``.
        """
        target = _epoch(when, time.time())
        with self._lock:
            if frozen:
                self._fixed = target
            else:
                self._fixed = None
                self._offset = target - time.time()

    def shift(self, seconds: float) -> None:
        """Move the auth clock by ``seconds`` (either direction)."""
        with self._lock:
            if self._fixed is not None:
                self._fixed += seconds
            else:
                self._offset += seconds

    def reset(self) -> None:
        """Back to real wall time."""
        with self._lock:
            self._fixed = None
            self._offset = 0.0

    @property
    def offset(self) -> float:
        with self._lock:
            return (self._fixed - time.time()) if self._fixed is not None else self._offset


def format_retry_after(wait_emulated: float, time_scale: float) -> str:
    """``Retry-After`` in REAL seconds: an integer (ceil, at least 1) at scale 1, a decimal string
    such as ``"0.017"`` when time is scaled (a whole second would be far too long to wait)."""
    real = max(wait_emulated, 0.0) / time_scale
    if time_scale == 1.0:
        return str(max(1, math.ceil(real)))
    return f"{max(real, 0.001):.3f}"
