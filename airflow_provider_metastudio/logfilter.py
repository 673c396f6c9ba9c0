"""Keep pre-signed URLs out of the logs of the HTTP libraries the hook drives.

``urllib3`` logs every request line at DEBUG (``"GET /cover.png?...&Signature=... HTTP/1.1" 200``)
and ``httpx`` every URL at INFO; a signed URL is a bearer credential until it expires. A filter on
those loggers rewrites such records with the signature redacted (:func:`redact_url`). The secrets
masker (the hook registers each signature it handles) covers Airflow's handlers too; the filter
also covers handlers the masker does not see, and signatures the hook never handled.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, unquote_plus

from airflow_provider_metastudio.models import redact_url

# Loggers that write request URLs: urllib3's request line and retry notes, httpx's request line.
URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager", "httpx", "httpcore")


_SIGNATURE_VALUE_RE = re.compile(r"(?i)[?&](?:signature|x-amz-signature|x-obs-signature)=([^&#\s]+)")


def url_signatures(url: str) -> list[str]:
    """The signature values of a pre-signed URL, as sent (percent-encoded) and decoded, for the
    secrets masker. Very short values are left out: masking them would redact unrelated text."""
    found: set[str] = set()
    for raw in _SIGNATURE_VALUE_RE.findall(url):
        found.update(v for v in (raw, unquote(raw), unquote_plus(raw)) if len(v) >= 8)
    return sorted(found)


class SignedUrlFilter(logging.Filter):
    """Redact ``Signature=`` values in a record's formatted message; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the handler's problem, not ours
            return True
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER = SignedUrlFilter()


def install() -> None:
    """Add the filter to the URL-logging libraries' loggers (idempotent, cheap)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
