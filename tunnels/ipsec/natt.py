"""UDP encapsulation of ESP through NATs (RFC 3948): what arrives on UDP 4500, the non-ESP
marker, NAT-keepalives, and the inner TCP/UDP checksum of transport mode after NAT.

One UDP port carries three things (§2): a NAT-keepalive is the single octet 0xFF (§2.3), IKE is
preceded by the 4-octet non-ESP marker (zeros where ESP's SPI would be, and an SPI is never 0,
RFC 4303 §2.1) (§2.2), and everything else is ESP (§2.1).
"""

from __future__ import annotations

from typing import Literal

from tunnels.errors import RemoteProtocolError
from tunnels.ipsec.ipv4 import PROTO_TCP, PROTO_UDP, add16, ones_sum, transport_checksum

NAT_T_PORT = 4500
NON_ESP_MARKER = b"\0\0\0\0"
KEEPALIVE = b"\xff"
_ESP_MIN = 8  # SPI + sequence number; the ESP layer checks the rest

Kind = Literal["keepalive", "ike", "esp"]


class NattMalformed(RemoteProtocolError):
    """A UDP 4500 payload that is none of the three kinds: silently discarded."""


def classify(payload: bytes | memoryview) -> Kind:
    """RFC 3948 §2: which of keepalive, IKE (after the marker) or ESP a UDP 4500 payload is."""
    if len(payload) == 1 and payload[0] == 0xFF:
        return "keepalive"
    if len(payload) < _ESP_MIN:
        # 1..7 octets: too short for ESP, and IKE needs the marker plus a 28-octet header.
        raise NattMalformed(f"{len(payload)}-octet UDP 4500 payload")
    if payload[:4] == NON_ESP_MARKER:
        return "ike"
    return "esp"


def ike_with_marker(ike: bytes) -> bytes:
    """An IKE message as sent on port 4500 (§2.2)."""
    return NON_ESP_MARKER + ike


def strip_marker(payload: bytes) -> bytes:
    """The IKE message of a payload `classify` called "ike"."""
    return payload[4:]


def keepalive() -> bytes:
    """The NAT-keepalive payload (§2.3); the receiver ignores it."""
    return KEEPALIVE


_CHECKSUM_OFFSET = {PROTO_UDP: 6, PROTO_TCP: 16}


def _address_sum(*addresses: bytes) -> int:
    return add16(*(ones_sum(a) for a in addresses))


def fix_transport_checksum(proto: int, segment: bytes, received: tuple[bytes, bytes],
                           original: tuple[bytes, bytes] | None) -> bytes:
    """The inner TCP/UDP segment of transport-mode ESP after a NAT (RFC 3948 §3.1.2).

    The sender computed the checksum over its own addresses; the packet arrives with the
    NAT's. With the peer's original addresses (NAT-OA, RFC 3947 §5.2) the checksum is moved
    incrementally from `original` to `received` (RFC 1624 eqn. 3). Without them, a UDP
    checksum is zeroed, which IPv4 allows; a TCP checksum is recomputed, as good as not
    checking it, which §3.1.2 allows for integrity-protected transport mode. Other
    protocols, short segments and UDP without a checksum pass unchanged.
    """
    offset = _CHECKSUM_OFFSET.get(proto)
    if offset is None or len(segment) < offset + 2:
        return segment
    old = int.from_bytes(segment[offset:offset + 2], "big")
    if proto == PROTO_UDP and old == 0:
        return segment
    if original is None:
        if proto == PROTO_UDP:
            new = 0
        else:
            zeroed = segment[:offset] + b"\0\0" + segment[offset + 2:]
            new = transport_checksum(received[0], received[1], proto, zeroed)
    elif original == received:
        return segment
    else:
        removed = 0xFFFF - _address_sum(*original)  # ~m: one's complement negation
        new = ~add16(~old & 0xFFFF, removed, _address_sum(*received)) & 0xFFFF
        if new == 0 and proto == PROTO_UDP:
            new = 0xFFFF
    return segment[:offset] + new.to_bytes(2, "big") + segment[offset + 2:]
