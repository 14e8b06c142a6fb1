"""One small HTTP POST for the webhook-style sinks (Splunk HEC, revoke webhook), on the standard library.

Errors become :class:`DeliveryError` built only from the status code, the
response body (truncated) and the exception class -- never from the request
headers, which carry the credentials.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from sentinel.alerting.notify import DeliveryError


def tls_context(verify: bool = True, ca_file: Path | str | None = None) -> ssl.SSLContext:
    """Verification is on unless explicitly turned off; ``ca_file`` adds a private CA."""
    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


class Response:
    def __init__(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float = 10.0,
         context: ssl.SSLContext | None = None, method: str = "POST") -> Response:
    """POST (or ``method``) and return the response, whatever its status; transport failures raise a
    retryable error."""
    req = urllib.request.Request(url, data=body, headers=dict(headers), method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return Response(resp.status, resp.read(), dict(resp.headers.items()))
    except urllib.error.HTTPError as err:
        with err:
            return Response(err.code, err.read(), dict(err.headers.items()) if err.headers else {})
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise DeliveryError(f"TLS certificate verification failed: {reason.verify_message}",
                                retryable=True) from None
        raise DeliveryError(f"connection failed: {type(reason).__name__}: {reason}", retryable=True) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException, ssl.SSLError) as err:
        raise DeliveryError(f"connection failed: {type(err).__name__}", retryable=True) from None


def retry_after(headers: Mapping[str, str]) -> float | None:
    for k, v in headers.items():
        if k.lower() == "retry-after":
            try:
                return float(v)
            except ValueError:
                return None
    return None
