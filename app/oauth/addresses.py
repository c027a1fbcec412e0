"""Which addresses a fetch of someone else's URL may connect to: global unicast.

An allow-list, not a list of what to refuse: IPv6 only inside ``2000::/3``
(RFC 4291 §2.4, IANA's IPv6 address space), IPv4 only below ``224.0.0.0``; and
in both, nothing in IANA's special-purpose address registries (RFC 6890), not
even the blocks those registries call globally reachable (anycast for
protocols such as PCP, TURN, AMT and AS112): no document lives there.
Python's ``is_global`` is asked too, but is not relied on: it counts
``fec0::/10``, ``192.0.0.8`` and ``::ffff:0:0:0/96`` as global.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Global unicast IPv6 (RFC 4291 §2.4; RFC 3513 §2.4 retired ``fec0::/10``).
GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
#: Unicast IPv4: below multicast's ``224.0.0.0/4`` (RFC 5771) and class E.
UNICAST_V4 = tuple(
    ipaddress.ip_network(block) for block in ("0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3")
)
#: IANA IPv4 Special-Purpose Address Registry (RFC 6890 §2.2.2, updated).
SPECIAL_V4 = tuple(
    ipaddress.ip_network(block)
    for block in (
        "0.0.0.0/8",  # "this network" (RFC 791)
        "10.0.0.0/8",  # private use (RFC 1918)
        "100.64.0.0/10",  # shared address space (RFC 6598)
        "127.0.0.0/8",  # loopback (RFC 1122)
        "169.254.0.0/16",  # link local (RFC 3927)
        "172.16.0.0/12",  # private use (RFC 1918)
        "192.0.0.0/24",  # IETF protocol assignments (RFC 6890), 192.0.0.8 in it
        "192.0.2.0/24",  # documentation (RFC 5737)
        "192.31.196.0/24",  # AS112-v4 (RFC 7535)
        "192.52.193.0/24",  # AMT (RFC 7450)
        "192.88.99.0/24",  # deprecated 6to4 relay anycast (RFC 7526)
        "192.168.0.0/16",  # private use (RFC 1918)
        "192.175.48.0/24",  # direct delegation AS112 service (RFC 7534)
        "198.18.0.0/15",  # benchmarking (RFC 2544)
        "198.51.100.0/24",  # documentation (RFC 5737)
        "203.0.113.0/24",  # documentation (RFC 5737)
    )
)
#: IANA IPv6 Special-Purpose Address Registry, the blocks inside ``2000::/3``
#: (those outside it are refused already).
SPECIAL_V6 = tuple(
    ipaddress.ip_network(block)
    for block in (
        "2001::/23",  # IETF protocol assignments (RFC 2928): Teredo, ORCHID, ...
        "2001:db8::/32",  # documentation (RFC 3849)
        "2002::/16",  # 6to4 (RFC 3056), deprecated (RFC 7526): a relay we do not know
        "2620:4f:8000::/48",  # direct delegation AS112 service (RFC 7534)
        "3fff::/20",  # documentation (RFC 9637)
    )
)
#: NAT64's well-known prefix (RFC 6052 §2.1): the last 32 bits are IPv4.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches, if it is a form that carries one.

    IPv4-mapped (RFC 4291 §2.5.5.2) and NAT64 (RFC 6052): where the packets
    go is the IPv4 address, so that is what is judged. The tunnels, 6to4
    (RFC 3056) and Teredo (RFC 4380), are refused whatever they carry: both
    are deprecated, and they go through relays nobody here chose.
    """
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _global_unicast(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        unicast = any(address in block for block in UNICAST_V4)
        special = SPECIAL_V4
    else:
        unicast = address in GLOBAL_UNICAST_V6
        special = SPECIAL_V6
    return (
        unicast and not any(address in block for block in special) and address.is_global
    )


def address_is_public(text: str, allow_loopback: bool = False) -> bool:
    """Whether a fetch may connect to ``text``: a global unicast address.

    ``allow_loopback`` (development and tests) lets loopback through too.
    """
    try:
        address: IPAddress = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        address = carried_ipv4(address) or address
    if allow_loopback and address.is_loopback:
        return True
    return _global_unicast(address)
