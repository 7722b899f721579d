"""Which IP addresses an outbound fetch may connect to.

The rule is an explicit table, not `ipaddress.is_global`/`is_private`: on Python 3.11.7 those flags call
100.64.0.1 neither private nor global, call 192.0.0.8, 224.0.0.1, ::127.0.0.1, 64:ff9b::7f00:1 (NAT64 form of
127.0.0.1) and 2002:7f00:1:: (6to4 form of 127.0.0.1) *global*, and call every ::ffff:a.b.c.d address private
(cpython #113171 / CVE-2024-4032, #119812). The table below is the IANA IPv4 and IPv6 special-purpose address
registries (every entry, globally-reachable or not: a feed or an enclosure has no business on any of them),
plus the deprecated ranges. For IPv6 we also require global unicast (2000::/3) after unwrapping, so an address
space IANA allocates later is refused until someone looks at it.

Addresses that embed an IPv4 address are judged by that address:
  ::ffff:a.b.c.d (IPv4-mapped: a dual-stack socket really dials a.b.c.d),
  64:ff9b::a.b.c.d (NAT64 well-known prefix: the NAT64 gateway dials a.b.c.d),
  2002:AABB:CCDD::/48 (6to4: the relay dials AA.BB.CC.DD).
IPv4-compatible ::a.b.c.d (deprecated, ::/96) is refused outright, which also covers :: and ::1.
"""

from __future__ import annotations

import ipaddress
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*specs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in specs)


BLOCKED_V4: Final = _nets(
    ("0.0.0.0/8", "this-network (0.0.0.0/8)"),
    ("10.0.0.0/8", "private (10/8)"),
    ("100.64.0.0/10", "shared/CGNAT (100.64/10)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata lives here)"),
    ("172.16.0.0/12", "private (172.16/12)"),
    ("192.0.0.0/24", "IETF protocol assignments (192.0.0/24)"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.31.196.0/24", "AS112-v4"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", "private (192.168/16)"),
    ("192.175.48.0/24", "AS112 direct delegation"),
    ("198.18.0.0/15", "benchmarking (198.18/15)"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (240/4, includes broadcast)"),
)

BLOCKED_V6: Final = _nets(
    ("::/128", "unspecified (::, Linux dials ::1)"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy prefix"),
    ("2001::/23", "IETF protocol assignments (Teredo, ORCHID, benchmarking, ...)"),
    ("2001:db8::/32", "documentation"),
    ("2620:4f:8000::/48", "AS112 direct delegation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 SIDs"),
    ("fc00::/7", "unique-local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)

IPV4_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
NAT64_WKP: Final = ipaddress.IPv6Network("64:ff9b::/96")
SIX_TO_FOUR: Final = ipaddress.IPv6Network("2002::/16")
GLOBAL_UNICAST_V6: Final = ipaddress.IPv6Network("2000::/3")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address a mapped / NAT64 / 6to4 address really reaches, with the wrapping's name."""
    if ip in IPV4_MAPPED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-mapped"
    if ip in NAT64_WKP:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip in SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF), "6to4"
    return None


def blocked_reason(ip: IPAddress | str) -> str | None:
    """Why `ip` must not be dialed, or None when it is an ordinary public unicast address."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv4Address):
        for net, why in BLOCKED_V4:
            if ip in net:
                return f"{ip} is {why}"
        return None
    ip = ipaddress.IPv6Address(int(ip))  # forget any scope id
    inner = embedded_ipv4(ip)
    if inner is not None:
        v4, wrapping = inner
        reason = blocked_reason(v4)
        return f"{ip} is {wrapping} of {reason}" if reason else None
    for net6, why in BLOCKED_V6:
        if ip in net6:
            return f"{ip} is {why}"
    if ip not in GLOBAL_UNICAST_V6:
        return f"{ip} is outside IPv6 global unicast (2000::/3)"
    return None


def is_blocked(ip: IPAddress | str) -> bool:
    return blocked_reason(ip) is not None
