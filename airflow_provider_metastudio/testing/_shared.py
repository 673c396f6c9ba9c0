"""What the emulator's components share: configuration, one lock, the clocks and OBS URL signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from urllib.parse import parse_qs, quote

from airflow_provider_metastudio.testing._clock import AuthClock, EmulatorClock, format_retry_after
from airflow_provider_metastudio.testing._config import EmulatorConfig
from airflow_provider_metastudio.testing._replies import Reply, obs_error

OBS_ACCESS_KEY = "EMULATOROBSACCESSKEY"


class Shared:
    """The context every component holds.

    One re-entrant lock guards all components' state: a request often reads several of them
    (a job and its asset, a token and its project), and one lock keeps those reads consistent.

    :param config: the emulator's configuration (later changes go through the components).
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.clock = EmulatorClock(config.time_scale, config.start_time)
        self.auth_clock = AuthClock(config.auth_time)
        self.base_url = ""  # set when the server is bound
        self._obs_sk = secrets.token_hex(20)

    def now(self) -> float:
        """Emulated unix seconds."""
        return self.clock.now()

    def retry_after(self, wait_emulated: float) -> str:
        """A ``Retry-After`` value (real seconds) for a wait of ``wait_emulated`` seconds."""
        return format_retry_after(wait_emulated, self.clock.time_scale)

    # ---------------------------------------------------------------- pre-signed OBS URLs

    def _obs_signature(self, path: str, expires: int) -> str:
        # OBS query-string signing (V2): base64 HMAC-SHA1 over "GET\n\n\n<Expires>\n<resource>".
        to_sign = f"GET\n\n\n{expires}\n{path}"
        return base64.b64encode(
            hmac.new(self._obs_sk.encode(), to_sign.encode(), hashlib.sha1).digest()
        ).decode()

    def presigned_url(self, path: str, ttl: float, now: float) -> str:
        """``path`` on this emulator, pre-signed OBS-style (V2 query signing) for ``ttl`` seconds."""
        expires = int(now + ttl)
        signature = self._obs_signature(path, expires)
        return (
            f"{self.base_url}{path}?AccessKeyId={OBS_ACCESS_KEY}&Expires={expires}"
            f"&Signature={quote(signature, safe='')}"
        )

    def check_presigned(self, raw_path: str, raw_query: str, request_id: str) -> Reply | None:
        """None for a valid, unexpired pre-signed URL; OBS's 403 XML answer otherwise."""
        query = parse_qs(raw_query, keep_blank_values=True)
        ak = (query.get("AccessKeyId") or [""])[-1]
        expires_text = (query.get("Expires") or [""])[-1]
        signature = (query.get("Signature") or [""])[-1]
        if not ak or not expires_text or not signature:
            return obs_error(
                403, "AccessDenied", "Anonymous access is forbidden for this operation", request_id
            )
        if ak != OBS_ACCESS_KEY:
            return obs_error(
                403, "InvalidAccessKeyId", "The AccessKeyId you provided does not exist", request_id
            )
        try:
            expires = int(expires_text)
        except ValueError:
            return obs_error(403, "AccessDenied", "Invalid Expires", request_id)
        expected = self._obs_signature(raw_path, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return obs_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
                request_id,
            )
        if self.now() >= expires:
            return obs_error(403, "AccessDenied", "Request has expired", request_id)
        return None
