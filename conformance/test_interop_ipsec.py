"""L2TP/IPsec interop with strongSwan 5.9.8 (IKEv1, transport mode, PSK) + xl2tpd + pppd in
user-mode Linux: our client against it as LNS, and it as LAC against our server, with 3DES and
AES proposals, and AES through a NAT router in front of the initiator (NAT-T, UDP 4500); and
our client against SoftEther VPN Server 5.01 in a namespace (3DES and AES ESP; UDP 4500).

Each cell (topologies/interop.py, topologies/interop_ipsec.py): tunnel up at both ends (our ESP
SA's cipher and encapsulation, strongSwan's CHILD_SA INSTALLED), MS-CHAP v2 inside, ping both
ways, a 300 kB TCP transfer echoed back with SHA-256 compared, the responder's capture decoded
by tshark (ISAKMP Main and Quick Mode, ESP, nothing malformed, no clear UDP 1701) and decrypted
by scapy with our key log, then each side hangs up in turn and no SA is left. Here tshark also
decrypts each SA of our key log (its esp_sa table): every ICV is good and L2TP is inside.
"""

from __future__ import annotations

import json

import pytest

from conformance.interop import cells, run_cell
from testbed import pcap
from topologies import interop_ipsec

pytestmark = pytest.mark.netns

ESP_OPTIONS = ("-o", "esp.enable_encryption_decode:TRUE",
               "-o", "esp.enable_authentication_check:TRUE")


def assert_ipsec_wire(lab, cell) -> None:  # type: ignore[no-untyped-def]
    """tshark with each SA of our key log: the SA's packets all authenticate (ICV good) and
    carry L2TP on UDP 1701; our key log names both directions of one SA pair per dial."""
    path = lab.capture_path(interop_ipsec.responder(cell.params), "isp")
    keys = [json.loads(line) for line in
            (lab.run_dir / interop_ipsec.KEYLOG).read_text().splitlines() if line]
    # one SA pair per dial of our client (it dials twice); strongSwan's LAC keeps its SA
    # between its two L2TP dials
    assert len(keys) >= 2 and len(keys) % 2 == 0, keys
    assert {k["cipher"] for k in keys} == {interop_ipsec.CIPHERS[cell.cipher][2]}
    udp = cell.nat == "nat-t" or cell.peer == "softether"  # SoftEther always uses UDP 4500
    assert all(bool(k["encap"]) == udp for k in keys), keys
    seen = 0
    for key in keys:
        # any address: through the NAT the capture shows the translated one
        uat = ",".join(['"IPv4"', '"*"', '"*"', *key["tshark_uat"].split(",")[3:]])
        rows = pcap.tshark_fields(path, ["frame.number", "esp.icv_good", "udp.dstport",
                                         "l2tp.version"], f"esp.spi == {key['spi']}",
                                  options=(*ESP_OPTIONS, "-o", f"uat:esp_sa:{uat}"))
        for r in rows:
            r += [""] * (4 - len(r))
            assert r[1] in ("1", "True"), f"frame {r[0]}: ICV not good"
            assert "1701" in r[2].split(",") and r[3] == "2", f"frame {r[0]}: {r}"
        seen += len(rows)
    assert seen >= 20, f"{seen} ESP packets decrypted by tshark"


@pytest.mark.parametrize("cell", cells(interop_ipsec.IPSEC_PEERS))
def test_ipsec_interop_cell(cell):
    run_cell(cell, assert_ipsec_wire)
