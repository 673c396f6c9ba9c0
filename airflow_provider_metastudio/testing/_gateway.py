"""The emulated API gateway's authentication: AK/SK signatures (with temporary credentials) and
IAM tokens."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_metastudio.testing import _signing
from airflow_provider_metastudio.testing._config import Credentials
from airflow_provider_metastudio.testing._replies import Reply, gateway_auth_error

if TYPE_CHECKING:
    from airflow_provider_metastudio.testing._iam import Iam
    from airflow_provider_metastudio.testing._shared import Shared


@dataclass
class Principal:
    """Who a request was authenticated as."""

    project_id: str
    method: str  # "aksk" or "token"
    ak: str | None = None


class Gateway:
    """Checks every signed API call as the gateway does; tokens are IAM's (see :class:`Iam`)."""

    def __init__(self, shared: Shared, iam: Iam) -> None:
        self._shared = shared
        self._iam = iam
        self.credentials: dict[str, Credentials] = {c.ak: c for c in shared.config.all_credentials()}

    def authenticate(
        self,
        *,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
        path_project: str,
    ) -> Principal | Reply:
        """Check AK/SK or token authentication like the API gateway; a :class:`Reply` on failure.

        :param headers: lower-cased name -> value as sent (first occurrence of a name).
        :param path_project: the project id from the URL.
        """
        authorization = headers.get("authorization")
        token = headers.get("x-auth-token")
        if authorization is not None:
            return self._authenticate_aksk(
                method, raw_path, raw_query, headers, body, authorization, path_project
            )
        if token is not None:
            return self._authenticate_token(token.strip(), path_project)
        return gateway_auth_error("missing Authorization (AK/SK) or X-Auth-Token header")

    def _authenticate_aksk(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
        authorization: str,
        path_project: str,
    ) -> Principal | Reply:
        try:
            parsed = _signing.parse_authorization(authorization)
            cred = self.credentials.get(parsed.ak)
            if cred is None:
                raise _signing.SignatureError("unknown access key (AK)")
            signed_at = _signing.parse_sdk_date(headers.get("x-sdk-date"))
            skew = abs(self._shared.auth_clock.now() - signed_at.timestamp())
            if skew > self._shared.config.clock_skew_seconds:
                raise _signing.SignatureError(
                    f"X-Sdk-Date is {skew:.0f} s away from the gateway clock "
                    f"(at most {self._shared.config.clock_skew_seconds:.0f} s allowed)"
                )
            _signing.verify_signature(
                method=method,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=headers,
                body=body,
                authorization=parsed,
                sk=cred.sk,
            )
            if cred.security_token is not None:
                sent = headers.get("x-security-token")
                if sent is None:
                    raise _signing.SignatureError("temporary credentials need the X-Security-Token header")
                if "x-security-token" not in parsed.signed_headers:
                    raise _signing.SignatureError("X-Security-Token must be among the SignedHeaders")
                if not hmac.compare_digest(sent.strip().encode(), cred.security_token.encode()):
                    raise _signing.SignatureError("X-Security-Token does not belong to this access key")
            project_header = headers.get("x-project-id")
            if project_header is None:
                raise _signing.SignatureError("X-Project-Id header is required with AK/SK authentication")
            if project_header.strip() != cred.project_id:
                raise _signing.SignatureError("X-Project-Id is not the project of this access key")
            if path_project != cred.project_id:
                raise _signing.SignatureError(
                    "the project id in the URL is not the project of this access key"
                )
        except _signing.SignatureError as e:
            return gateway_auth_error(str(e))
        return Principal(cred.project_id, "aksk", cred.ak)

    def _authenticate_token(self, value: str, path_project: str) -> Principal | Reply:
        problem = self._iam.token_problem(value, path_project)
        if problem is not None:
            return gateway_auth_error(problem)
        return Principal(path_project, "token")
