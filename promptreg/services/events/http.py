"""POST to a webhook target, refusing private and loopback addresses unless the operator allows them.

* Only ``http``/``https`` URLs without user:password. The host is resolved, and EVERY address it
  resolves to must be public (``ipaddress``'s ``is_global``, and not multicast) unless private targets
  are allowed (PROMPTREG_WEBHOOK_ALLOW_PRIVATE=1 or ``[events] webhook_allow_private``).
* The check is made again at every delivery and the connection goes to the address that was checked
  (HTTPS still verifies the certificate for the host name): a DNS answer that changes between the
  check and the connection cannot redirect a delivery to an internal address.
* Redirects are never followed (a 3xx is a failed try); no proxy from the environment is used.
* 2xx is success; anything else, or no answer within the timeout, is a failed try.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from promptreg.errors import InputError

MAX_URL = 2000


class DeliveryFailed(Exception):
    """A try that got no usable answer (refused address, connection error, timeout)."""


@dataclass
class Target:
    scheme: str
    host: str
    port: int
    path: str


def parse_url(url: str) -> Target:
    if not isinstance(url, str) or not url or len(url) > MAX_URL or any(ch.isspace() for ch in url):
        raise InputError(f"webhook URL must be an http(s) URL of at most {MAX_URL} characters without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"invalid webhook URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"webhook URL must start with http:// or https:// and name a host: {url}")
    if parts.username is not None or parts.password is not None:
        raise InputError("webhook URL must not hold user:password (requests are signed with the webhook secret)")
    if parts.fragment:
        raise InputError("webhook URL must not have a #fragment")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path)


def _refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return not ip.is_global or ip.is_multicast


def resolve(target: Target, allow_private: bool) -> str:
    """The address to connect to; InputError when the host does not resolve or resolves to a private,
    loopback, link-local or otherwise non-public address (and those are not allowed)."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"webhook host {target.host} does not resolve: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise InputError(f"webhook host {target.host} does not resolve")
    if not allow_private:
        bad = [a for a in addresses if _refused(ipaddress.ip_address(a.split("%", 1)[0]))]
        if bad:
            raise InputError(f"webhook host {target.host} resolves to a private or loopback address ({bad[0]}): "
                             "refused unless PROMPTREG_WEBHOOK_ALLOW_PRIVATE=1 (or [events] webhook_allow_private "
                             "= true in promptreg.toml)")
    return addresses[0]


def check_url(url: str, allow_private: bool) -> Target:
    target = parse_url(url)
    resolve(target, allow_private)
    return target


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool) -> tuple[int, str]:
    """POST ``body``; (status code, the first 500 characters of the answer). Raises DeliveryFailed
    when there is no answer (or the address is refused)."""
    try:
        target = parse_url(url)
        address = resolve(target, allow_private)
    except InputError as exc:
        raise DeliveryFailed(str(exc)) from None
    cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    conn = cls(target.host, address, target.port, timeout)
    try:
        conn.request("POST", target.path, body=body, headers={**headers, "user-agent": "promptreg-webhooks/1"})
        resp = conn.getresponse()
        text = resp.read(4096).decode("utf-8", "replace")
        return resp.status, " ".join(text.split())[:500]
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}".rstrip(": ")) from None
    finally:
        conn.close()


__all__ = ["DeliveryFailed", "Target", "check_url", "parse_url", "post", "resolve"]
