"""The HTTP transport of remote mode: one httpx client per server, bearer token, typed errors.

Invariants:
- A JSON error from the server becomes the promptreg error class its ``code`` names, with the
  server's one-line message (so exit codes match direct mode); 401 and 403 say what is missing.
- A server that cannot be reached, or that answers something that is not promptreg JSON, is a
  StoreUnavailableError naming the URL, never an httpx traceback.
- The token is sent only in the ``Authorization`` header; it is never in a URL, a message or a repr.
- TLS: certificates are verified (``PROMPTREG_CA_BUNDLE`` names a CA file for a private CA);
  plain http is refused for a non-loopback host unless PROMPTREG_INSECURE=1.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from promptreg.errors import AuthenticationError, InputError, StoreUnavailableError, error_for_code

API = "/api/v1"
DEFAULT_TIMEOUT_S = 30.0
LONG_TIMEOUT_S = 3600.0
USER_AGENT = "promptreg-client"


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiClient:
    def __init__(self, url: str, token: str | None, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 env: dict[str, str] | None = None, transport=None):
        import httpx

        from promptreg.client.credentials import normalize_url

        env = os.environ if env is None else env
        self.url = normalize_url(url)
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not _loopback(parts.hostname or "") and env.get("PROMPTREG_INSECURE") != "1":
            raise InputError(f"refusing to send a token to {self.url} over plain http: use https "
                             "(or PROMPTREG_INSECURE=1 inside a trusted network)")
        self._token = token
        verify: Any = True
        if env.get("PROMPTREG_CA_BUNDLE"):
            verify = ssl.create_default_context(cafile=env["PROMPTREG_CA_BUNDLE"])
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, verify=verify,
                                  transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"ApiClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _check(self, response) -> None:
        if response.status_code < 400:
            return
        try:
            response.read()
            err = response.json()["error"]
            code, message = str(err["code"]), str(err["message"])
        except Exception:  # noqa: BLE001 - not our JSON: a proxy, another service
            raise StoreUnavailableError(f"promptreg server {self.url} answered HTTP {response.status_code} "
                                        "without a promptreg error (wrong URL, or a proxy in between?)") from None
        cls = error_for_code(code)
        if cls is AuthenticationError:
            if not self._token:
                message = "not logged in: run `promptreg login` or set PROMPTREG_TOKEN"
            else:
                message = f"not authenticated: {message} (run `promptreg login` again or check PROMPTREG_TOKEN)"
        exc = cls(message)
        report = (err.get("details") or {}).get("report")
        if report is not None:          # a failed gate: the same GateReport a direct promote attaches
            from promptreg.codec import decode
            from promptreg.evaluation.results import GateReport

            exc.report = decode(GateReport, report)
        raise exc

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        import httpx

        try:
            yield
        except httpx.TimeoutException:
            raise StoreUnavailableError(f"promptreg server {self.url} did not answer in time") from None
        except httpx.TransportError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreUnavailableError(f"promptreg server {self.url} unreachable: {reason}") from None

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                content: Any = None, headers: dict[str, str] | None = None, timeout_s: float | None = None):
        """One request; the parsed JSON answer (None for an empty body)."""
        import httpx

        kwargs: dict[str, Any] = {"json": json, "params": params, "content": content,
                                  "headers": self._headers(headers)}
        if timeout_s is not None:
            kwargs["timeout"] = httpx.Timeout(timeout_s, connect=10.0)
        with self._transport_errors():
            response = self._http.request(method, path, **kwargs)
        self._check(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise StoreUnavailableError(f"promptreg server {self.url} answered {method} {path} with invalid JSON") \
                from None

    @contextmanager
    def stream(self, method: str, path: str, *, timeout_s: float | None = None, **kwargs) -> Iterator[Any]:
        """A streamed response (checked for errors before it is yielded)."""
        import httpx

        kw: dict[str, Any] = {"headers": self._headers(kwargs.pop("headers", None)), **kwargs}
        if timeout_s is not None:
            kw["timeout"] = httpx.Timeout(timeout_s, connect=10.0)
        with self._transport_errors(), self._http.stream(method, path, **kw) as response:
            self._check(response)
            yield response


__all__ = ["API", "ApiClient", "LONG_TIMEOUT_S"]
