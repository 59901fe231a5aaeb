"""An SSRF guard for URLs the service is asked to reach (image URLs, webhook callbacks).

`UrlPolicy.check` parses and normalises a URL, resolves its host once and checks every
address; the caller then connects to one of `CheckedUrl.addresses` (never re-resolving
the name), so a DNS answer cannot change between the check and the connection.

Refused: schemes other than https (and http when `allow_http`), credentials in the URL,
ambiguous numeric hosts (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`: resolvers
accept them, so we refuse them outright), and any host with at least one non-public
address: not `is_global`, or in `DENIED_NETWORKS`, checked on the address itself and on
the IPv4 address embedded in IPv4-mapped, IPv4-compatible, NAT64, 6to4 and Teredo forms.

The allowlist is for internal hosts the operator trusts (a storage gateway, a test
fixture server): entries are `host` or `host:port` (`[v6]:port` for IPv6 literals),
matched exactly and case-insensitively against the URL's host, ignoring one trailing
dot (no wildcards, no CIDR:
a range would let any name that resolves into it through). An allowlisted host skips
the address check only; the scheme rule still applies, so http needs `allow_http`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from serve_app.errors import ErrorCode, InvalidRequestError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Iterable[str]]

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

# Belt and braces over `is_global`, whose tables differ between Python releases.
DENIED_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, incl. the 169.254.169.254 metadata service
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast
        "::/96",  # unspecified, loopback, IPv4-compatible
        "::ffff:0:0/96",  # IPv4-mapped: whatever it maps to, connect over IPv4 instead
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/32",  # Teredo
        "2001:db8::/32",
        "fc00::/7",  # unique local, incl. fd00:ec2::254 (AWS metadata over IPv6)
        "fe80::/10",
        "fec0::/10",  # old site-local
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
# WHATWG: a host whose last label is a number is an IPv4 address in some notation.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4, Teredo, compat)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def is_public_address(address: IPAddress) -> bool:
    """True when neither the address nor an IPv4 address embedded in it is internal."""
    if getattr(address, "scope_id", None):
        return False
    embedded = embedded_ipv4(address)
    return all(
        candidate.is_global
        and not candidate.is_multicast
        and not any(candidate in network for network in DENIED_NETWORKS)
        for candidate in ([address] if embedded is None else [address, embedded])
    )


def system_resolver(host: str, port: int) -> list[str]:
    """Every address getaddrinfo gives for host (IPv4 and IPv6), as text."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class CheckedUrl:
    """A URL split as we will use it; `addresses` are filled in once checked."""

    url: str  # scheme://host[:port]/path?query, normalised, no credentials or fragment
    scheme: str
    host: str  # lower case, IDNA-encoded; an IPv6 literal without brackets
    port: int
    target: str  # path and query, at least "/"
    allowlisted: bool
    addresses: tuple[IPAddress, ...] = ()

    @property
    def host_header(self) -> str:
        return _netloc(self.scheme, self.host, self.port)


class UrlPolicy:
    """Which URLs may be fetched; raises `InvalidRequestError` with codes `url_invalid`,
    `url_forbidden` or `url_unresolvable` (callers may re-map them)."""

    def __init__(
        self,
        *,
        allow_http: bool = False,
        allowlist: Iterable[str] = (),
        resolver: Resolver = system_resolver,
    ):
        self.allow_http = allow_http
        self.resolver = resolver
        self.allowlist = frozenset(_allowlist_entry(entry) for entry in allowlist)

    def parse(self, url: str, *, param: str) -> CheckedUrl:
        """Every check that needs no DNS: syntax, scheme, credentials, literal forms."""
        if len(url) > MAX_URL_LENGTH:
            raise _invalid(param, f"the URL is longer than {MAX_URL_LENGTH} characters")
        if any(char <= " " or char in "\x7f\\" for char in url):
            # urlsplit quietly drops some of these; other parsers read them differently.
            raise _invalid(param, "the URL contains whitespace, control characters or '\\'")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise _invalid(param, "the URL is malformed") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or (scheme == "http" and not self.allow_http):
            allowed = "http or https" if self.allow_http else "https"
            raise _forbidden(param, f"the URL's scheme must be {allowed}")
        if "@" in parts.netloc:
            raise _forbidden(param, "credentials in URLs are not allowed")
        host = _normalise_host(parts.hostname or "", param)
        port = DEFAULT_PORTS[scheme] if port is None else port
        if port == 0:
            raise _invalid(param, "the URL's port must be between 1 and 65535")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return CheckedUrl(
            url=f"{scheme}://{_netloc(scheme, host, port)}{target}",
            scheme=scheme,
            host=host,
            port=port,
            target=target,
            allowlisted=(host, None) in self.allowlist or (host, port) in self.allowlist,
        )

    def check(self, url: str, *, param: str) -> CheckedUrl:
        """`parse`, resolve the host once, and refuse unless every address is public."""
        checked = self.parse(url, param=param)
        addresses = self._resolve(checked, param)
        if not checked.allowlisted and not all(map(is_public_address, addresses)):
            raise _forbidden(param, "the URL's host resolves to a non-public address")
        return replace(checked, addresses=addresses)

    async def check_async(self, url: str, *, param: str) -> CheckedUrl:
        """`check` with DNS in a worker thread (getaddrinfo blocks)."""
        return await asyncio.to_thread(self.check, url, param=param)

    def _resolve(self, checked: CheckedUrl, param: str) -> tuple[IPAddress, ...]:
        try:
            return (ipaddress.ip_address(checked.host),)
        except ValueError:
            pass
        try:
            answers = list(self.resolver(checked.host, checked.port))
        except (OSError, UnicodeError):
            raise _unresolvable(param) from None
        addresses: dict[IPAddress, None] = {}
        for answer in answers:
            try:
                addresses[ipaddress.ip_address(answer)] = None
            except ValueError:
                # A scoped or odd answer: refuse rather than guess where it leads.
                raise _forbidden(param, "the URL's host resolves to a non-public address") from None
        if not addresses:
            raise _unresolvable(param)
        return tuple(addresses)


def _netloc(scheme: str, host: str, port: int) -> str:
    netloc = f"[{host}]" if ":" in host else host
    return netloc if port == DEFAULT_PORTS[scheme] else f"{netloc}:{port}"


def _normalise_host(hostname: str, param: str) -> str:
    if not hostname:
        raise _invalid(param, "the URL has no host")
    if "%" in hostname:  # IPv6 zone ids and percent-encoded names
        raise _invalid(param, "the URL's host is malformed")
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    try:
        name = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _invalid(param, "the URL's host is malformed") from None
    if not _HOST_NAME.fullmatch(name):
        raise _invalid(param, "the URL's host is malformed")
    name = name.removesuffix(".")  # the same name to DNS; one spelling for the allowlist
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        raise _forbidden(param, "the URL's host is a numeric address in an ambiguous form")
    return name


def _allowlist_entry(entry: str) -> tuple[str, int | None]:
    """'host', 'host:port', '[v6]' or '[v6]:port' -> (normalised host, port or None)."""
    parts = urlsplit("//" + entry.strip())
    port = parts.port  # ValueError when out of range
    if not parts.hostname or parts.netloc != entry.strip() or "@" in entry:
        raise ValueError(f"allowlist entry must be 'host' or 'host:port', got {entry!r}")
    try:
        return _normalise_host(parts.hostname, "allowlist"), port
    except InvalidRequestError as exc:
        raise ValueError(f"allowlist entry {entry!r}: {exc.message}") from None


def _invalid(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", code=ErrorCode.URL_INVALID, param=param)


def _forbidden(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", code=ErrorCode.URL_FORBIDDEN, param=param)


def _unresolvable(param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{param}: the URL's host could not be resolved",
        code=ErrorCode.URL_UNRESOLVABLE,
        param=param,
    )
