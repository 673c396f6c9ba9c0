"""Emulated IAM: password login (``POST /v3/auth/tokens``), project-scoped tokens and their expiry."""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_metastudio.testing._clock import rfc3339_micro
from airflow_provider_metastudio.testing._replies import Reply, iam_error, json_reply

if TYPE_CHECKING:
    from airflow_provider_metastudio.testing._recorder import Recorder
    from airflow_provider_metastudio.testing._shared import Shared


@dataclass
class Token:
    value: str
    project_id: str
    project_name: str
    user: str
    domain: str
    issued_at: float
    expires_at: float
    revoked: bool = False


class Iam:
    """The IAM user of the emulator's account and the tokens issued to it."""

    def __init__(self, shared: Shared, recorder: Recorder) -> None:
        self._shared = shared
        self._recorder = recorder
        config = shared.config
        # project name -> id; a project known only by id (another tenant's AK/SK) maps to itself
        self.projects: dict[str, str] = {config.project_name: config.project_id}
        for cred in config.all_credentials():
            self.projects.setdefault(cred.project_id, cred.project_id)
        self._tokens: dict[str, Token] = {}

    # ---------------------------------------------------------------- for tests

    def issue_token(self, project_id: str | None = None, *, ttl: float | None = None) -> str:
        """Issue an IAM token directly (as a password login would) and return it.

        :param project_id: its project (the primary one by default).
        :param ttl: lifetime in emulated seconds (``token_ttl`` by default).
        """
        return self.issue(project_id, ttl=ttl).value

    def token_info(self, value: str) -> dict[str, Any]:
        """``token``, ``project_id`` and ``expires_at`` (IAM's time format) of an issued token.

        :raises KeyError: no such token.
        """
        with self._shared.lock:
            token = self._tokens[value]
            return {
                "token": token.value,
                "project_id": token.project_id,
                "expires_at": rfc3339_micro(token.expires_at),
            }

    def expire_tokens(self) -> int:
        """Invalidate every token issued so far (a token expiring mid-wait); return how many were live."""
        with self._shared.lock:
            now = self._shared.now()
            live = 0
            for token in self._tokens.values():
                if not token.revoked and now < token.expires_at:
                    live += 1
                token.revoked = True
            return live

    def reset(self) -> None:
        """Forget every token."""
        with self._shared.lock:
            self._tokens.clear()

    # ---------------------------------------------------------------- for the server

    def issue(self, project_id: str | None = None, *, ttl: float | None = None) -> Token:
        """Issue a project-scoped token (what a successful password login returns)."""
        config = self._shared.config
        project_id = project_id or config.project_id
        name = next((n for n, pid in self.projects.items() if pid == project_id and n != pid), project_id)
        with self._shared.lock:
            now = self._shared.now()
            token = Token(
                value="MIIT" + secrets.token_urlsafe(48),
                project_id=project_id,
                project_name=name,
                user=config.iam_user,
                domain=config.iam_domain,
                issued_at=now,
                expires_at=now + (config.token_ttl if ttl is None else float(ttl)),
            )
            self._tokens[token.value] = token
            self._recorder.token_issued()
            return token

    def token_problem(self, value: str, path_project: str) -> str | None:
        """Why the gateway refuses token ``value`` for ``path_project``; None if it is valid."""
        with self._shared.lock:
            token = self._tokens.get(value)
            if token is None or token.revoked or self._shared.now() >= token.expires_at:
                return "token expired or invalid"
            if token.project_id != path_project:
                return "the token's project does not match the project id in the URL"
            return None

    def login(self, body: bytes) -> tuple[Reply, str | None]:
        """``POST /v3/auth/tokens`` (password identity, project scope); reply and project id."""
        config = self._shared.config
        try:
            payload = json.loads(body.decode("utf-8"))
            auth = payload["auth"]
            identity = auth["identity"]
            methods = identity["methods"]
            user = identity["password"]["user"]
            user_name, password = user["name"], user["password"]
            domain_name = user["domain"]["name"]
            project = auth["scope"]["project"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return iam_error(
                400, "IAM.0007", "Request body is invalid: password identity and project scope required"
            ), None
        if methods != ["password"]:
            return iam_error(400, "IAM.0007", "Only the 'password' identity method is supported"), None
        if not all(isinstance(v, str) for v in (user_name, password, domain_name)) or not isinstance(
            project, dict
        ):
            return iam_error(400, "IAM.0007", "Request body is invalid"), None
        ok = (
            hmac.compare_digest(user_name.encode(), config.iam_user.encode())
            and hmac.compare_digest(password.encode(), config.iam_password.encode())
            and hmac.compare_digest(domain_name.encode(), config.iam_domain.encode())
        )
        if not ok:
            return iam_error(401, "IAM.0101", "The username or password is wrong."), None
        project_id = project.get("id")
        if project_id is None and isinstance(project.get("name"), str):
            project_id = self.projects.get(project["name"])
        if not isinstance(project_id, str) or project_id not in self.projects.values():
            return iam_error(
                401, "IAM.0101", "The project is not found or the user has no access to it."
            ), None
        token = self.issue(project_id)
        body_obj = {
            "token": {
                "expires_at": rfc3339_micro(token.expires_at),
                "issued_at": rfc3339_micro(token.issued_at),
                "methods": ["password"],
                "project": {
                    "id": token.project_id,
                    "name": token.project_name,
                    "domain": {"name": token.domain},
                },
                "user": {"name": token.user, "domain": {"name": token.domain}},
                "roles": [],
                "catalog": [],
            }
        }
        return json_reply(201, body_obj, {"X-Subject-Token": token.value}), project_id
