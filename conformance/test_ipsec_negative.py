"""Negative cases for the L2TP/IPsec server: a replayed ESP packet, a tampered one, L2TP in
clear, a wrong pre-shared key and a client without NAT-T behind the NAT, each sent from
inside a node and each dropped, counted or refused with a named reason, while the server keeps
serving the client whose tunnel is up (its ping goes through after every case).
"""

from __future__ import annotations

import time

import pytest

from conformance import ipsec_wire as w
from conformance import l2tp_wire
from conformance.plugin import start_scenario
from topologies import remote_access as ra

pytestmark = pytest.mark.netns


NAT_T = pytest.mark.scenario("remote-access", protocol="l2tp-ipsec", nat="pptp-helper",
                             clients="2")  # `client` stays up, `client2` reconnects
DIRECT = pytest.mark.scenario("remote-access", protocol="l2tp-ipsec")
ESP_PATHS = pytest.mark.parametrize("path", [pytest.param("nat-t", marks=NAT_T),
                                             pytest.param("direct", marks=DIRECT)])


@pytest.fixture
def lab(scenario_lab):
    """The module's lab of the case's path (ESP in UDP 4500 through the NAT, or IP protocol
    50 straight); after each case: the established tunnel still carries traffic, and no input
    made the server's pump count a stack error."""
    yield scenario_lab
    ping = scenario_lab.node("client").run(["ping", "-c1", "-W2", ra.FILESERVER])
    assert ping.ok, "the server stopped serving the established tunnel"
    assert ra.status(scenario_lab, "client")["state"] == "up"
    assert ra.status(scenario_lab, "vpnsrv")["pumps"]["l2tp-ipsec"]["stack_errors"] == 0


def _client_esp(lab, name: str = "client") -> list[w.Datagram]:
    """ESP the client sent, from its own capture (its address and ports before the NAT)."""
    capture = w.snapshot(lab, name, lab.spec.neighbours(name)[0])
    return [d for d in w.of_kind(w.wire(capture), "esp", "esp-udp")
            if d.src == lab.address(name)]


def _server_seqs(lab, spi: int) -> set[int]:
    return {d.seq for d in w.of_kind(w.wire(w.snapshot(lab)), "esp", "esp-udp") if d.spi == spi}


@ESP_PATHS
def test_replayed_esp_is_dropped_and_counted(lab, path):
    """RFC 4303 §3.4.3: a packet whose sequence number the window has already seen is
    discarded (and counted as `replayed`) before its ICV is even checked."""
    lab.node("client").run(["ping", "-c1", "-W2", ra.FILESERVER], check=True)
    last = _client_esp(lab)[-1]
    assert last.seq in _server_seqs(lab, last.spi), "the packet to replay never arrived"
    before = w.ipsec_status(lab)
    w.resend(lab, "client", last, copies=3)
    assert w.wait_counter(lab, "replayed", before["replayed"] + 3) == before["replayed"] + 3
    after = w.ipsec_status(lab)
    assert after["auth_failures"] == before["auth_failures"], (before, after)


@ESP_PATHS
def test_tampered_esp_fails_authentication_and_is_dropped(lab, path):
    """§3.4.4: one bit flipped in the ciphertext of a packet the server has not seen yet (so
    the window lets it through to the ICV check): the ICV does not verify, the packet is
    dropped and counted as `auth_failures`, and the window does not move."""
    router = lab.node("homenat" if path == "nat-t" else "isp")  # the client's gateway
    esp = ["-p", "esp"] if path == "direct" else ["-p", "udp", "--dport", str(w.NAT_T_PORT)]
    block = ["FORWARD", "-s", lab.address("client"), *esp, "-j", "DROP"]
    router.run(["iptables", "-I", *block], check=True)
    try:  # a fresh ESP packet that never reaches the server
        lab.node("client").run(["ping", "-c1", "-W1", ra.FILESERVER])
        deadline = time.monotonic() + 3
        while True:  # until the client's capture has it
            fresh = _client_esp(lab)[-1]
            if fresh.seq not in _server_seqs(lab, fresh.spi) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        router.run(["iptables", "-D", *block], check=True)
    assert fresh.seq not in _server_seqs(lab, fresh.spi)
    assert fresh.kind == ("esp" if path == "direct" else "esp-udp")
    body = bytearray(fresh.payload)
    body[8 + 16 + 3] ^= 0x01  # after SPI, sequence number and the IV (8 or 16 octets)
    before = w.ipsec_status(lab)
    w.resend(lab, "client", fresh, bytes(body))
    assert w.wait_counter(lab, "auth_failures", before["auth_failures"] + 1) == \
        before["auth_failures"] + 1
    after = w.ipsec_status(lab)
    assert after["replayed"] == before["replayed"], (before, after)


@ESP_PATHS
def test_cleartext_l2tp_is_dropped_counted_and_unanswered(lab, path):
    """RFC 3193 §4 and the chapter: L2TP only inside the SA. A hand-built SCCRQ to UDP 1701 in
    clear gets nothing back (no SCCRP, no StopCCN) and is counted."""
    before = w.ipsec_status(lab)["cleartext_l2tp_dropped"]
    sccrq = l2tp_wire.packet(0, 0, 0, 0, l2tp_wire.sccrq(0x4242))
    exchange = l2tp_wire.raw_exchange(lab, [(sccrq, 0.5), (sccrq, 0.5)], wait=1.0)
    assert not exchange.replies, exchange.messages()
    assert w.wait_counter(lab, "cleartext_l2tp_dropped", before + 2) == before + 2
    answers = [d for d in w.of_kind(w.wire(w.snapshot(lab)), "l2tp-clear")
               if d.src == lab.address("vpnsrv", "isp")]
    assert not answers, "the server answered L2TP in clear"


@pytest.mark.parametrize("extra, reason", [
    (("--psk", "not-the-" + ra.PSK), "pre-shared key"),
    (("--no-nat-t",), "NAT-T"),
], ids=["wrong-psk", "nat-without-nat-t"])
@NAT_T
def test_failed_ike_is_named_and_sends_no_l2tp(lab, extra, reason):
    """A wrong pre-shared key (RFC 2409 §5.4: HASH_I does not verify) or a client without NAT-T
    behind the NAT (RFC 3947): the client exits 1 naming why, no SA is made and no L2TP goes on
    the wire, in clear or in ESP."""
    daemon = lab.node("client2").daemons["vpnclient"]
    daemon.stop()
    keys, frames = len(w.keylog(lab)), len(w.wire(w.snapshot(lab)))
    ra.connect(lab, "client2", lab.params, user="bob", extra=extra)
    assert lab.node("client2").daemons["vpnclient"].wait(30) == 1
    down = [e for e in w.events(lab, "client2") if e["event"] == "tunnel-down"]
    assert down and reason in down[-1]["reason"], down
    assert len(w.keylog(lab)) == keys, "an SA was made"
    known = {k["spi"] for k in w.keylog(lab)}
    later = w.wire(w.snapshot(lab))[frames:]
    assert not w.of_kind(later, "l2tp-clear")
    assert all(d.spi in known for d in w.of_kind(later, "esp", "esp-udp"))
    assert not lab.node("client2").run(["ip", "link", "show", "vpn0"]).ok


def test_nat_without_nat_t_at_both_ends_is_named():
    """The chapter: L2TP/IPsec cannot pass a NAT without NAT-T. With it off at both ends the
    server refuses after Main Mode, the client exits 1 naming NAT-T, and nothing but IKE on
    UDP 500 crosses the Internet."""
    with start_scenario("remote-access", protocol="l2tp-ipsec", nat="pptp-helper",
                        nat_t="no") as lab:
        assert lab.node("client").daemons["vpnclient"].wait(30) == 1
        down = [e for e in w.events(lab, "client") if e["event"] == "tunnel-down"]
        assert down and "NAT-T" in down[-1]["reason"], down
        datagrams = w.wire(w.snapshot(lab))
        assert {d.kind for d in datagrams if d.kind != "other"} == {"ike"}, \
            sorted({d.kind for d in datagrams})
        assert not w.keylog(lab)
        counters = w.ipsec_status(lab)["counters"]
        assert counters["nat_without_nat_t_refused"] == 1, counters
