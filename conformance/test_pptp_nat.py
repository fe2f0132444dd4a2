"""PPTP through a home NAT (design.md, "PPTP through Linux NAT"): with the kernel's PPTP
helper two clients share one outside address; without it, or with GRE filtered, the client
names the failure."""

from __future__ import annotations

import pytest

from conformance import pptp_wire as w
from conformance.plugin import start_scenario
from topologies import remote_access as ra

pytestmark = pytest.mark.netns


def test_two_clients_behind_one_nat_with_the_helper():
    with start_scenario("remote-access", nat="pptp-helper", clients="2") as lab:
        results = ra.checks(lab, lab.params)
        assert all(r.passed for r in results), [r for r in results if not r.passed]
        addrs = {ra.status(lab, c)["local_address"] for c in ("client", "client2")}
        assert len(addrs) == 2
        assert lab.node("client2").run(["ping", "-c1", "-W2", ra.FILESERVER]).ok
        # both calls leave the NAT from its one outside address, with distinct Call IDs
        server = lab.address("vpnsrv", "isp")
        gre = [(src, w.gre_fields(raw)) for src, raw in w.gre(lab)]
        assert {src for src, _ in gre} - {server} == {lab.address("homenat", "isp")}
        assert len({g["call_id"] for src, g in gre if src == server}) == 2
        # what the server saw in the OCRQs is what it then keys its GRE with (NAT-rewritten)
        ocrq_ids = {int(m.call_id) for _, m in w.control(lab) if m.ctrl_msg_type == w.OCRQ}
        assert {g["call_id"] for src, g in gre if src == server} == ocrq_ids


def test_without_the_helper_the_failure_is_named():
    with start_scenario("remote-access", nat="no-helper") as lab:
        results = ra.checks(lab, lab.params)
        assert results and all(r.passed for r in results), [r.detail for r in results]
        st = ra.status(lab, "client")
        assert st["reason"].startswith("control connection up, no GRE received")
        assert lab.node("client").daemons["vpnclient"].wait(10) == 1
        # the control connection did come up: SCCRP and OCRP with success are on the wire
        ok = {int(m.ctrl_msg_type) for _, m in w.control(lab)
              if m.ctrl_msg_type in (w.SCCRP, w.OCRP) and m.result_code == 1}
        assert ok == {w.SCCRP, w.OCRP}


def test_firewall_dropping_gre_gives_the_same_diagnosis():
    with start_scenario("remote-access") as lab:
        lab.node("client").daemons["vpnclient"].stop()
        lab.node("isp").run(["iptables", "-A", "FORWARD", "-p", "gre", "-j", "DROP"], check=True)
        ra.connect(lab, "client", lab.params)
        st = ra.status(lab, "client")
        assert st["state"] == "down" and "no GRE received" in st["reason"]
        assert not lab.node("client").run(["ip", "link", "show", "vpn0"]).ok
