"""Outbound HTTP for webhooks, behind an address guard. Plain Python, no Django.

A webhook URL names a host this server connects to. Unguarded, whoever edits a
subscription could aim it at the server's own network (the database, a cloud metadata
service, an internal page) and read the effect in the delivery log. The guard:

- Only ``http`` and ``https``; no credentials in the URL.
- The host is resolved once, with ``socket.getaddrinfo``, the way a connection would
  resolve it: decimal, octal and hex spellings of an address (``2130706433``,
  ``0177.0.0.1``, ``0x7f.1``) come out as the address they mean. Every address the
  host resolves to must be public: not loopback, private, link-local, unspecified,
  multicast, reserved or otherwise not globally routable, nor an IPv6 address that
  embeds such an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64).
- The connection goes to the address that was checked (pinned): no second lookup,
  so a DNS answer that changes between check and connect (rebinding) cannot redirect
  it. TLS still verifies the certificate against the host name.
- Redirects are never followed automatically: at most ``max_redirects`` are followed
  by hand, each target checked like the first.

``allow_private`` (the setting ``WEBHOOK_ALLOW_PRIVATE_ADDRESSES``) skips the address
check only; schemes, pinning and the redirect limit stay.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = {"http": 80, "https": 443}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
# Enough of a response to see its status; receivers have nothing else to tell us.
MAX_RESPONSE_BYTES = 64 * 1024
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefused(Exception):
    """The URL may not be called: bad scheme, unresolvable or non-public host."""


class HostUnresolvable(AddressRefused):
    """The host name did not resolve (may be temporary)."""


class TooManyRedirects(Exception):
    pass


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``, pinned) and what to ask for."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    address: str


@dataclass(frozen=True)
class Response:
    status: int
    url: str  # the URL that gave this answer (after redirects)


def sign(*, secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value: ``sha256=`` and the hex HMAC-SHA256, keyed with the
    subscription's secret, of ``"<timestamp>." + body``."""
    message = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def address_refusal(ip: IPAddress) -> str | None:
    """Why a connection to ``ip`` is refused; None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_refusal(embedded)
            if inner is not None:
                return f"{inner} (embedded in {ip})"
            if ip.ipv4_mapped is not None:
                return None  # the IPv4 address itself, reached over a dual stack
    for kind in ("loopback", "private", "link_local", "unspecified", "multicast", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"{ip} is a {kind.replace('_', '-')} address"
    if not ip.is_global:
        return f"{ip} is not a globally routable address"
    return None


def check_url(url: str, *, allow_private: bool) -> Target:
    """Parse, resolve and check ``url``; the target to connect to. Raises AddressRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise AddressRefused("only http and https URLs are allowed")
    host = parts.hostname
    if not host or any(c.isspace() or ord(c) < 32 for c in host):
        raise AddressRefused("the URL has no valid host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("credentials in the URL are not allowed")
    port = port or SCHEMES[scheme]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolvable(f"cannot resolve {host}: {exc}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not allow_private:
            refusal = address_refusal(ip)
            if refusal is not None:
                raise AddressRefused(f"{host} resolves to a non-public address: {refusal}")
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise HostUnresolvable(f"cannot resolve {host}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(
        url=url, scheme=scheme, host=host, port=port, path=path, address=str(addresses[0])
    )


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Talks to ``address`` while naming ``host`` (the Host header)."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to ``address``, verifying the certificate for ``host``."""

    def __init__(
        self, host: str, port: int, *, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def _connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    if target.scheme == "https":
        return _PinnedHTTPSConnection(
            target.host,
            target.port,
            address=target.address,
            timeout=timeout,
            context=ssl.create_default_context(),
        )
    return _PinnedHTTPConnection(target.host, target.port, address=target.address, timeout=timeout)


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    allow_private: bool,
    timeout: float,
    max_redirects: int = 3,
) -> Response:
    """POST ``body`` to ``url`` through the guard, following at most ``max_redirects``
    redirects by hand (the same POST to each checked target). Raises AddressRefused,
    TooManyRedirects, or OSError / http.client.HTTPException for network failures."""
    for _hop in range(max_redirects + 1):
        target = check_url(url, allow_private=allow_private)
        conn = _connection(target, timeout)
        try:
            conn.request("POST", target.path, body=body, headers=headers)
            answer = conn.getresponse()
            answer.read(MAX_RESPONSE_BYTES)
            status, location = answer.status, answer.getheader("Location")
        finally:
            conn.close()
        if status in REDIRECT_STATUSES and location:
            url = urljoin(url, location.strip())
            continue
        return Response(status=status, url=url)
    raise TooManyRedirects(f"more than {max_redirects} redirects")
