"""The DHCP codec: round trips, our DISCOVER/REQUEST/RELEASE read back by scapy's DHCP layer
(the independent decoder), a dnsmasq-shaped OFFER built by scapy decoded by us, RFC 3396 split
options and RFC 2132 §9.3 overload, and every malformed input a RemoteProtocolError naming the
fault (any bytes: that or a message, nothing else)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP

from tunnels.dhcp.leases import DHCPAddressSource
from tunnels.dhcp.messages import (
    BROADCAST_FLAG,
    MAGIC_COOKIE,
    DHCPMessage,
    MessageType,
    Op,
    Opt,
)
from tunnels.errors import RemoteProtocolError, Truncated

MAC = bytes.fromhex("020000000a01")
M = MessageType


def scapy_options(data: bytes) -> dict:
    packet = BOOTP(data)
    return {opt[0]: opt[1] if len(opt) == 2 else opt[1:] for opt in packet[DHCP].options
            if isinstance(opt, tuple)}


def our_messages() -> dict[str, bytes]:
    """What DHCPAddressSource sends: DISCOVER, REQUEST (selecting), RELEASE."""
    from tests.test_dhcp_leases import FakeServer, counter_random, exchange

    source = DHCPAddressSource(MAC, "vpnsrv", low_water=0, random=counter_random())
    server = FakeServer()
    source.acquire(1, 0.0)
    exchange(source, server, 0.0)
    source.release_all(1.0)
    exchange(source, server, 1.0)
    return {m.message_type.name: m.encode() for _, m in server.received}


def test_round_trip_keeps_every_field_and_unknown_options():
    message = DHCPMessage(Op.BOOTREPLY, M.DHCPACK, 0xDEADBEEF, MAC, ciaddr="10.0.0.7",
                          yiaddr="10.0.0.8", siaddr="10.0.0.9", giaddr="10.0.0.10",
                          flags=BROADCAST_FLAG, secs=12, hops=1, sname=b"srv", file=b"boot",
                          options={Opt.SERVER_ID: "10.0.0.1", Opt.LEASE_TIME: 3600,
                                   Opt.RENEWAL_TIME: 1800, Opt.REBINDING_TIME: 3150,
                                   Opt.SUBNET_MASK: "255.255.255.0",
                                   Opt.ROUTER: ("10.0.0.1",), Opt.DNS: ("10.0.0.53", "10.0.0.54"),
                                   Opt.CLIENT_ID: b"\0vpnsrv-1", 43: b"\x01\x02vendor"})
    data = message.encode()
    assert len(data) >= 300 and data[236:240] == MAGIC_COOKIE
    assert data[240:243] == bytes([53, 1, 5])  # the message type first
    decoded = DHCPMessage.decode(data)
    assert decoded == message and decoded.options[43] == b"\x01\x02vendor"
    assert decoded.lease_time == 3600 and decoded.broadcast and decoded.server_id == "10.0.0.1"


def test_scapy_reads_our_discover_request_and_release():
    sent = our_messages()
    assert set(sent) == {"DHCPDISCOVER", "DHCPREQUEST", "DHCPRELEASE"}
    for name, data in sent.items():
        bootp = BOOTP(data)
        options = scapy_options(data)
        assert bootp.op == 1 and bootp.chaddr[:6] == MAC and bootp.xid == 1
        assert options["client_id"] == b"\0vpnsrv-1"
        assert options["message-type"] == {"DHCPDISCOVER": 1, "DHCPREQUEST": 3,
                                           "DHCPRELEASE": 7}[name]
        assert "end" in [o if isinstance(o, str) else o[0] for o in bootp[DHCP].options]
    discover, request, release = (sent[n] for n in ("DHCPDISCOVER", "DHCPREQUEST",
                                                    "DHCPRELEASE"))
    assert BOOTP(discover).flags == 0x8000 and BOOTP(discover).ciaddr == "0.0.0.0"
    assert list(scapy_options(discover)["param_req_list"]) == [1, 3, 6, 51, 58, 59]
    assert scapy_options(discover)["hostname"] == b"vpnsrv-1"
    assert scapy_options(request)["requested_addr"] == "10.0.0.100"
    assert scapy_options(request)["server_id"] == "10.0.0.1"
    assert BOOTP(release).ciaddr == "10.0.0.100" and BOOTP(release).flags == 0
    assert scapy_options(release)["server_id"] == "10.0.0.1"
    assert "requested_addr" not in scapy_options(release)


def test_we_read_an_offer_scapy_builds():
    offer = bytes(BOOTP(op=2, xid=77, yiaddr="10.0.0.100", siaddr="10.0.0.1", chaddr=MAC,
                        flags=0x8000) / DHCP(options=[
                            ("message-type", "offer"), ("server_id", "10.0.0.1"),
                            ("lease_time", 3600), ("renewal_time", 1800),
                            ("rebinding_time", 3150), ("subnet_mask", "255.255.255.0"),
                            ("router", "10.0.0.1"), ("name_server", "10.0.0.53"),
                            ("client_id", b"\0vpnsrv-1"), (252, b"wpad"), "end"]))
    message = DHCPMessage.decode(offer)
    assert message.op is Op.BOOTREPLY and message.message_type is M.DHCPOFFER
    assert (message.xid, message.yiaddr, message.chaddr) == (77, "10.0.0.100", MAC)
    assert (message.server_id, message.lease_time, message.renewal_time,
            message.rebinding_time) == ("10.0.0.1", 3600, 1800, 3150)
    assert message.options[Opt.ROUTER] == ("10.0.0.1",)
    assert message.options[Opt.DNS] == ("10.0.0.53",)
    assert message.client_id == b"\0vpnsrv-1" and message.options[252] == b"wpad"


def test_long_options_are_split_and_joined_rfc_3396():
    value = bytes(range(256)) * 2
    data = DHCPMessage(Op.BOOTREQUEST, M.DHCPINFORM, 1, MAC, options={200: value}).encode()
    assert data.count(bytes([200, 255])) >= 2
    assert DHCPMessage.decode(data).options[200] == value


def test_overloaded_options_in_file_and_sname_are_read():
    base = bytearray(DHCPMessage(Op.BOOTREPLY, M.DHCPOFFER, 1, MAC, yiaddr="10.0.0.2",
                                 options={Opt.OVERLOAD: 3}).encode())
    file_area = bytes([Opt.SERVER_ID, 4, 10, 0, 0, 1, Opt.END]).ljust(128, b"\0")
    sname_area = bytes([Opt.LEASE_TIME, 4, 0, 0, 0, 60, Opt.END]).ljust(64, b"\0")
    base[108:236], base[44:108] = file_area, sname_area
    message = DHCPMessage.decode(bytes(base))
    assert message.server_id == "10.0.0.1" and message.lease_time == 60
    assert message.file == b"" and message.sname == b""


def _valid() -> bytearray:
    return bytearray(DHCPMessage(Op.BOOTREPLY, M.DHCPACK, 5, MAC, yiaddr="10.0.0.2",
                                 options={Opt.SERVER_ID: "10.0.0.1"}).encode())


def _with_options(raw: bytes) -> bytes:
    return bytes(_valid()[:240]) + raw


@pytest.mark.parametrize("data, error", [
    (bytes(100), "shorter than the 236-byte BOOTP header"),
    (bytes([3]) + bytes(_valid()[1:]), "BOOTP op 3"),
    (bytes(_valid()[:2]) + bytes([17]) + bytes(_valid()[3:]), "hardware address length 17"),
    (bytes(_valid()[:236]) + b"\x63\x82\x53\x00" + bytes(_valid()[240:]), "magic cookie"),
    (_with_options(bytes([53, 1, 5])), "without the END option"),
    (_with_options(bytes([53, 1, 5, 54, 9, 1])), "SERVER_ID value"),
    (_with_options(bytes([54, 4, 10, 0, 0, 1, 255])), "no DHCP message type"),
    (_with_options(bytes([53, 1, 9, 255])), "message type 9"),
    (_with_options(bytes([53, 2, 5, 5, 255])), "MESSAGE_TYPE of 2 bytes"),
    (_with_options(bytes([53, 1, 5, 54, 3, 10, 0, 0, 255])), "SERVER_ID of 3 bytes"),
    (_with_options(bytes([53, 1, 5, 6, 6, 1, 2, 3, 4, 5, 6, 255])), "DNS of 6 bytes"),
    (_with_options(bytes([53, 1, 5, 61, 1, 0, 255])), "CLIENT_ID of 1 bytes"),
    (_with_options(bytes([53, 1, 5, 51, 2, 0, 1, 255])), "LEASE_TIME of 2 bytes"),
    (_with_options(bytes([53, 1, 5, 52, 1, 4, 255])), "option overload 4"),
    (_with_options(bytes([53, 1, 5, 52, 1, 1, 255])), "options in file end without"),
])
def test_malformed_input_names_the_fault(data, error):
    with pytest.raises(RemoteProtocolError, match=error):
        DHCPMessage.decode(data)


def test_a_length_past_the_end_is_truncated():
    with pytest.raises(Truncated):
        DHCPMessage.decode(_with_options(bytes([53, 1, 5, 12, 200, 65])))


def test_pad_and_trailing_bytes_after_end_are_accepted():
    message = DHCPMessage.decode(_with_options(bytes([0, 0, 53, 1, 5, 0, 255]) + b"junk"))
    assert message.message_type is M.DHCPACK and message.options == {}


def test_encoding_refuses_impossible_values():
    with pytest.raises(ValueError, match="LEASE_TIME: cannot encode"):
        DHCPMessage(Op.BOOTREQUEST, M.DHCPDISCOVER, 1, MAC,
                    options={Opt.LEASE_TIME: 2**40}).encode()
    with pytest.raises(ValueError, match="chaddr"):
        DHCPMessage(Op.BOOTREQUEST, M.DHCPDISCOVER, 1, bytes(17)).encode()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 360))
def test_any_bytes_decode_or_raise_remote_protocol_error(tail, cut):
    for data in (tail, bytes(_valid()[:240]) + tail, bytes(_valid())[:cut] + tail):
        try:
            DHCPMessage.decode(data)
        except RemoteProtocolError:
            pass
