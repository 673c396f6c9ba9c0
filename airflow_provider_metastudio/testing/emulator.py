"""A local MetaStudio emulator: a real HTTP server that plays the service, its gateway and IAM.

It serves the picture-modeling calls under ``/v1/{project_id}/digital-human/stylized/``, IAM's
``POST /v3/auth/tokens``, pre-signed cover pictures under ``/obs/...`` and an unauthenticated,
loopback-only admin interface under ``/_emulator/``. It checks AK/SK signatures and IAM tokens as
the gateway does, enforces the documented quotas, and injects faults on demand. Everything is
in-memory and stdlib-only; Airflow is imported lazily, and only by the connection helpers.

Typical use::

    with MetaStudioEmulator(EmulatorConfig(time_scale=60)) as emu:
        hook_conn = emu.connection_json()
        ...
        emu.jobs.create("portrait", outcome="FAILED")
        emu.faults.inject("show", "503")
        emu.clock.advance(30)
        assert emu.recorder.counters()["throttled_total"] == 0

The emulator is made of components, each an attribute with one responsibility:

- ``emu.gateway``: AK/SK signature and token checks (:mod:`._gateway`);
- ``emu.quotas``: request rate quotas, ``set()``/``settings()`` (:mod:`._quotas`);
- ``emu.faults``: ``inject()``, ``set_rates()``, ``outage()``, ``set_job_error()``,
  ``set_list_quirks()``, ``clear()`` (:mod:`._faults`);
- ``emu.jobs``: jobs and their covers, ``create()``, ``get()``, ``record()``, ``records()``,
  ``set_state()``, ``delete()``, ``set_outcome()``, ``set_outcome_weights()`` (:mod:`._jobs`);
- ``emu.assets``: the asset library, ``get()``, ``file_bytes()``, ``set_state()``,
  ``set_outcome()``, ``corrupt()`` (:mod:`._assets`);
- ``emu.iam``: ``issue_token()``, ``expire_tokens()`` (:mod:`._iam`);
- ``emu.recorder``: ``counters()``, ``count()``, ``request_log()``, ``reset()`` (:mod:`._recorder`).

The facade itself only runs the server (``start``/``stop``, ``base_url``, ``port``), hands out
credentials and Airflow connections, and owns the clocks and :meth:`MetaStudioEmulator.reset`.

Behaviour worth knowing:

- Every answer, errors and injected faults included, carries ``X-Request-Id`` (uuid4 hex); error
  bodies are ``{"error_code", "error_msg"}`` (OBS cover errors are XML, as OBS answers).
- Validation errors: 400 ``MSS.00000003`` ``"Invalid parameter: <field> (...)"``; a JSON body that
  does not parse: 400 ``MSS.00000002``; unknown job (or another tenant's): 404 ``MSS.00000003``
  ``"Job not found"`` (no published code for this case was found); body over the limit: 413
  ``APIGW.0201``; unknown API: 404 ``APIGW.0101``; wrong method: 405 ``MSS.00010004``.
- Gateway authentication failures: 401 ``APIGW.0301``, the message names the failed check but
  never the expected signature or a secret. IAM login failures: 401 with IAM's shape
  ``{"error": {"code": "IAM.0101", "message", "title"}}`` plus flat ``error_code``/``error_msg``.
- Throttling: 429 ``APIGW.0308`` with ``Retry-After`` in REAL seconds: an integer (ceil, >= 1)
  when ``time_scale == 1``, a decimal string such as ``"0.017"`` when time is scaled.
- Unconfirmed behaviours a client should survive, off by default: list quirks (the list ignores
  the sort; lists show a finished job late, as a lagging read replica would; ``update_time``
  sorts by the start time), vanished jobs (``jobs.delete``), per-job error answers of the details
  call (``faults.set_job_error``) and outage windows in real seconds (``faults.outage``).
- Two clocks: ``emu.clock`` (emulated, scaled, ``advance()``-able) drives jobs, quotas, token and
  cover expiry; ``emu.auth_clock`` (real time plus an offset) checks ``X-Sdk-Date``.
- Admin interface (no auth, loopback clients only; the route table in :mod:`._admin` onto the
  same component methods), JSON in and out: ``GET /_emulator/health``;
  ``GET|POST /_emulator/jobs``; ``GET|DELETE /_emulator/jobs/{id}``; ``POST /_emulator/jobs/{id}/state``;
  ``PUT|DELETE /_emulator/jobs/{id}/error``; ``GET|PUT|DELETE /_emulator/faults``;
  ``GET|PUT|DELETE /_emulator/list-quirks``; ``POST /_emulator/outages``; ``GET|POST /_emulator/outcomes``;
  ``GET /_emulator/counters``; ``GET /_emulator/requests``; ``POST /_emulator/reset-counters``;
  ``GET|POST /_emulator/clock``; ``POST /_emulator/tokens``; ``POST /_emulator/tokens/expire``;
  ``GET|PUT /_emulator/quotas``; ``POST /_emulator/reset``; the asset library:
  ``GET /_emulator/assets/{id}``, ``POST /_emulator/assets/{id}/state``,
  ``PUT|DELETE /_emulator/assets/{id}/corrupt``, ``GET|POST /_emulator/asset-outcomes``.
- The asset library (``testing/_assets.py``): ``GET /v1/{project_id}/digital-assets[/{asset_id}]``
  and pre-signed file downloads under ``/obs/{project}/{asset}/files/{file_id}/{name}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from airflow_provider_metastudio.testing._assets import Assets
from airflow_provider_metastudio.testing._clock import AuthClock, EmulatorClock
from airflow_provider_metastudio.testing._config import EmulatorConfig
from airflow_provider_metastudio.testing._faults import Faults
from airflow_provider_metastudio.testing._gateway import Gateway
from airflow_provider_metastudio.testing._iam import Iam
from airflow_provider_metastudio.testing._jobs import Jobs
from airflow_provider_metastudio.testing._quotas import Quotas
from airflow_provider_metastudio.testing._recorder import Recorder
from airflow_provider_metastudio.testing._server import _Server
from airflow_provider_metastudio.testing._shared import Shared

if TYPE_CHECKING:
    from airflow.models.connection import Connection

log = logging.getLogger(__name__)


class MetaStudioEmulator:
    """A MetaStudio emulator running on a background thread; use it as a context manager.

    :param config: the configuration; defaults to :class:`EmulatorConfig` ``()``.
    :param overrides: individual :class:`EmulatorConfig` fields, applied on top of ``config``.
    """

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        base = config or EmulatorConfig()
        self.config = replace(base, **overrides) if overrides else base
        # One shared context (config, lock, clocks); each component owns one concern.
        self._shared = shared = Shared(self.config)
        self.recorder: Recorder = Recorder(shared)
        self.iam: Iam = Iam(shared, self.recorder)
        self.gateway: Gateway = Gateway(shared, self.iam)
        self.quotas: Quotas = Quotas(shared)
        self.faults: Faults = Faults(shared)
        self.jobs: Jobs = Jobs(shared, self.faults, self.recorder)
        self.assets: Assets = Assets(shared, self.jobs)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> MetaStudioEmulator:
        """Bind and serve on a background thread; return ``self``."""
        if self._server is not None:
            return self
        server = _Server((self.config.host, self.config.port), self, self.config.keepalive_timeout)
        self._server = server
        host, port = server.server_address[:2]
        shown = str(host)
        if shown in ("0.0.0.0", "::", ""):
            shown = "127.0.0.1"
        if ":" in shown:
            shown = f"[{shown}]"
        self._shared.base_url = (self.config.advertised_url or f"http://{shown}:{port}").rstrip("/")
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="metastudio-emulator",
            daemon=True,
        )
        self._thread.start()
        log.info("MetaStudio emulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        # serve_forever() only notices shutdown() between select() calls; poke the listening
        # socket so a test's teardown does not wait out a poll interval.
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bound_host, bound_host)
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((host, bound_port), timeout=0.5).close()
            stopper.join(0.01)
        server.close_all_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MetaStudioEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses and credentials

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the service, IAM and cover endpoint alike."""
        if not self._shared.base_url:
            raise RuntimeError("the emulator is not started")
        return self._shared.base_url

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return int(self._server.server_address[1])

    @property
    def ak(self) -> str:
        return self.config.ak

    @property
    def sk(self) -> str:
        return self.config.sk

    @property
    def project_id(self) -> str:
        return self.config.project_id

    @property
    def security_token(self) -> str | None:
        return self.config.security_token

    @property
    def clock(self) -> EmulatorClock:
        """The emulated (possibly scaled) clock: ``emu.clock.advance(seconds)`` moves every job."""
        return self._shared.clock

    @property
    def auth_clock(self) -> AuthClock:
        """The gateway's clock for ``X-Sdk-Date`` checks (real time plus an offset)."""
        return self._shared.auth_clock

    def connection_destination(self) -> dict[str, Any]:
        """``host``, ``port`` and ``schema`` (the URL scheme) of this emulator, as the connection keeps
        them: a stored connection's secrets only go where these fields say (see ``config.py``)."""
        parts = urlsplit(self.base_url)
        return {"host": parts.hostname, "port": parts.port, "schema": parts.scheme}

    def connection_extra(self) -> dict[str, Any]:
        """Connection extras for this emulator: ``project_id``, ``iam_endpoint`` (and ``endpoint``
        when the advertised URL has a path); the server itself is in :meth:`connection_destination`."""
        extra: dict[str, Any] = {"project_id": self.project_id, "iam_endpoint": self.base_url}
        if urlsplit(self.base_url).path not in ("", "/"):
            extra["endpoint"] = self.base_url
        if self.config.security_token:
            extra["security_token"] = self.config.security_token
        return extra

    def connection_dict(self, auth_type: str = "aksk") -> dict[str, Any]:
        """The Airflow connection as a dict (JSON form), for ``aksk``, ``token`` or ``password``.

        :param auth_type: ``aksk`` (AK in login, SK in password), ``token`` (a freshly issued IAM
            token in password) or ``password`` (IAM user/password, account in ``domain``).
        """
        extra = self.connection_extra()
        dest = {"conn_type": "metastudio", **self.connection_destination()}
        if auth_type == "aksk":
            return {**dest, "login": self.ak, "password": self.sk, "extra": extra}
        if auth_type == "token":
            extra.pop("security_token", None)
            return {
                **dest,
                "password": self.iam.issue_token(),
                "extra": {**extra, "auth_type": "token"},
            }
        if auth_type == "password":
            extra.pop("security_token", None)
            return {
                **dest,
                "login": self.config.iam_user,
                "password": self.config.iam_password,
                "extra": {**extra, "auth_type": "password", "domain": self.config.iam_domain},
            }
        raise ValueError(f"auth_type must be aksk, token or password, not {auth_type!r}")

    def connection_json(self, auth_type: str = "aksk") -> str:
        """The connection in Airflow's JSON form, e.g. for ``AIRFLOW_CONN_METASTUDIO_DEFAULT``.

        :param auth_type: see :meth:`connection_dict`.
        """
        return json.dumps(self.connection_dict(auth_type))

    def connection_uri(self, auth_type: str = "aksk") -> str:
        """The connection as an Airflow URI: ``metastudio://AK:SK@127.0.0.1:PORT/http?project_id=...``.

        Login and password are percent-encoded with nothing left bare, so any SK survives.

        :param auth_type: see :meth:`connection_dict`.
        """
        conn = self.connection_dict(auth_type)
        login = quote(str(conn.get("login") or ""), safe="")
        password = quote(str(conn.get("password") or ""), safe="")
        userinfo = f"{login}:{password}@" if password else (f"{login}@" if login else "")
        host = conn["host"] if ":" not in conn["host"] else f"[{conn['host']}]"
        port = f":{conn['port']}" if conn["port"] else ""
        return f"metastudio://{userinfo}{host}{port}/{conn['schema']}?{urlencode(conn['extra'])}"

    def airflow_connection(self, conn_id: str = "metastudio_default", auth_type: str = "aksk") -> Connection:
        """An ``airflow.models.connection.Connection`` for this emulator (imports Airflow lazily).

        :param conn_id: the connection id to give it.
        :param auth_type: see :meth:`connection_dict`.
        """
        from airflow.models.connection import Connection

        conn = self.connection_dict(auth_type)
        return Connection(
            conn_id=conn_id,
            conn_type=conn["conn_type"],
            host=conn["host"],
            port=conn["port"],
            schema=conn["schema"],
            login=conn.get("login"),
            password=conn.get("password"),
            extra=json.dumps(conn["extra"]),
        )

    # ------------------------------------------------------------------ jobs

    # ------------------------------------------------------------------ reset

    def reset(self) -> None:
        """Forget jobs, tokens, quota history, one-shot faults, outages, per-job errors, list quirks,
        asset pins and counters; keep fault shares, quotas and outcome rules."""
        with self._shared.lock:
            self.jobs.reset()
            self.iam.reset()
            self.quotas.reset()
            self.faults.reset()
            self.assets.reset()
            self.recorder.reset()
