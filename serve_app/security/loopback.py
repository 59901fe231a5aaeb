"""Where anonymous access may be served: loopback addresses only."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def check_anonymous_bind(proxy_host: str | None) -> None:
    """Refuse to run without keys when the HTTP proxy listens beyond this machine."""
    if not is_loopback(proxy_host):
        raise RuntimeError(
            f"auth.enabled is false but the HTTP proxy binds {proxy_host!r}: anonymous access "
            "is only allowed when http_options.host is 127.0.0.1 or localhost; turn API keys "
            "on (auth.enabled: true) to listen on other addresses"
        )
