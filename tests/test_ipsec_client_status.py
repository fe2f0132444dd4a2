"""The client's status file for L2TP/IPsec: the negotiated SA (cipher, integrity,
encapsulation, SPIs from the ipsec-up event) next to the stack's SA counters. The counters
once replaced it, and `vpnlab run remote-access --param protocol=l2tp-ipsec` failed its ESP SA
check with "ESP None"."""

from __future__ import annotations

import json

from tunnels.client import VPNClient
from tunnels.config import ClientConfig


class _Stack:
    def status(self) -> dict:
        return {"counters": {}, "ipsec": {"replayed": 2, "auth_failures": 1, "sas": []}}


class _Pump:
    stack = _Stack()
    counters: dict = {}


def test_status_keeps_the_negotiated_sa_beside_the_counters(tmp_path):
    client = VPNClient(ClientConfig(server="203.0.113.2", username="alice", password="p"))
    client.status_path = tmp_path / "status.json"
    client.pump = _Pump()  # type: ignore[assignment]
    client.state["ipsec"] = {"cipher": "3des-cbc", "integrity": "hmac-sha1-96",
                             "encapsulation": "transport", "spi_in": 4096, "spi_out": 8192}
    client.write_status()
    ipsec = json.loads(client.status_path.read_text())["ipsec"]
    assert ipsec["cipher"] == "3des-cbc" and ipsec["spi_in"] == 4096
    assert ipsec["replayed"] == 2 and ipsec["auth_failures"] == 1
