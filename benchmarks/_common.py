"""Shared helpers of the benchmarks: the emulator in its own process, its admin API, statistics,
markdown tables and charts. Standard library only at import time (matplotlib is imported lazily)."""

from __future__ import annotations

import http.client
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"


# -- the emulator, in a separate process -------------------------------------------------------------


class EmulatorProcess:
    """``python -m airflow_provider_metastudio.testing`` in a child process (so its CPU and memory are
    not the client's), stopped with SIGTERM on exit.

    :param time_scale: emulated seconds per real second.
    :param quotas: enforce the documented per-tenant quotas (in emulated time).
    :param seed: the emulator's seed.
    """

    def __init__(self, *, time_scale: float = 1.0, quotas: bool = True, seed: int = 0) -> None:
        self.args = [
            sys.executable,
            "-m",
            "airflow_provider_metastudio.testing",
            "--port",
            "0",
            "--time-scale",
            repr(float(time_scale)),
            "--seed",
            str(seed),
        ]
        if not quotas:
            self.args.append("--no-quotas")
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.connection: dict[str, Any] = {}

    def __enter__(self) -> EmulatorProcess:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(BENCH_DIR)
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        line = self.proc.stdout.readline().strip()
        prefix = "AIRFLOW_CONN_METASTUDIO_DEFAULT="
        if not self.url.startswith("http") or not line.startswith(prefix):
            self.__exit__()
            raise RuntimeError(f"the emulator did not start (got {self.url!r})")
        self.connection = json.loads(line[len(prefix) :])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def connection_json(self, **extra: Any) -> str:
        """The Airflow connection (JSON form) with ``extra`` merged into its extras."""
        conn = json.loads(json.dumps(self.connection))
        conn["extra"].update(extra)
        return json.dumps(conn)


class Admin:
    """A keep-alive client of the emulator's ``/_emulator/`` admin API (no auth, loopback only)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body else {}
        for attempt in range(3):
            try:
                self.conn.request(method, "/_emulator" + path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt == 2:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"admin {method} {path}: {resp.status} {data[:200]!r}")
        return json.loads(data)

    def counters(self) -> dict[str, Any]:
        return self.call("GET", "/counters")

    def create_job(self, **fields: Any) -> dict[str, Any]:
        return self.call("POST", "/jobs", fields)

    def jobs(self) -> list[dict[str, Any]]:
        return self.call("GET", "/jobs")["jobs"]

    def close(self) -> None:
        self.conn.close()


class EmulatedClock:
    """The emulator's emulated clock, read locally: calibrated once against ``GET /_emulator/clock``
    (the round trip with the smallest delay of several wins), then extrapolated from
    ``time.monotonic``. The emulator's clock also runs on the system's monotonic clock."""

    def __init__(self, admin: Admin, samples: int = 7) -> None:
        best: tuple[float, float, float] | None = None
        for _ in range(samples):
            t0 = time.monotonic()
            view = admin.call("GET", "/clock")
            t1 = time.monotonic()
            if best is None or t1 - t0 < best[0]:
                best = (t1 - t0, (t0 + t1) / 2, float(view["now_timestamp"]))
            self.scale = float(view["time_scale"])
        assert best is not None
        self.rtt, self._mono0, self._emu0 = best

    def now(self) -> float:
        """Emulated unix seconds now."""
        return self._emu0 + (time.monotonic() - self._mono0) * self.scale

    def to_dict(self) -> dict[str, float]:
        return {"mono0": self._mono0, "emu0": self._emu0, "scale": self.scale}


# -- statistics ------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# -- reporting -------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    """Numbers for tables: thousands separators, fixed digits, '-' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How the script was run, for the results header."""
    return " ".join(["python", f"benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)])


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "airflow_provider_metastudio",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() + ("+local changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def loadavg() -> str:
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "n/a"


def installed_matches_tree() -> bool | None:
    """Whether the installed package (what the benchmarks import) has the same sources as the tree."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("airflow_provider_metastudio")
        if spec is None or not spec.origin:
            return None
        installed = Path(spec.origin).parent
        tree = REPO / "airflow_provider_metastudio"
        if installed.resolve() == tree.resolve():
            return True
        a = {p.relative_to(installed): p.read_bytes() for p in installed.rglob("*.py")}
        b = {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*.py")}
        return a == b
    except OSError:
        return None


def environment() -> str:
    """One line describing where the numbers come from."""
    load = f"load avg {loadavg()}"
    cpu = platform.processor() or platform.machine()
    return (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), {load} at start, "
        f"commit {git_commit()}"
        + {
            True: " (installed package = tree)",
            False: " (installed package DIFFERS from the tree)",
            None: "",
        }[installed_matches_tree()]
    )


def write_results(name: str, markdown: str, data: Any) -> Path:
    """Write ``results/<name>.md`` and ``results/<name>.json``; return the markdown path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = RESULTS / f"{name}.md"
    md.write_text(markdown.rstrip() + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    return md


def pyplot() -> Any:
    """matplotlib's pyplot with a file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install '.[bench]')", file=sys.stderr)
        return None
    return plt


def save_chart(fig: Any, path: Path) -> None:
    """Write the figure to ``path`` (a PNG under ``results/``) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
