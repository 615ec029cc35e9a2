"""Which addresses may name another machine of the fleet (pure: no lookup, no socket)."""

from __future__ import annotations

import ipaddress
import re

# RFC 1123 host names: labels of letters, digits and hyphens, not starting or ending with a hyphen.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def remote_address_problem(address: str) -> str | None:
    """Why `address` cannot be where the router reaches another host (None: it can). A wildcard binds every
    interface but names none; a loopback address (or `localhost`) is the router's own machine."""
    a = address.strip()
    if a.startswith("[") and a.endswith("]"):
        a = a[1:-1]
    try:
        ip = ipaddress.ip_address(a)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_unspecified:
            return "a wildcard address names no machine; give the address the router dials to reach that host"
        if ip.is_loopback:
            return "a loopback address is the router's own machine, not another host; use fleet.replicas for this one"
        if ip.is_multicast:
            return "a multicast address names no single machine"
        return None
    if a.lower() == "localhost" or a.lower().endswith(".localhost"):
        return "localhost is the router's own machine, not another host; use fleet.replicas for this one"
    labels = a.rstrip(".").split(".")
    if len(a) > 253 or not all(_LABEL.match(x) for x in labels):
        return "not an IP address or a host name (letters, digits, hyphens and dots)"
    return None
