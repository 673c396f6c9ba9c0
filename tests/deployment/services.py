"""PostgreSQL, Redis and a StatsD listener on 127.0.0.1, each on a free port in its own temp dir.

PostgreSQL and Redis come from Debian packages (``postgresql``, ``redis-server``);
``scripts/run-deployment.sh`` installs them when missing. As root, PostgreSQL runs as the
``postgres`` user (it refuses to run as root); otherwise as the calling user.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from testsupport.airflow_procs import free_port

INSTALL_HINT = (
    "the deployment test needs PostgreSQL and Redis from Debian packages: "
    "`sudo apt-get install -y postgresql redis-server` (scripts/run-deployment.sh does it when run as root)"
)


class MissingService(RuntimeError):
    """A service binary is not installed."""


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise MissingService(f"no PostgreSQL server (/usr/lib/postgresql/*/bin/initdb): {INSTALL_HINT}")
    return Path(found[-1]).parent


class Postgres:
    """A throw-away PostgreSQL cluster with trust auth for the ``airflow`` role and an ``airflow`` DB."""

    def __init__(self, log_dir: Path) -> None:
        self.bin = _postgres_bin()
        self.log_dir = log_dir
        self.port = 0
        self.dir: Path | None = None

    def _run(self, *args: str) -> None:
        # Root may not run the server: run its tools as the ``postgres`` user the package creates.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> Postgres:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="metastudio-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "airflow", "-E", "UTF8")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off"  # a test database: durability buys nothing
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "postgres.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow",
             "airflow"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return self

    @property
    def dsn(self) -> str:
        return f"postgresql://airflow@127.0.0.1:{self.port}/airflow"

    def stop(self) -> None:
        if self.dir is None:
            return
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        except subprocess.CalledProcessError:
            pass  # never started, or already gone
        log = self.dir / "postgres.log"
        if log.exists():
            shutil.copy(log, self.log_dir / "postgres.log")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


class Redis:
    """``redis-server`` on loopback without persistence, in its own process group."""

    def __init__(self, log_dir: Path) -> None:
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.binary):
            raise MissingService(f"no redis-server: {INSTALL_HINT}")
        self.log_dir = log_dir
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.dir: Path | None = None

    def start(self) -> Redis:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="metastudio-redis-"))
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=(self.log_dir / "redis.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port}; see redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class StatsdListener:
    """A UDP StatsD sink on 127.0.0.1: sums counters (``name:value|c``) by name, keeps every line."""

    def __init__(self, log_dir: Path) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Bursts from many processes: a large receive buffer so the kernel drops nothing.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.log = (log_dir / "statsd.log").open("w")
        self._counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="statsd-listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode(errors="replace").splitlines():
                self.log.write(line + "\n")
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                if kind.split("|")[0] == "c":
                    with self._lock:
                        self._counters[name] += int(float(value))

    def counters(self, prefix: str = "") -> dict[str, int]:
        """Counter totals whose name starts with ``prefix`` (the prefix is stripped)."""
        with self._lock:
            return {k[len(prefix) :]: v for k, v in self._counters.items() if k.startswith(prefix)}

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        self.log.close()
