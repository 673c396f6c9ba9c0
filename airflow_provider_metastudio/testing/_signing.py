"""Gateway-side check of ``SDK-HMAC-SHA256`` signatures, from the request exactly as received.

Deliberately independent of ``airflow_provider_metastudio.auth``: a bug shared by the client's
signer and this check would otherwise pass unnoticed. It follows the algorithm as written in
``aksk_signing_notes.md`` and starts from the raw request line, headers and body bytes.
Error messages name the check that failed but never the expected signature or the SK.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qsl, quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

_AUTHORIZATION_RE = re.compile(
    r"^\s*SDK-HMAC-SHA256\s+Access=(?P<ak>[^,\s]+)\s*,\s*SignedHeaders=(?P<signed>[^,\s]+)\s*,"
    r"\s*Signature=(?P<signature>[0-9A-Fa-f]+)\s*$"
)


class SignatureError(Exception):
    """The request's AK/SK authentication failed; ``str(e)`` says which check, safely."""


@dataclass(frozen=True)
class ParsedAuthorization:
    ak: str
    signed_headers: tuple[str, ...]
    signed_headers_text: str
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization:
    """Split ``SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...``.

    :raises SignatureError: not that shape.
    """
    match = _AUTHORIZATION_RE.match(value)
    if not match:
        raise SignatureError(
            "Authorization header is malformed (expected 'SDK-HMAC-SHA256 Access=<AK>, "
            "SignedHeaders=<names>, Signature=<hex>')"
        )
    signed_text = match.group("signed")
    names = tuple(name.strip().lower() for name in signed_text.split(";"))
    if any(not name for name in names):
        raise SignatureError("SignedHeaders contains an empty header name")
    return ParsedAuthorization(
        match.group("ak"), names, signed_text.lower(), match.group("signature").lower()
    )


def parse_sdk_date(value: str | None) -> datetime:
    """Parse ``X-Sdk-Date`` (``YYYYMMDD'T'HHMMSS'Z'``, UTC).

    :raises SignatureError: missing or not in that format.
    """
    if not value:
        raise SignatureError("X-Sdk-Date header is missing")
    try:
        return datetime.strptime(value.strip(), SDK_DATE_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise SignatureError("X-Sdk-Date is not in the format YYYYMMDDTHHMMSSZ") from None


def canonical_uri(raw_path: str) -> str:
    """Each segment of the raw path percent-decoded, then re-encoded with only unreserved
    characters and ``~`` left bare; a ``/`` is appended when missing."""
    segments = [quote(unquote(segment), safe="~") for segment in raw_path.split("/")]
    uri = "/".join(segments)
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(raw_query: str) -> str:
    """The raw query parsed (blank values kept), keys sorted, values of a repeated key sorted,
    key and value encoded like path segments (``,`` -> ``%2C``, space -> ``%20``)."""
    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    return "&".join(
        f"{quote(key, safe='~')}={quote(value, safe='~')}"
        for key in sorted(grouped)
        for value in sorted(grouped[key])
    )


def wire_text(value: str) -> str:
    """Undo ``http.server``'s latin-1 decoding of a header value, so the text hashed is what
    the client signed (UTF-8 on the wire; undecodable bytes kept as surrogates)."""
    return value.encode("latin-1", "replace").decode("utf-8", "surrogateescape")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """Build the canonical request from what was received.

    :param method: request method.
    :param raw_path: the path from the request line, before ``?``.
    :param raw_query: the raw query string, after ``?``.
    :param headers: lower-cased header name -> value (already passed through :func:`wire_text`).
    :param signed_headers: the names listed in ``SignedHeaders``, in their order.
    :param payload_hash: hex SHA-256 of the body, or ``UNSIGNED-PAYLOAD``.
    """
    header_block = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(raw_path),
            canonical_query(raw_query),
            header_block,
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def signature_for(canonical: str, sdk_date: str, sk: str) -> str:
    """Hex HMAC-SHA256, keyed with the SK's UTF-8 bytes, of the string to sign."""
    digest = hashlib.sha256(_utf8(canonical)).hexdigest()
    to_sign = f"{ALGORITHM}\n{sdk_date}\n{digest}"
    return hmac.new(sk.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_signature(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    authorization: ParsedAuthorization,
    sk: str,
) -> None:
    """Check the signature of one request.

    :param headers: lower-cased header name -> value as sent (see :func:`wire_text`).
    :raises SignatureError: a required header is not signed or absent, or the signature differs.
    """
    names = authorization.signed_headers
    for required in ("host", "x-sdk-date"):
        if required not in names:
            raise SignatureError(f"'{required}' must be among the SignedHeaders")
    for name in names:
        if name not in headers:
            raise SignatureError(f"signed header '{name}' is not present in the request")
    if (
        headers.get("x-sdk-content-sha256", "").strip() == UNSIGNED_PAYLOAD
        and "x-sdk-content-sha256" in names
    ):
        payload_hash = UNSIGNED_PAYLOAD
    else:
        payload_hash = hashlib.sha256(body).hexdigest()
    canonical = canonical_request(method, raw_path, raw_query, headers, names, payload_hash)
    expected = signature_for(canonical, headers["x-sdk-date"].strip(), sk)
    if not hmac.compare_digest(expected, authorization.signature):
        raise SignatureError("the request signature does not match the signature computed by the gateway")
