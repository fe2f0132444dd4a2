"""The Accountant on a virtual clock: local JSON records and RFC 2866 Accounting-Request
attributes for start, interim and stop (read back by our decoder and by scapy), Gigawords past
2^32 octets, terminate causes from our reasons, and the interim timer."""

from __future__ import annotations

import ipaddress
import json

import pytest

from tunnels.accounting import (
    Accountant,
    AccountingSession,
    Counters,
    SessionIds,
    json_line,
    terminate_cause,
)
from tunnels.errors import LocalProtocolError
from tunnels.radius.attributes import (
    AcctAuthentic,
    AcctStatusType,
    AcctTerminateCause,
    Attr,
    NASPortType,
    TunnelType,
)
from tunnels.radius.client import RadiusClient
from tunnels.radius.packet import Code, Packet

WALL = 1_764_000_000.0  # the runtime's clock 0 is this Unix time
SECRET = b"acct-secret"


def session(**kw) -> AccountingSession:
    fields = dict(session_id="674C2A10-000001", username="bob", tunnel_type=TunnelType.L2TP,
                  call_id=4242, client_endpoint="198.51.100.20", server_endpoint="192.0.2.1",
                  framed_address="10.9.0.7", auth_method="mschapv2",
                  class_=(b"gold", b"\x00policy"), authentic=AcctAuthentic.RADIUS)
    fields.update(kw)
    return AccountingSession(**fields)  # type: ignore[arg-type]


def accountant(providers=("local", "radius"), interval: float = 0.0, counters=None):
    return Accountant(providers, counters or (lambda sid: None), nas_identifier="vpnlab",
                      nas_ip_address="192.0.2.1", interim_interval=interval, wall_offset=WALL)


def test_start_record_and_attributes() -> None:
    a = accountant()
    a.start(session(), 100.0)
    [record] = a.take_records()
    assert record == {
        "event": "start", "time": WALL + 100, "timestamp": "2025-11-24T16:01:40+00:00",
        "session_id": "674C2A10-000001", "username": "bob", "tunnel_type": "l2tp",
        "call_id": 4242, "client_endpoint": "198.51.100.20", "server_endpoint": "192.0.2.1",
        "framed_address": "10.9.0.7", "auth_method": "mschapv2", "authentic": "radius",
        "class": ["676f6c64", "00706f6c696379"]}
    [attrs] = a.take_requests()
    assert attrs.get(Attr.ACCT_STATUS_TYPE) == AcctStatusType.START
    assert attrs.get(Attr.ACCT_SESSION_ID) == "674C2A10-000001"
    assert attrs.get(Attr.ACCT_AUTHENTIC) == AcctAuthentic.RADIUS
    assert attrs.get(Attr.USER_NAME) == "bob" and attrs.get(Attr.NAS_PORT) == 4242
    assert attrs.get(Attr.NAS_PORT_TYPE) == NASPortType.VIRTUAL
    assert attrs.get(Attr.TUNNEL_TYPE) == TunnelType.L2TP
    assert attrs.get(Attr.TUNNEL_CLIENT_ENDPOINT) == "198.51.100.20"
    assert attrs.get(Attr.CALLING_STATION_ID) == "198.51.100.20"
    assert attrs.get(Attr.NAS_IDENTIFIER) == "vpnlab"
    assert attrs.get(Attr.FRAMED_IP_ADDRESS) == ipaddress.IPv4Address("10.9.0.7")
    assert attrs.get_all(Attr.CLASS) == [b"gold", b"\x00policy"]  # echoed, in order
    assert attrs.get(Attr.ACCT_DELAY_TIME) == 0
    assert attrs.get(Attr.EVENT_TIMESTAMP) == int(WALL + 100)
    for absent in (Attr.ACCT_SESSION_TIME, Attr.ACCT_INPUT_OCTETS, Attr.ACCT_TERMINATE_CAUSE):
        assert absent not in attrs


def test_stop_with_counters_session_time_and_cause() -> None:
    a = accountant()
    a.start(session(), 100.0)
    a.take_records(), a.take_requests()
    a.stop("674C2A10-000001", Counters(1000, 2000, 10, 20), "user hung up", 160.5)
    [record] = a.take_records()
    assert record["event"] == "stop" and record["session_time"] == 60.5
    assert (record["input_octets"], record["output_octets"], record["input_packets"],
            record["output_packets"]) == (1000, 2000, 10, 20)
    assert record["terminate_cause"] == "user-request"
    [attrs] = a.take_requests()
    assert attrs.get(Attr.ACCT_STATUS_TYPE) == AcctStatusType.STOP
    assert [attrs.get(k) for k in (Attr.ACCT_INPUT_OCTETS, Attr.ACCT_OUTPUT_OCTETS,
                                   Attr.ACCT_INPUT_PACKETS, Attr.ACCT_OUTPUT_PACKETS,
                                   Attr.ACCT_SESSION_TIME)] == [1000, 2000, 10, 20, 60]
    assert attrs.get(Attr.ACCT_TERMINATE_CAUSE) == AcctTerminateCause.USER_REQUEST
    assert Attr.ACCT_INPUT_GIGAWORDS not in attrs
    assert a.active() == []
    a.stop("674C2A10-000001", Counters(), "again", 170.0)  # stopped twice: nothing
    assert a.take_records() == [] and a.take_requests() == []


def test_gigawords_past_2_32_octets_and_packets_capped() -> None:
    a = accountant(("radius",))
    a.start(session(), 0.0)
    big = Counters(5 * 2**32 + 7, 2**32, 2**33, 3)
    a.stop("674C2A10-000001", big, AcctTerminateCause.ADMIN_RESET, 10.0)
    attrs = a.take_requests()[-1]
    assert (attrs.get(Attr.ACCT_INPUT_OCTETS), attrs.get(Attr.ACCT_INPUT_GIGAWORDS)) == (7, 5)
    assert (attrs.get(Attr.ACCT_OUTPUT_OCTETS), attrs.get(Attr.ACCT_OUTPUT_GIGAWORDS)) == (0, 1)
    assert attrs.get(Attr.ACCT_INPUT_PACKETS) == 2**32 - 1
    assert attrs.get(Attr.ACCT_TERMINATE_CAUSE) == AcctTerminateCause.ADMIN_RESET


def test_accounting_request_encodes_and_scapy_reads_it() -> None:
    from scapy.layers.radius import Radius

    a = accountant(("radius",))
    a.start(session(), 0.0)
    a.stop("674C2A10-000001", Counters(3 * 2**32 + 1, 9, 4, 5), "idle timeout", 30.0)
    attrs = a.take_requests()[-1]
    client = RadiusClient([("10.0.0.5", 1812, SECRET)])
    client.account(attrs, 0.0)
    [(dest, datagram)] = client.datagrams_to_send()
    assert dest == ("10.0.0.5", 1813)
    decoded = Packet.decode(datagram, SECRET)  # Request Authenticator verified (RFC 2866 §3)
    assert decoded.code == Code.ACCOUNTING_REQUEST
    assert list(decoded.attributes)[1:] == list(attrs)  # after our Message-Authenticator
    pkt = Radius(datagram)
    fields = {x.type: x.value for x in pkt.attributes}
    assert fields[40] == 2 and fields[42] == 1 and fields[52] == 3 and fields[46] == 30
    assert fields[49] == AcctTerminateCause.IDLE_TIMEOUT and fields[45] == 1
    assert [bytes(x.value) for x in pkt.attributes if x.type == 25] == [b"gold", b"\x00policy"]


@pytest.mark.parametrize("reason, cause", [
    ("user hung up", AcctTerminateCause.USER_REQUEST),
    ("peer disconnected the call: result 3 (ADMINISTRATIVE): user hung up",
     AcctTerminateCause.USER_REQUEST),
    ("peer stopped the control connection", AcctTerminateCause.USER_REQUEST),
    ("peer stopped the control connection (reason 3: the peer is shutting down)",
     AcctTerminateCause.USER_REQUEST),  # the client's machine, not this NAS, shuts down
    ("LCP Terminate-Request from the peer", AcctTerminateCause.USER_REQUEST),
    ("TCP connection closed by the peer", AcctTerminateCause.LOST_CARRIER),
    ("no answer to 5 LCP echo requests", AcctTerminateCause.LOST_CARRIER),
    ("control connection up, no GRE received: is GRE (IP protocol 47) filtered",
     AcctTerminateCause.LOST_CARRIER),
    ("idle timeout (600 s without a datagram)", AcctTerminateCause.IDLE_TIMEOUT),
    ("Session-Timeout of 3600 s reached", AcctTerminateCause.SESSION_TIMEOUT),
    ("closed by administrator", AcctTerminateCause.ADMIN_RESET),
    ("server shutting down", AcctTerminateCause.ADMIN_REBOOT),
    ("encryption required but MPPE was refused: x", AcctTerminateCause.SERVICE_UNAVAILABLE),
    ("IPCP could not be negotiated", AcctTerminateCause.SERVICE_UNAVAILABLE),
    ("something else", AcctTerminateCause.NAS_REQUEST),
    (AcctTerminateCause.PORT_ERROR, AcctTerminateCause.PORT_ERROR),
])
def test_terminate_cause(reason, cause) -> None:
    assert terminate_cause(reason) is cause


def test_interim_updates_from_the_timer() -> None:
    asked = []
    counts = {"674C2A10-000001": Counters(10, 20, 1, 2)}

    def counters(sid: str) -> Counters | None:
        asked.append(sid)
        return counts.get(sid)

    a = accountant(interval=60.0, counters=counters)
    assert a.get_timer() is None
    a.start(session(), 100.0)
    a.take_records(), a.take_requests()
    assert a.get_timer() == 160.0
    a.handle_timer(159.9)
    assert asked == [] and a.take_records() == []
    a.handle_timer(160.0)
    [record] = a.take_records()
    assert record["event"] == "interim" and record["session_time"] == 60.0
    assert record["input_octets"] == 10 and "terminate_cause" not in record
    [attrs] = a.take_requests()
    assert attrs.get(Attr.ACCT_STATUS_TYPE) == AcctStatusType.INTERIM_UPDATE
    assert attrs.get(Attr.ACCT_SESSION_TIME) == 60 and attrs.get_all(Attr.CLASS) == [
        b"gold", b"\x00policy"]
    assert a.get_timer() == 220.0
    a.handle_timer(400.0)  # late: one update, the next on the session's grid
    assert len(a.take_records()) == 1 and a.get_timer() == 460.0
    counts.clear()  # the runtime no longer knows the session: no record
    a.handle_timer(460.0)
    assert a.take_records() == [] and a.get_timer() == 520.0
    a.stop("674C2A10-000001", Counters(), "user hung up", 470.0)
    assert a.get_timer() is None


def test_interim_zero_means_no_timer_and_explicit_interim_still_works() -> None:
    a = accountant(("local",))
    a.start(session(), 0.0)
    assert a.get_timer() is None
    a.interim("674C2A10-000001", Counters(1, 2, 3, 4), 5.0)
    assert [r["event"] for r in a.take_records()] == ["start", "interim"]
    assert a.take_requests() == []
    a.interim("unknown", Counters(), 6.0)
    assert a.take_records() == []


def test_providers_and_nas_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="providers"):
        Accountant(["syslog"], lambda s: None)
    with pytest.raises(LocalProtocolError, match="NAS-Identifier"):
        Accountant(["radius"], lambda s: None)
    a = accountant()
    a.start(session(), 0.0)
    with pytest.raises(LocalProtocolError, match="already started"):
        a.start(session(), 1.0)


def test_local_session_without_address_or_class() -> None:
    a = accountant()
    a.start(session(framed_address=None, class_=(), authentic=AcctAuthentic.LOCAL), 0.0)
    [record] = a.take_records()
    assert record["framed_address"] is None and record["class"] == []
    [attrs] = a.take_requests()
    assert Attr.FRAMED_IP_ADDRESS not in attrs and Attr.CLASS not in attrs
    assert attrs.get(Attr.ACCT_AUTHENTIC) == AcctAuthentic.LOCAL


def test_session_ids_are_unique_per_run_and_json_lines_parse() -> None:
    ids = SessionIds(WALL)
    made = [ids.next() for _ in range(1000)]
    assert len(set(made)) == 1000 and made[0] == f"{int(WALL):08X}-000001"
    assert SessionIds(WALL + 1).next() != made[0]
    a = accountant(("local",))
    a.start(session(), 0.0)
    line = json_line(a.take_records()[0])
    assert line.endswith("\n") and json.loads(line)["event"] == "start"
