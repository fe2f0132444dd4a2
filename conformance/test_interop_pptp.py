"""PPTP interop with real peers in user-mode Linux: our client against pptpd + pppd, and
pptp-linux + pppd against our server, per auth method and MPPE setting both support.

Each cell (topologies/interop.py): tunnel up with the same auth and encryption at both ends,
ping both ways, a 300 kB TCP transfer echoed back with SHA-256 compared, the capture decoded
by scapy and tshark (no malformed frame, no plaintext when encrypted), then each side hangs up
in turn and the other cleans up. Here the capture is also held to RFC 2637 like our own pairs.
"""

from __future__ import annotations

import pytest

from conformance.interop import assert_pptp_wire, cells, failed
from conformance.plugin import start_scenario
from topologies import interop

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("cell", cells(interop.PEERS))
def test_pptp_interop_cell(cell):
    with start_scenario("interop", **cell.params) as lab:
        results = interop.checks(lab, lab.params)
        assert not failed(results), failed(results)
        assert len(results) == 14, [r.name for r in results]  # every check ran
        assert_pptp_wire(lab, cell)
