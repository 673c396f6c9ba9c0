"""One exception hierarchy for everything the provider raises.

Every error that came from the service carries the HTTP status, the service's ``error_code`` and
``error_msg`` and the ``X-Request-Id`` (what Huawei support asks for). Messages never contain
credentials: they are built from the call name, the status, the service's own answer (its message cut
to 500 characters) and ids, states or file labels the caller already has.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_metastudio._compat import AirflowException

_MAX_MSG = 500


class MetaStudioError(AirflowException):
    """Base class of all provider errors.

    :param message: human-readable summary.
    :param status: HTTP status, when there was a response.
    :param error_code: the service's ``error_code`` (``MSS.*`` or gateway ``APIGW.*``).
    :param error_msg: the service's ``error_msg``.
    :param request_id: the response's ``X-Request-Id``.
    :param call: which call failed, by its ``ApiCall`` name: ``show``, ``list``, ``create``,
        ``create_by_url``, ``iam`` (the password flow's token request), ``cover`` (the cover download),
        ``asset_show``, ``asset_list`` or ``asset_file`` (an asset file's download or check).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
        call: str | None = None,
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id
        self.call = call
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for trigger events and XCom."""
        return {
            "type": type(self).__name__,
            "message": str(self),
            "status": self.status,
            "error_code": self.error_code,
            "error_msg": self.error_msg,
            "request_id": self.request_id,
            "call": self.call,
        }


class MetaStudioValidationError(MetaStudioError, ValueError):
    """Input refused before any request was built; ``field`` names the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"Invalid {field}: {problem}")


class MetaStudioConfigError(MetaStudioError):
    """The Airflow connection is incomplete or inconsistent."""


class MetaStudioConnectionError(MetaStudioError):
    """The service could not be reached, or the connection broke.

    :param sent: False when the request provably never reached the service (connection refused,
        DNS failure, connect timeout): only then may a non-idempotent create be retried.
    """

    def __init__(self, message: str, *, sent: bool, call: str | None = None) -> None:
        self.sent = sent
        super().__init__(message, call=call)


class MetaStudioApiError(MetaStudioError):
    """The service answered with an error status."""

    def with_advice(self, advice: str, *, call: str | None = None) -> MetaStudioApiError:
        """The same error (class, status, codes, request id) with ``advice`` after its message."""
        return type(self)(
            f"{self} - {advice}",
            status=self.status,
            error_code=self.error_code,
            error_msg=self.error_msg,
            request_id=self.request_id,
            call=call or self.call,
        )


class MetaStudioBadRequestError(MetaStudioApiError):
    """400 and other final 4xx answers."""


class MetaStudioAuthError(MetaStudioApiError):
    """401/403: credentials, signature, clock skew, token or permissions."""


class MetaStudioNotFoundError(MetaStudioApiError):
    """404: no such job (or path)."""


class MetaStudioThrottledError(MetaStudioApiError):
    """429: the tenant's quota is used up; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class MetaStudioServerError(MetaStudioApiError):
    """5xx from the service or its gateway."""


class MetaStudioInvalidResponseError(MetaStudioApiError):
    """The body is not the JSON the contract promises (HTML gateway page, truncated, too large)."""


class MetaStudioJobFailedError(MetaStudioError):
    """A picture-modeling job ended FAILED or CANCELED (or PARTIAL_SUCCEED when not accepted)."""

    def __init__(self, job_id: str, state: str, error_code: str | None, error_msg: str | None) -> None:
        self.job_id = job_id
        self.state = state
        detail = f": {error_code} {error_msg}" if (error_code or error_msg) else ""
        super().__init__(
            f"Picture modeling job {job_id} ended {state}{detail}",
            error_code=error_code,
            error_msg=error_msg,
            call="show",
        )


class MetaStudioGatewayError(MetaStudioServerError, MetaStudioInvalidResponseError):
    """5xx with a non-JSON body: the API gateway or a proxy answered, not the service."""


class MetaStudioWaitTimeout(MetaStudioError):
    """A blocking wait passed its deadline before the job reached a terminal state."""


def describe(
    call: str,
    status: int | None,
    error_code: str | None,
    error_msg: str | None,
    request_id: str | None,
    hint: str | None = None,
) -> str:
    """The one message format: ``MetaStudio show failed: HTTP 401 APIGW.0301 '...' (X-Request-Id: ...)``."""
    parts = [f"MetaStudio {call} failed:"]
    if status is not None:
        parts.append(f"HTTP {status}")
    if error_code:
        parts.append(error_code)
    if error_msg:
        parts.append(repr(error_msg[:_MAX_MSG]))
    parts.append(f"(X-Request-Id: {request_id or 'none'})")
    if hint:
        parts.append(f"- {hint}")
    return " ".join(parts)


# -- digital assets (issue #14) -----------------------------------------------------------------


class MetaStudioAssetFailedError(MetaStudioError):
    """A model asset is in a state it will not leave to become usable (FAILED, BLOCK, DELETED)."""

    def __init__(self, asset_id: str, state: str, detail: str | None = None) -> None:
        self.asset_id = asset_id
        self.state = state
        super().__init__(
            f"Model asset {asset_id} is {state}" + (f": {detail}" if detail else ""), call="asset_show"
        )


class MetaStudioChecksumError(MetaStudioError):
    """A downloaded asset file does not match the size or MD5 the asset lists for it.

    Not a :class:`MetaStudioInvalidResponseError`: the hook does not retry it on its own (the
    download operator retries a mismatch once, then fails naming the file).
    """

    def __init__(self, file_label: str, problem: str) -> None:
        self.file_label = file_label
        super().__init__(f"Asset file {file_label} failed verification: {problem}", call="asset_file")
