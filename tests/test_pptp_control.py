"""The PPTP control connection and call FSMs (RFC 2637 §3), a PNS and a PAC paired in memory
with a virtual clock; and the role split checked against real captures."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.pptp import PPTP
from scapy.utils import rdpcap

from tunnels.pptp import messages as m
from tunnels.pptp.control import CallState, ControlConnection, ControlState

T = m.ControlMessageType
DATA = Path(__file__).parent / "data" / "pptp"


class Pair:
    """A PNS (client) and a PAC (server) joined by a lossless in-memory 'TCP' link."""

    def __init__(self, max_calls: int = 0, echo: float = 60.0):
        ids = itertools.count(0x100)
        self.pns = ControlConnection(is_pac=False, echo_interval=echo, echo_timeout=echo,
                                     allocate_call_id=lambda: next(ids))
        self.pac = ControlConnection(is_pac=True, echo_interval=echo, echo_timeout=echo,
                                     max_calls=max_calls,
                                     allocate_call_id=lambda: next(ids) + 0x1000)
        self.streams = {id(self.pns): m.ControlStream(), id(self.pac): m.ControlStream()}
        self.wire: list[tuple[str, m.ControlMessage]] = []
        self.cut = False

    def transfer(self, now: float) -> int:
        moved = 0
        for src, dst, name in ((self.pns, self.pac, "pns"), (self.pac, self.pns, "pac")):
            for data in src.messages_to_send():
                moved += 1
                self.wire.append((name, m.decode(data)))
                if not self.cut:
                    dst.receive(data, self.streams[id(dst)], now)
        return moved

    def settle(self, now: float) -> None:
        for _ in range(50):
            if not self.transfer(now):
                return
        raise AssertionError("no quiescence")

    def sent(self, who: str) -> list[T]:
        return [msg.TYPE for name, msg in self.wire if name == who]


def connected(**kw) -> Pair:
    p = Pair(**kw)
    p.pns.start(0.0)
    p.settle(0.0)
    assert p.pns.state is p.pac.state is ControlState.ESTABLISHED
    return p


def test_outgoing_call_sccrq_sccrp_ocrq_ocrp_sli():
    p = connected()
    p.pns.place_call(7, window=16)
    p.settle(0.0)
    assert [t for _, t in ((n, msg.TYPE) for n, msg in p.wire)] == [
        T.SCCRQ, T.SCCRP, T.OCRQ, T.OCRP, T.SLI]
    pns_call, (pac_call,) = p.pns.calls[7], p.pac.calls.values()
    assert pns_call.state is pac_call.state is CallState.ESTABLISHED
    assert (pns_call.peer_call_id, pac_call.peer_call_id) == (pac_call.call_id, 7)
    assert pac_call.peer_window == 16 and pac_call.serial == pns_call.serial == 1
    assert [e.kind for e in p.pns.events()] == ["connected", "call-established"]
    assert [e.kind for e in p.pac.events()] == ["connected", "call-established"]


def test_call_serial_numbers_increase_per_call():
    p = connected()
    p.pns.place_call(1)
    p.pns.place_call(2)
    p.settle(0.0)
    ocrqs = [msg for n, msg in p.wire if msg.TYPE == T.OCRQ]
    assert [o.call_serial_number for o in ocrqs] == [1, 2]


def test_incoming_call_icrq_icrp_iccn():
    p = connected()
    p.pac.incoming_call(0x2222)
    p.settle(0.0)
    assert p.sent("pac")[-2:] == [T.ICRQ, T.ICCN] and p.sent("pns")[-1] == T.ICRP
    (pns_call,) = p.pns.calls.values()
    assert pns_call.state is p.pac.calls[0x2222].state is CallState.ESTABLISHED
    assert pns_call.peer_call_id == 0x2222
    assert p.pac.calls[0x2222].peer_call_id == pns_call.call_id


def test_incoming_call_refused_when_the_pns_takes_no_calls():
    p = connected()
    p.pns.allocate_call_id = None
    p.pac.incoming_call(0x2222)
    p.settle(0.0)
    icrp = [msg for n, msg in p.wire if msg.TYPE == T.ICRP][0]
    assert icrp.result_code == 3  # Do Not Accept (§2.10)
    assert 0x2222 not in p.pac.calls


def test_max_calls_answers_busy_with_no_resource():
    p = connected(max_calls=1)
    p.pns.place_call(1)
    p.pns.place_call(2)
    p.settle(0.0)
    ocrps = [msg for n, msg in p.wire if msg.TYPE == T.OCRP]
    assert [(o.result_code, o.error_code) for o in ocrps] == [
        (m.CallResult.CONNECTED, 0), (m.CallResult.BUSY, m.GeneralError.NO_RESOURCE)]
    assert list(p.pns.calls) == [1]
    assert "BUSY" in [e for e in p.pns.events() if e.kind == "call-cleared"][0].reason


def test_call_clear_request_answered_by_call_disconnect_notify():
    p = connected()
    p.pns.place_call(5)
    p.settle(0.0)
    p.pns.events(), p.pac.events()
    p.pns.clear_call(5, "user hung up", 1.0)
    assert p.pns.calls[5].state is CallState.CLEARING
    assert p.pns.get_timer() == 11.0  # waits at most clear_timeout for the CDN
    p.settle(1.0)
    assert p.sent("pns")[-1] == T.CCRQ and p.sent("pac")[-1] == T.CDN
    assert not p.pns.calls and not p.pac.calls
    assert [e.kind for e in p.pns.events()] == ["call-cleared"]
    assert [e.kind for e in p.pac.events()] == ["call-cleared"]
    assert p.pns.get_timer() == 61.0  # back to the echo interval (CDN came at 1.0)


def test_call_clear_request_without_answer_clears_locally_after_timeout():
    p = connected()
    p.pns.place_call(5)
    p.settle(0.0)
    p.pns.events()
    p.cut = True
    p.pns.clear_call(5, "user hung up", 1.0)
    p.transfer(1.0)
    p.pns.handle_timer(11.0)
    (event,) = p.pns.events()
    assert event.kind == "call-cleared" and "no Call-Disconnect-Notify" in event.reason
    assert not p.pns.calls and p.pns.state is ControlState.ESTABLISHED


def test_pac_disconnect_reaches_the_pns_with_its_statistics():
    p = connected()
    p.pns.place_call(5)
    p.settle(0.0)
    p.pns.events()
    (pac_id,) = p.pac.calls
    p.pac.clear_call(pac_id, "idle timeout")
    p.settle(1.0)
    (event,) = p.pns.events()
    assert event.kind == "call-cleared" and "idle timeout" in event.reason


def test_stop_control_connection_request_and_reply():
    p = connected()
    p.pns.place_call(5)
    p.settle(0.0)
    p.pns.stop("user quit", m.StopReason.STOP_LOCAL_SHUTDOWN)
    assert p.pns.state is ControlState.WAIT_STOP_REPLY
    p.settle(1.0)
    assert p.sent("pns")[-1] == T.StopCCRQ and p.sent("pac")[-1] == T.StopCCRP
    assert p.pns.state is p.pac.state is ControlState.CLOSED
    assert not p.pns.calls and not p.pac.calls
    assert p.pns.reason == "user quit"
    assert p.pac.reason == "peer stopped the control connection (reason 3: the peer is " \
        "shutting down)"


def test_echo_request_after_idle_interval_is_answered():
    p = connected(echo=10.0)
    assert p.pns.get_timer() == 10.0
    p.pns.handle_timer(10.0)
    p.settle(10.0)
    assert p.sent("pns")[-1] == T.ECHORQ and p.sent("pac")[-1] == T.ECHORP
    assert p.wire[-1][1].identifier == p.wire[-2][1].identifier
    assert p.pns.get_timer() == 20.0 and p.pns.state is ControlState.ESTABLISHED


def test_unanswered_echo_tears_down_with_a_reason():
    p = connected(echo=10.0)
    p.cut = True
    p.pns.handle_timer(10.0)
    p.transfer(10.0)
    assert p.pns.get_timer() == 20.0
    p.pns.handle_timer(20.0)
    assert p.pns.state is ControlState.CLOSED
    (event,) = [e for e in p.pns.events() if e.kind == "closed"]
    assert "Echo-Request" in event.reason and "10s" in event.reason


def test_unsupported_version_gets_result_5_and_close():
    p = Pair()
    p.pac.receive(m.StartControlConnectionRequest(protocol_version=0x0200).encode(),
                  m.ControlStream(), 0.0)
    (reply,) = [m.decode(d) for d in p.pac.messages_to_send()]
    assert reply.result_code == m.StartResult.BAD_PROTOCOL_VERSION == 5
    assert p.pac.state is ControlState.CLOSED


def test_pns_reports_refused_control_connection():
    p = Pair()
    p.pns.start(0.0)
    p.pns.messages_to_send()
    reply = m.StartControlConnectionReply(result_code=m.StartResult.NOT_AUTHORIZED)
    p.pns.receive(reply.encode(), m.ControlStream(), 0.0)
    (event,) = p.pns.events()
    assert event.kind == "closed" and "NOT_AUTHORIZED" in event.reason


def test_second_sccrq_gets_already_exists_and_connection_stays():
    p = connected()
    p.pac.receive(m.StartControlConnectionRequest().encode(), p.streams[id(p.pac)], 0.0)
    (reply,) = [m.decode(d) for d in p.pac.messages_to_send()]
    assert reply.result_code == m.StartResult.ALREADY_EXISTS
    assert p.pac.state is ControlState.ESTABLISHED


def test_malformed_length_sends_stop_with_protocol_reason():
    p = connected()
    bad = bytearray(m.EchoRequest(identifier=1).encode())
    bad[0:2] = (15).to_bytes(2, "big")
    p.pac.receive(bytes(bad), p.streams[id(p.pac)], 0.0)
    (stop,) = [m.decode(d) for d in p.pac.messages_to_send()]
    assert stop.TYPE == T.StopCCRQ and stop.reason == m.StopReason.STOP_PROTOCOL
    assert p.pac.state is ControlState.CLOSED and p.pac.counters["malformed"] == 1


def test_message_out_of_state_is_ignored_and_counted():
    p = Pair()  # PAC still idle: an Echo-Request or OCRQ before SCCRQ
    p.pac.receive(m.OutgoingCallRequest(call_id=1).encode(), m.ControlStream(), 0.0)
    assert p.pac.messages_to_send() == [] and p.pac.counters["ignored"] == 1
    assert p.pac.state is ControlState.IDLE


_ANY_MESSAGE = st.sampled_from(sorted(m.MESSAGES)).flatmap(
    lambda t: st.builds(m.MESSAGES[t], **{
        f: st.integers(0, 3) if f.endswith(("code", "reason", "result")) else
        st.integers(0, 2) for f in _int_fields(m.MESSAGES[t])}))


def _int_fields(cls: type[m.ControlMessage]) -> list[str]:
    return [name for name, code in cls.LAYOUT if code != "64s" and code != "128s"]


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.integers(0, 3), st.lists(_ANY_MESSAGE, max_size=8))
def test_any_message_in_any_state_never_raises(is_pac, warmup, msgs):
    """Every (state, message) cell: a handler or a counted ignore, never an exception."""
    p = connected()
    side = p.pac if is_pac else p.pns
    if warmup == 1:
        side.stop("bye")
    elif warmup == 2:
        p.pns.place_call(1)
    elif warmup == 3:
        side.handle_timer(1e9)
    stream = m.ControlStream()
    for i, msg in enumerate(msgs):
        side.receive(msg.encode(), stream, float(i))
        side.handle_timer(float(i))
        side.messages_to_send()
        side.events()
    assert side.state in ControlState


# -- the role split, from real captures ----------------------------------------------------------

CAPTURES = sorted(DATA.glob("*.*cap"))


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda c: c.name)
def test_captures_show_the_client_as_pns(capture):
    """Who sends what, in real sessions: the side that connects to TCP 1723 sends SCCRQ and
    OCRQ (the PNS role); the side on 1723 answers SCCRP/OCRP (the PAC role)."""
    by_sender: dict[str, set[int]] = {"client": set(), "server": set()}
    streams: dict[str, m.ControlStream] = {}
    for pkt in rdpcap(str(capture)):
        if TCP not in pkt or not bytes(pkt[TCP].payload):
            continue
        if 1723 not in (pkt[TCP].sport, pkt[TCP].dport):
            continue
        who = "client" if pkt[TCP].dport == 1723 else "server"
        raw = bytes(pkt[IP])[pkt[IP].ihl * 4:pkt[IP].len][pkt[TCP].dataofs * 4:]
        for msg in streams.setdefault(who, m.ControlStream()).feed(raw):
            by_sender[who].add(msg.TYPE)
    assert T.SCCRQ in by_sender["client"] and T.SCCRP in by_sender["server"]
    assert T.SCCRQ not in by_sender["server"]
    if T.OCRQ in by_sender["client"] | by_sender["server"]:
        assert T.OCRQ in by_sender["client"] and T.OCRP in by_sender["server"]


def assert_agrees_with_scapy(msg: m.ControlMessage, raw: bytes) -> None:
    """scapy's PPTP layer lists the RFC's fields in wire order, as our LAYOUT does: compare
    every field positionally (fixed strings up to their first NUL)."""
    oracle = PPTP(raw)
    assert (oracle.len, oracle.magic_cookie, oracle.ctrl_msg_type) == (
        len(raw), m.MAGIC_COOKIE, msg.TYPE)
    theirs = [f.name for f in oracle.fields_desc][5:]
    assert len(theirs) == len(msg.LAYOUT), type(oracle).__name__
    for (ours, _), name in zip(msg.LAYOUT, theirs, strict=True):
        value = oracle.getfieldval(name)
        if isinstance(value, bytes):
            value = value.split(b"\0", 1)[0].decode("ascii", "replace")
        assert value == getattr(msg, ours), (msg.TYPE.name, ours, name)


def _random_message(cls: type[m.ControlMessage]) -> st.SearchStrategy[m.ControlMessage]:
    sizes = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF}
    text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", max_size=64)
    return st.builds(cls, **{name: text if code.endswith("s") else st.integers(0, sizes[code])
                             for name, code in cls.LAYOUT})


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(list(m.MESSAGES.values())).flatmap(_random_message))
def test_every_message_we_encode_decodes_in_scapy_with_every_field(msg):
    raw = msg.encode()
    assert m.decode(raw) == msg
    assert_agrees_with_scapy(msg, raw)


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda c: c.name)
def test_every_captured_message_agrees_with_scapy_field_by_field(capture):
    count = 0
    streams: dict[tuple[int, int], m.ControlStream] = {}
    for pkt in rdpcap(str(capture)):
        if TCP not in pkt or 1723 not in (pkt[TCP].sport, pkt[TCP].dport):
            continue
        raw = bytes(pkt[IP])[pkt[IP].ihl * 4:pkt[IP].len][pkt[TCP].dataofs * 4:]
        stream = streams.setdefault((pkt[TCP].sport, pkt[TCP].dport), m.ControlStream())
        for msg in stream.feed(raw):
            assert_agrees_with_scapy(msg, msg.encode())
            count += 1
    assert count >= 4


@pytest.mark.parametrize("module", ["tunnels/pptp/messages.py", "tunnels/pptp/control.py",
                                    "tunnels/gre/header.py", "tunnels/gre/session.py",
                                    "tunnels/stacks/pptp.py"])
def test_cores_are_sans_io(module):
    """No socket, event loop, clock, process or thread in a protocol core (style rule 1)."""
    import ast

    tree = ast.parse((Path(__file__).parent.parent / module).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not imported & {"socket", "asyncio", "time", "subprocess", "select", "threading",
                           "selectors", "datetime", "scapy"}
