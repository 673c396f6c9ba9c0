"""``[core] hostname_callable`` of the deployment test's stack: each component reports its name
(``worker-1``, ``triggerer-2``, ...) so task instances and jobs say which process holds them."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("METASTUDIO_COMPONENT") or socket.getfqdn()
