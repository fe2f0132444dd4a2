"""Independent decoders agree with our ESP: scapy's SecurityAssociation decrypts what we send
and we decrypt what it sends, for every cipher x integrity, plain and UDP-encapsulated
(RFC 3948); tshark decrypts and authenticates our packets with the exported keys.

scapy and tshark are oracles here only; tunnels/ never imports them (test_ipsec_crypto)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP
from scapy.layers.ipsec import SecurityAssociation as ScapySA
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from tunnels.ipsec.crypto import CIPHERS, INTEGRITY
from tunnels.ipsec.esp import protect_ipv4, unprotect_ipv4
from tunnels.ipsec.ipv4 import address
from tunnels.ipsec.sa import SecurityAssociation

COMBOS = list(itertools.product(sorted(CIPHERS), sorted(INTEGRITY)))
ENCAPS = [None, (4500, 4500)]
CLIENT, SERVER = "192.0.2.10", "198.51.100.1"
HELLO = bytes.fromhex("c802001400000000000000008008000000000006")  # an L2TP HELLO control message


def our_sa(n: int, cipher: str, integrity: str, encap) -> SecurityAssociation:
    enc_key = bytes((n * 7 + i) & 0xFF for i in range(CIPHERS[cipher].key_size))
    auth_key = bytes((n * 13 + i) & 0xFF for i in range(INTEGRITY[integrity].key_size))
    return SecurityAssociation.from_keys(0x10000 + n, cipher, enc_key, integrity, auth_key,
                                         CLIENT, SERVER, encap=encap)


def scapy_sa(sa: SecurityAssociation) -> ScapySA:
    keys = sa.keys_for_export()
    nat_t = UDP(sport=keys.encap[0], dport=keys.encap[1]) if keys.encap else None
    return ScapySA(ESP, nat_t_header=nat_t, **keys.scapy_kwargs())


def l2tp(payload: bytes = HELLO):
    return IP(src=CLIENT, dst=SERVER, id=7) / UDP(sport=1701, dport=1701) / Raw(payload)


def cases():
    for n, ((cipher, integrity), encap) in enumerate(itertools.product(COMBOS, ENCAPS)):
        yield pytest.param(n, cipher, integrity, encap,
                           id=f"{cipher}-{integrity}-{'natt' if encap else 'esp'}")


@pytest.mark.parametrize("n,cipher,integrity,encap", list(cases()))
def test_scapy_decrypts_what_we_send(n, cipher, integrity, encap):
    sa = our_sa(n, cipher, integrity, encap)
    oracle = scapy_sa(sa)
    for i in range(3):
        inner = l2tp(HELLO + bytes(i * 5))
        wire = IP(protect_ipv4(sa, bytes(inner), bytes([i]) * sa.enc.block_size))
        if encap:
            assert wire[UDP].sport == 4500 and wire[UDP].chksum == 0
        assert wire[ESP].spi == sa.spi and wire[ESP].seq == i + 1
        assert bytes(oracle.decrypt(wire)) == bytes(inner)  # verify=True: the ICV too


@pytest.mark.parametrize("n,cipher,integrity,encap", list(cases()))
def test_we_decrypt_what_scapy_sends(n, cipher, integrity, encap):
    sa = our_sa(n, cipher, integrity, encap)
    oracle = scapy_sa(sa)
    for i in range(3):
        inner = l2tp(HELLO + bytes(i * 3))
        wire = bytes(oracle.encrypt(inner, seq_num=i + 1))
        # With NAT-OA (here: no NAT at all) the inner checksum is left as it was sent.
        opened = unprotect_ipv4(sa, wire, 0.0, original=(address(CLIENT), address(SERVER)))
        assert opened == bytes(IP(bytes(inner)))
    assert sa.counters.packets == 3 and sa.window.highest == 3


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decrypts_and_authenticates_our_esp(tmp_path: Path):
    sas = [our_sa(n, c, i, e) for n, ((c, i), e) in enumerate(itertools.product(COMBOS, ENCAPS))]
    frames = [Ether() / IP(protect_ipv4(sa, bytes(l2tp()), bytes(sa.enc.block_size)))
              for sa in sas]
    wrpcap(str(tmp_path / "esp.pcap"), frames)
    argv = ["tshark", "-n", "-r", str(tmp_path / "esp.pcap"),
            "-o", "esp.enable_encryption_decode:TRUE",
            "-o", "esp.enable_authentication_check:TRUE"]
    for sa in sas:
        argv += ["-o", "uat:esp_sa:" + sa.keys_for_export().tshark_uat()]
    argv += ["-T", "fields", "-E", "separator=|", "-e", "esp.spi", "-e", "esp.sequence",
             "-e", "esp.icv_good", "-e", "esp.pad_len", "-e", "l2tp.type",
             "-e", "l2tp.avp.type", "-e", "_ws.expert", "-e", "_ws.malformed"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    rows = [line.split("|") for line in result.stdout.splitlines()]
    assert len(rows) == len(sas)
    for sa, row in zip(sas, rows, strict=True):
        spi, seq, icv_good, pad_len, l2tp_type, avp, expert, malformed = row
        pad = -(len(HELLO) + 8 + 2) % sa.enc.block_size
        assert (int(spi, 16), seq, icv_good, pad_len) == (sa.spi, "1", "1", str(pad))
        assert (l2tp_type, avp, expert, malformed) == ("1", "0", "", ""), sa.cipher
