"""An asyncio event loop on a virtual clock, for logic that waits in minutes (backoffs, patience,
polling intervals) tested in milliseconds.

Time moves only when every task waits: the loop then jumps its clock to the next timer instead of
sleeping. Everything scheduled through the loop (``asyncio.sleep``, ``wait_for`` timeouts,
``call_later``) and everything that reads ``loop.time()`` sees the same virtual seconds, so a
scenario of "an outage of 5 minutes" runs its real schedule, deterministically.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self, clock: list[float]) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout is None:  # I/O to handle, or only I/O to wait for (a thread's wake-up)
            return ready or super().select(timeout)
        self._clock[0] += max(timeout, 0.0)  # nothing runnable until the next timer: go there
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._clock = [0.0]
        super().__init__(_JumpingSelector(self._clock))

    def time(self) -> float:
        return self._clock[0]


def on_virtual_clock(test: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an ``async def`` test on a fresh :class:`VirtualTimeLoop` (fixtures still apply)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> T:
        loop = VirtualTimeLoop()
        try:
            return loop.run_until_complete(test(*args, **kwargs))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    return run
