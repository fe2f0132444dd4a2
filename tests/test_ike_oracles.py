"""Independent decoders read what we send: scapy's ISAKMP layer parses the clear Main Mode
messages, and tshark (given our phase-1 encryption key, as Wireshark's IKEv1 decryption
table takes it) decrypts and dissects every message, with no malformed packet and no expert
warning. tshark decrypting MM5 on proves our SKEYID_e expansion and the Appendix B IV chain
independently of our own decryption."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from scapy.all import IP, UDP, Raw, wrpcap
from scapy.layers.isakmp import ISAKMP

from tests.test_ike_pairs import Net, cfg

tshark = shutil.which("tshark")


def scenario(nat: bool, **kw) -> tuple[Net, list[tuple[str, str]]]:
    """Main Mode, Quick Mode, DPD, a Quick Mode rekey and a delete; the decryption keys."""
    server_kw = {"nat_t_versions": kw.pop("server_nat_t")} if "server_nat_t" in kw else {}
    net = Net(cfg(dpd_interval=10, lifetime_phase2=100, **kw),
              cfg(dpd_interval=10, lifetime_phase2=100, **{**kw, **server_kw}), nat=nat)
    keys = []
    net.run(until=5)
    sa = net.clients[0]._current()
    keys.append((sa.icookie.hex(), sa.keys.enc_key.hex()))
    net.run(until=95)
    net.clients[0].delete(net.now)
    net.transfer()
    return net, keys


def write_pcap(net: Net, path) -> None:
    pkts = []
    for src, dst, data in net.log:
        if 4500 in (src[1], dst[1]):
            data = b"\0\0\0\0" + data  # the non-ESP marker the runtime adds (RFC 3948 §2.2)
        pkts.append(IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / Raw(data))
    wrpcap(str(path), pkts)


def run_tshark(path, keys, *args: str) -> str:
    opts = []
    for icookie, key in keys:
        opts += ["-o", f"uat:ikev1_decryption_table:{icookie},{key}"]
    out = subprocess.run([tshark, "-r", str(path), *opts, *args], capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout


def test_scapy_parses_clear_main_mode():
    net = Net(cfg(ike_ciphers=("3des-cbc", "aes-cbc-128"), ike_hashes=("md5",)), nat=True)
    net.run(until=5)
    mm = [ISAKMP(data) for _, _, data in net.log[:4]]
    assert [m.exch_type for m in mm] == [2, 2, 2, 2]
    assert all(m.length == len(d) for m, (_, _, d) in zip(mm, net.log[:4], strict=True))
    sa1 = mm[0].payload
    assert type(sa1).__name__ == "ISAKMP_payload_SA"
    prop = sa1.prop
    assert prop.trans_nb == 2
    first = dict(prop.trans.transforms)
    assert first["Encryption"] == "3DES-CBC" and first["Hash"] == "MD5"
    assert first["Authentication"] == "PSK" and first["LifeDuration"] == 28800
    assert mm[1].payload.prop.trans_nb == 1
    for m in mm[2:]:
        ke = m.payload
        assert type(ke).__name__ == "ISAKMP_payload_KE" and len(ke.ke) == 128
        nonce = ke.payload
        assert type(nonce).__name__ == "ISAKMP_payload_Nonce" and nonce.next_payload == 20


@pytest.mark.skipif(tshark is None, reason="tshark not installed")
@pytest.mark.parametrize("nat,kw", [
    (True, {"ike_ciphers": ("3des-cbc",), "ike_hashes": ("md5",)}),
    (True, {"ike_ciphers": ("aes-cbc-256",), "esp_ciphers": ("3des-cbc",),
            "esp_integrity": ("hmac-md5-96",)}),
    (False, {"ike_ciphers": ("aes-cbc-128",), "pfs_group": 2}),
    (True, {"server_nat_t": ("draft-02n",)}),
])
def test_tshark_decrypts_and_dissects_everything(tmp_path, nat, kw):
    net, keys = scenario(nat, **kw)
    pcap = tmp_path / "ike.pcap"
    write_pcap(net, pcap)
    assert run_tshark(pcap, keys, "-Y", "_ws.malformed || _ws.expert.severity >= warning") == ""
    frames = run_tshark(pcap, keys, "-V").split("\nFrame ")
    assert len(frames) == len(net.log)
    exchanges = [f.split("Exchange type: ")[1].split(" (")[0] for f in frames]
    assert exchanges[:9] == ["Identity Protection"] * 6 + ["Quick Mode"] * 3
    assert "Informational" in exchanges
    for f in frames:
        assert "Payload: Hash (8)" in f or "Payload: Security Association" in f \
            or "Payload: Key Exchange" in f
    mm5 = frames[4]
    assert "ID_IPV4_ADDR: 10.0.0.2" in mm5 and "Payload: Hash (8)" in mm5
    qm1 = frames[6]
    assert "Port: 1701" in qm1 and "Protocol ID: UDP (17)" in qm1
    draft = "server_nat_t" in kw
    encap = "Encapsulation-Mode: Transport"
    if nat:
        encap = "Encapsulation-Mode: UDP-Encapsulated-Transport" + (
            " (draft)" if draft else "")
    assert encap in qm1
    if kw.get("pfs_group"):
        assert "Payload: Key Exchange (4)" in qm1
    if nat and draft:
        assert "Payload: NAT-D (draft-ietf-ipsec-nat-t-ike-01 to 03) (130)" in frames[2]
        assert "(131)" in qm1
    elif nat:
        assert "Payload: NAT-D (RFC 3947) (20)" in frames[2]
        assert "Payload: NAT-OA (RFC 3947) (21)" in qm1
        assert all("Dst Port: 4500" in f or "Src Port: 4500" in f for f in frames[4:])
    text = "\n".join(frames)
    assert "R-U-THERE (36136)" in text and "R-U-THERE-ACK (36137)" in text
    assert "Payload: Delete (12)" in text
    assert sum("Quick Mode" == e for e in exchanges) == 6  # the SA was rekeyed once
