"""RFC 3948 on UDP 4500: classification (keepalive, non-ESP marker + IKE, ESP), and the
transport-mode checksum repair of §3.1.2 for the inner UDP/TCP after a NAT, checked against
checksums scapy computes for the addresses the packet arrived with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from tunnels.ipsec.ipv4 import address
from tunnels.ipsec.natt import (KEEPALIVE, NON_ESP_MARKER, NattMalformed, classify,
                                fix_transport_checksum, ike_with_marker, keepalive,
                                strip_marker)

IKE_HEADER = bytes(range(1, 29))  # 28 octets, as an ISAKMP header is


def test_single_ff_octet_is_a_keepalive():
    assert keepalive() == KEEPALIVE == b"\xff"
    assert classify(keepalive()) == "keepalive"


def test_non_esp_marker_means_ike():
    payload = ike_with_marker(IKE_HEADER)
    assert payload[:4] == NON_ESP_MARKER and classify(payload) == "ike"
    assert strip_marker(payload) == IKE_HEADER


def test_anything_else_with_a_nonzero_spi_is_esp():
    assert classify(b"\x00\x00\x01\x00" + bytes(40)) == "esp"
    assert classify(b"\xff" * 8) == "esp"  # long enough: an SPI of ff..ff, not a keepalive
    assert classify(memoryview(b"\x12\x34\x56\x78" + bytes(4))) == "esp"


@pytest.mark.parametrize("payload", [b"", b"\xff\xff", b"\x00", bytes(4), b"\x01" * 7],
                         ids=["empty", "two-ff", "one-zero", "marker-only", "seven"])
def test_payloads_of_no_kind_are_malformed(payload):
    with pytest.raises(NattMalformed):
        classify(payload)


ADDRESSES = st.ip_addresses(v=4).map(str)


def segment(proto: str, src: str, dst: str, payload: bytes) -> bytes:
    """A TCP or UDP segment checksummed by scapy over (src, dst)."""
    layer = UDP(sport=1701, dport=1701) if proto == "udp" else TCP(sport=1701, dport=80)
    return bytes(IP(bytes(IP(src=src, dst=dst) / layer / Raw(payload)))[1])


@given(st.sampled_from(["udp", "tcp"]), ADDRESSES, ADDRESSES, ADDRESSES, ADDRESSES,
       st.binary(max_size=64))
def test_incremental_fix_with_nat_oa_equals_a_fresh_checksum(proto, real_src, real_dst,
                                                             seen_src, seen_dst, payload):
    """The client summed its own addresses (NAT-OA); the fix makes the checksum right for
    the addresses of the received packet (RFC 3948 §3.1.2 step 3, RFC 1624)."""
    sent = segment(proto, real_src, real_dst, payload)
    fixed = fix_transport_checksum(6 if proto == "tcp" else 17, sent,
                                   (address(seen_src), address(seen_dst)),
                                   (address(real_src), address(real_dst)))
    expected = segment(proto, seen_src, seen_dst, payload)
    offset = 16 if proto == "tcp" else 6
    got, want = (int.from_bytes(s[offset:offset + 2], "big") for s in (fixed, expected))
    # One's complement has two zeros: 0x0000 and 0xFFFF verify alike (UDP never sends 0).
    assert got == want or (proto == "tcp" and {got, want} == {0, 0xFFFF})
    assert fixed[:offset] == sent[:offset] and fixed[offset + 2:] == sent[offset + 2:]


def test_without_nat_oa_udp_checksum_is_zeroed_and_tcp_recomputed():
    seen = (address("203.0.113.9"), address("198.51.100.1"))
    udp = segment("udp", "10.0.0.5", "198.51.100.1", b"l2tp")
    assert fix_transport_checksum(17, udp, seen, None) == udp[:6] + b"\0\0" + udp[8:]
    tcp = segment("tcp", "10.0.0.5", "198.51.100.1", b"GET /")
    assert fix_transport_checksum(6, tcp, seen, None) == segment("tcp", "203.0.113.9",
                                                                 "198.51.100.1", b"GET /")


def test_what_needs_no_fix_passes_unchanged():
    seen = (address("203.0.113.9"), address("198.51.100.1"))
    no_checksum = b"\x06\xa5\x06\xa5\x00\x0c\x00\x00data"
    assert fix_transport_checksum(17, no_checksum, seen, None) == no_checksum
    assert fix_transport_checksum(1, b"\x08\x00\x12\x34", seen, None) == b"\x08\x00\x12\x34"
    assert fix_transport_checksum(6, b"short", seen, None) == b"short"
    udp = segment("udp", "203.0.113.9", "198.51.100.1", b"x")
    assert fix_transport_checksum(17, udp, seen, seen) == udp
