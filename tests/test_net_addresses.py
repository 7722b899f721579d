"""The address classifier (app.net.addresses): every blocked range, its edges and its IPv6 wrappings."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.net.addresses import BLOCKED_V4, BLOCKED_V6, blocked_reason, is_blocked

V4_NETS = [net for net, _ in BLOCKED_V4]
V6_NETS = [net for net, _ in BLOCKED_V6]


def mapped(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(0xFFFF_0000_0000 | int(v4))


def nat64(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0x0064_FF9B << 96) | int(v4))


def sixtofour(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1)


def compat(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(int(v4))


WRAPPINGS = [mapped, nat64, sixtofour, compat]


@pytest.mark.parametrize("net", V4_NETS + V6_NETS, ids=str)
def test_first_and_last_address_of_every_blocked_range(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    assert is_blocked(net.network_address), net
    assert is_blocked(net.broadcast_address), net
    if net.num_addresses > 2:
        assert is_blocked(net.network_address + 1), net


@pytest.mark.parametrize("net", V4_NETS, ids=str)
@pytest.mark.parametrize("wrap", WRAPPINGS, ids=lambda f: f.__name__)
def test_ipv6_wrappings_of_blocked_ipv4_edges(net: ipaddress.IPv4Network, wrap: object) -> None:
    for v4 in (net.network_address, net.broadcast_address):
        assert is_blocked(wrap(v4)), f"{wrap}({v4})"  # type: ignore[operator]


blocked_v4 = st.sampled_from(V4_NETS).flatmap(lambda n: st.ip_addresses(network=n))
blocked_v6 = st.sampled_from(V6_NETS).flatmap(lambda n: st.ip_addresses(network=n))


@settings(max_examples=300, derandomize=True)
@given(blocked_v4, st.sampled_from(WRAPPINGS))
def test_property_blocked_ipv4_and_every_wrapping(ip: ipaddress.IPv4Address, wrap: object) -> None:
    assert is_blocked(ip)
    assert is_blocked(wrap(ip))  # type: ignore[operator]


@settings(max_examples=300, derandomize=True)
@given(blocked_v6)
def test_property_blocked_ipv6(ip: ipaddress.IPv6Address) -> None:
    assert is_blocked(ip)


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    return not any(ip in net for net in V4_NETS)


@settings(max_examples=300, derandomize=True)
@given(st.ip_addresses(v=4).filter(_public_v4), st.sampled_from([mapped, nat64, sixtofour]))
def test_property_public_ipv4_allowed_plain_and_wrapped(ip: ipaddress.IPv4Address, wrap: object) -> None:
    # The embedded address is what gets dialed, so a public one stays allowed (compat ::/96 is refused always).
    assert blocked_reason(ip) is None
    assert blocked_reason(wrap(ip)) is None  # type: ignore[operator]


@settings(max_examples=300, derandomize=True)
@given(st.ip_addresses(v=6).filter(lambda ip: ip not in ipaddress.ip_network("2000::/3")))
def test_property_ipv6_outside_global_unicast_refused(ip: ipaddress.IPv6Address) -> None:
    inner = ip.ipv4_mapped or (
        ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in ipaddress.ip_network("64:ff9b::/96") else None
    )
    if inner is not None and _public_v4(inner):
        assert not is_blocked(ip)  # mapped / NAT64 of a public address
    else:
        assert is_blocked(ip)


@pytest.mark.parametrize(
    "ip",
    [
        "0.0.0.0",
        "127.0.0.1",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.255",
        "192.0.0.8",
        "198.18.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::127.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "2002:7f00:1::",
        "2002:c0a8::1",
        "2002:a9fe:a9fe::1",
        "fd00:ec2::254",
        "fe80::1",
        "fe80::1%eth0",
        "fec0::1",
        "ff02::1",
        "5f00::1",
        "2001::1",
        "2001:db8::1",
        "3fff::1",
        "100::1",
    ],
)
def test_regressions_blocked(ip: str) -> None:
    # Several of these are `is_global` True on Python 3.11.7 (research E9): the table must still refuse them.
    assert is_blocked(ip), ip


@pytest.mark.parametrize(
    "ip", ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_allowed(ip: str) -> None:
    assert blocked_reason(ip) is None


def test_stdlib_flags_are_not_enough_on_this_python() -> None:
    """Documents why the table exists: if this starts failing, Python fixed ipaddress (keep the table anyway)."""
    fooled = [ip for ip in ("192.0.0.8", "64:ff9b::7f00:1", "2002:7f00:1::") if ipaddress.ip_address(ip).is_global]
    cgnat = ipaddress.ip_address("100.64.0.1")
    assert fooled or not (cgnat.is_private or cgnat.is_global)
    assert all(is_blocked(ip) for ip in ("192.0.0.8", "64:ff9b::7f00:1", "2002:7f00:1::", "100.64.0.1"))


def test_reason_names_the_wrapping() -> None:
    reason = blocked_reason("::ffff:169.254.169.254")
    assert reason is not None and "IPv4-mapped" in reason and "link-local" in reason
