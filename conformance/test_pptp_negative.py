"""Negative cases: bad credentials and bad control input each get the RFC's answer, and the
server keeps serving the tunnel that is already up (style.md 9 on the wire)."""

from __future__ import annotations

import time

import pytest

from conformance import pptp_wire as w
from conformance.plugin import start_scenario
from topologies import remote_access as ra

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("user, password, code", [("alice", "wrong", "691"),
                                                  ("mallory", "x", "691"),
                                                  ("carol", ra.PASSWORD, "649")],
                         ids=["wrong-password", "unknown-user", "no-dialin-permission"])
def test_bad_credentials_get_691_and_server_keeps_serving(user, password, code):
    with start_scenario("remote-access", nat="pptp-helper", clients="2") as lab:
        assert ra.status(lab, "client2").get("state") == "up", _trace(lab, "client2")
        lab.node("client").daemons["vpnclient"].stop()
        ra.connect(lab, "client", lab.params, user=user, password=password)
        daemon = lab.node("client").daemons["vpnclient"]
        assert daemon.wait(20) == 1
        down = [e for e in w.events(lab, "client") if e["event"] == "tunnel-down"]
        assert down and code in down[-1]["reason"]
        failed = [e for e in w.events(lab, "vpnsrv") if e["event"] == "AuthenticationFailed"]
        assert failed and str(failed[-1]["error_code"]) == code
        assert not lab.node("client").run(["ip", "link", "show", "vpn0"]).ok
        # the other client is still served
        assert lab.node("client2").run(["ping", "-c1", "-W2", ra.FILESERVER]).ok, \
            _trace(lab, "client2")


def _trace(lab, name: str) -> str:
    """What a failure needs to be understood from CI's output alone: the client's status and
    its last events, and the server's last events."""
    tail = [e for e in w.events(lab, name)][-8:]
    server = [e for e in w.events(lab, "vpnsrv")][-12:]
    return f"{name} status {ra.status(lab, name)}\n{name} events {tail}\nserver events {server}"


@pytest.fixture(scope="module")
def server_lab():
    with start_scenario("remote-access") as lab:
        yield lab


@pytest.fixture
def still_serving(server_lab):
    """After each case: the tunnel that was up still carries traffic."""
    yield server_lab
    ping = server_lab.node("client").run(["ping", "-c1", "-W2", ra.FILESERVER])
    assert ping.ok, "the server stopped serving the established tunnel"
    assert ra.status(server_lab, "client")["state"] == "up"


def test_unsupported_version_gets_result_5(still_serving):
    """RFC 2637 §2.2: result 5, the highest version we support in Protocol Version."""
    bad = w.SCCRQ_HEX[:24] + "0200" + w.SCCRQ_HEX[28:]
    replies = w.messages(w.raw_control(still_serving, [bad])[0])
    assert replies and replies[0].ctrl_msg_type == w.SCCRP
    assert replies[0].result_code == 5 and replies[0].protocol_version == 0x0100


def test_second_sccrq_gets_already_exists(still_serving):
    """§2.2: result 3, "command channel already exists"."""
    replies = w.messages(w.raw_control(still_serving, [w.SCCRQ_HEX, w.SCCRQ_HEX])[0])
    assert [int(r.result_code) for r in replies[:2]] == [1, 3]


@pytest.mark.parametrize("payload", [
    "0005" + "00" * 30,  # length below the 12-byte header
    "006400011a2b3c4d00010000" + "00" * 88,  # an SCCRQ framed at 100 bytes instead of 156
    "00100001deadbeef0001000000000000",  # wrong magic cookie
], ids=["length-below-header", "length-wrong-for-type", "bad-magic-cookie"])
def test_malformed_control_input_stops_the_control_connection(still_serving, payload):
    """§2: loss of synchronisation closes the control connection (with a
    Stop-Control-Connection-Request when there is something to say)."""
    data, closed = w.raw_control(still_serving, [payload])
    replies = w.messages(data)
    assert closed or replies, "neither an answer nor a close"
    if replies:
        assert replies[0].ctrl_msg_type == w.STOPCCRQ and replies[0].magic_cookie == \
            w.MAGIC_COOKIE


def test_ocrq_before_sccrq_is_not_answered_with_a_call(still_serving):
    """A call request on a connection that was never started gets no call (§3.1)."""
    ocrq = ("00a800011a2b3c4d0007000012340001" + "00000000" + "ffffffff" + "00000003" +
            "00000003" + "0040" + "0000" + "0000" + "0000" + "00" * 64 + "00" * 64)
    replies = w.messages(w.raw_control(still_serving, [ocrq])[0])
    assert not [r for r in replies if r.ctrl_msg_type == w.OCRP and r.result_code == 1]


GARBAGE_GRE = [
    "",  # empty
    "30",  # one byte
    "3001880b",  # truncated before the key
    "3002880b00040001deadbeef",  # version 2
    "3001080000040001deadbeef",  # protocol 0x0800, not PPP
    "3001880b0004ffff00000001" + "ff03c021",  # unknown Call ID
    "3001880bffff0001" + "00000001",  # payload length far beyond the packet
    "b081880b0004000100000001",  # C and A bits on with a short header
]


def test_garbage_gre_is_counted_and_dropped(still_serving):
    """Malformed GRE never crashes the server: each packet is dropped and counted, and the
    established call goes on (style.md 9 on a live daemon)."""
    lab = still_serving
    before = ra.status(lab, "vpnsrv").get("stack", {}).get("counters", {})
    server = lab.address("vpnsrv", "isp")
    script = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_RAW,47)\n"
              f"for p in {GARBAGE_GRE!r}*5: s.sendto(bytes.fromhex(p),('{server}',0))\n")
    lab.node("client").run(["python3", "-c", script], check=True)
    daemon = lab.node("vpnsrv").daemons["vpnserver"]
    assert daemon.running()
    deadline = time.monotonic() + 5
    while True:  # the status file is rewritten every second
        after = ra.status(lab, "vpnsrv").get("stack", {}).get("counters", {})
        dropped = sum(after.get(k, 0) - before.get(k, 0) for k in
                      ("gre_malformed", "gre_unknown_call", "gre_wrong_source"))
        if dropped >= 5 * len(GARBAGE_GRE) - 5 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    # the empty packet may be refused by the sender's kernel; everything else arrived
    assert dropped >= 5 * (len(GARBAGE_GRE) - 1), (before, after)
    assert ra.status(lab, "vpnsrv").get("pump", {}).get("stack_errors", 0) == 0
