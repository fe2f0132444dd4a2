"""The IKE events feed the ESP layer as they are: names from its registry, keys of the right
lengths, and the initiator's outbound SA decrypted by the responder's inbound one (both ways,
every cipher and integrity, plain and UDP-encapsulated). Also the sans-I/O rule for the IKE
modules, checked from their imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_ike_pairs import ESP_COMBOS, Net, cfg
from tunnels.ipsec import esp
from tunnels.ipsec.ike import ChildSAEstablished
from tunnels.ipsec.sa import SecurityAssociation

UDP = 17


def _sa(event: ChildSAEstablished, direction: str) -> SecurityAssociation:
    local, remote = event.local[0], event.remote[0]
    encap = None
    if event.encapsulation == "udp-transport":
        encap = (event.local[1], event.remote[1]) if direction == "out" else \
            (event.remote[1], event.local[1])
    if direction == "out":
        return SecurityAssociation.from_keys(event.spi_out, event.cipher, event.enc_key_out,
                                             event.integrity, event.auth_key_out, local,
                                             remote, encap=encap,
                                             lifetime_seconds=event.lifetime_seconds,
                                             lifetime_bytes=event.lifetime_bytes)
    return SecurityAssociation.from_keys(event.spi_in, event.cipher, event.enc_key_in,
                                         event.integrity, event.auth_key_in, remote, local,
                                         encap=encap, lifetime_seconds=event.lifetime_seconds,
                                         lifetime_bytes=event.lifetime_bytes)


@pytest.mark.parametrize("cipher,integrity", ESP_COMBOS)
@pytest.mark.parametrize("nat", [False, True])
def test_esp_round_trip_with_negotiated_keys(cipher, integrity, nat):
    net = Net(cfg(esp_ciphers=(cipher,), esp_integrity=(integrity,)), nat=nat)
    net.run(until=5)
    (ci,), (cr,) = net.children()
    l2tp = b"\x00\x00\x06\xa5\x06\xa5" + b"L2TP control" * 3
    for sender, receiver in ((ci, cr), (cr, ci)):
        out, inn = _sa(sender, "out"), _sa(receiver, "in")
        block = 8 if "des" in cipher else 16
        packet = esp.encapsulate(out, UDP, l2tp, b"\x42" * block, now=1.0)
        assert esp.decapsulate(inn, packet, now=1.0) == (UDP, l2tp)


def test_ike_modules_do_no_io():
    """Style rule 1: no socket, clock, thread, os or subprocess in the protocol core."""
    banned = {"socket", "time", "threading", "asyncio", "os", "subprocess", "select"}
    for path in (Path(__file__).parents[1] / "tunnels" / "ipsec" / "ike").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            assert not banned & set(names), f"{path.name} imports {banned & set(names)}"
