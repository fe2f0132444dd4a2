"""Reference peers without root: spec validation, rendered pppd/pptpd files, boot data, the
lab model's refpeer rules, and the interop matrix's cells."""

from __future__ import annotations

import json
import shlex

import pytest

from testbed import errors
from testbed.errors import SpecError
from testbed.model import LabSpec, LinkSpec, NodeKind, NodeSpec
from testbed.refpeer import PeerSpec, boot_env, render_files, role_script, uml_argv
from topologies.interop import MATRIX, build


def test_pptpd_files_require_the_method_and_mppe_and_keep_debians_options_out():
    files = render_files(PeerSpec("pptpd", users=(("alice", "p w"),), auth="mschapv2",
                                  mppe="128"))
    options = files["ppp/options.pptpd"][0].splitlines()
    assert {"auth", "require-mschap-v2", "require-mppe-128", "nomppe-stateful"} <= set(options)
    assert "lcp-echo-interval 30" not in files["ppp/options"][0]  # Debian's default is hidden
    assert files["pptpd.conf"][0].startswith("option /etc/ppp/options.pptpd\n")
    assert 'alice * "p w" *' in files["ppp/chap-secrets"][0]
    assert files["ppp/chap-secrets"][1] == 0o600 and files["ppp/ip-up"][1] == 0o755


def test_pptp_linux_files_refuse_the_other_methods_and_dial_once():
    spec = PeerSpec("pptp-linux", auth="pap", mppe="none", server="198.51.100.2")
    options = render_files(spec)["ppp/peers/vpnlab"][0].splitlines()
    assert options[0] == 'pty "pptp 198.51.100.2 --nolaunchpppd --loglevel 1"'
    assert {"refuse-chap", "refuse-mschap", "refuse-mschap-v2", "refuse-eap", "nomppe",
            "noauth", "maxfail 1"} <= set(options)
    assert "refuse-pap" not in options and "persist" not in options


def test_stateful_is_accepted_only_when_asked_for():
    spec = PeerSpec("pptpd", mppe="40", mppe_stateful=True)
    options = render_files(spec)["ppp/options.pptpd"][0].splitlines()
    assert "require-mppe-40" in options and "mppe-stateful" in options


def test_xl2tpd_files_authenticate_the_tunnel_only_with_a_secret():
    lns = render_files(PeerSpec("xl2tpd-lns", auth="chap", mppe="none", tunnel_secret="s3"))
    conf = lns["xl2tpd/xl2tpd.conf"][0].splitlines()
    assert "challenge = yes" in conf and "ip range = 172.30.0.10-172.30.0.19" in conf
    assert lns["xl2tpd/l2tp-secrets"][0].splitlines()[-1] == "* * s3"  # no quotes: xl2tpd
    assert "require-chap" in lns["ppp/options.xl2tpd"][0].splitlines()  # keeps them
    lac = render_files(PeerSpec("xl2tpd-lac", server="198.51.100.2"))
    conf = lac["xl2tpd/xl2tpd.conf"][0].splitlines()
    assert "challenge = no" in conf and "lns = 198.51.100.2" in conf and "autodial = no" in conf
    assert "require-mppe-128" in lac["ppp/options.xl2tpd"][0].splitlines()
    assert "1701" in role_script(PeerSpec("xl2tpd-lns"))


@pytest.mark.parametrize("kwargs, word", [
    ({"software": "openvpn"}, "software"),
    ({"software": "pptpd", "auth": "eap-md5"}, "auth"),
    ({"software": "pptpd", "mppe": "56"}, "56-bit"),
    ({"software": "pptpd", "auth": "chap", "mppe": "128"}, "MS-CHAP"),
    ({"software": "pptp-linux"}, "server"),
    ({"software": "xl2tpd-lac"}, "server"),
    ({"software": "pptpd", "users": ()}, "users"),
])
def test_invalid_peer_specs_say_which_field(kwargs, word):
    with pytest.raises(SpecError, match=word):
        PeerSpec(**kwargs)


def test_boot_env_is_shell_quoted_and_the_kernel_gets_only_the_state_dir(tmp_path):
    env = boot_env("peer", "203.0.113.2/24", [("default", "203.0.113.1")], ("ppp_generic",))
    values = dict(line.split("=", 1) for line in env.splitlines())
    assert shlex.split(values["VPNLAB_ROUTES"]) == ["default@203.0.113.1"]
    assert values["VPNLAB_ADDRESS"] == "203.0.113.2/24"
    argv = uml_argv("peer", tmp_path, 96)
    assert f"vpnlab_state={tmp_path}" in argv and "eth0=tuntap,tap0" in argv
    assert "rootfstype=hostfs" in argv and "ro" in argv
    assert "1723" in role_script(PeerSpec("pptpd"))


def test_a_refpeer_node_needs_a_peer_spec_and_one_link():
    with pytest.raises(SpecError, match="PeerSpec"):
        NodeSpec("peer", NodeKind.REFPEER)
    with pytest.raises(SpecError, match="PeerSpec"):
        NodeSpec("host", peer=PeerSpec("pptpd"))
    peer = NodeSpec("peer", NodeKind.REFPEER, peer=PeerSpec("pptpd"))
    nodes = (peer, NodeSpec("a"), NodeSpec("b"))
    with pytest.raises(SpecError, match="exactly one link"):
        LabSpec("x", nodes, (LinkSpec("peer", "a"), LinkSpec("peer", "b")))
    LabSpec("x", nodes, (LinkSpec("peer", "a"),))


def test_matrix_cells_have_unique_ids_and_every_applicable_one_builds():
    ids = [c.id for c in MATRIX]
    assert len(ids) == len(set(ids))
    assert "pptpd-mschapv2-mppe128-stateless" in ids
    for cell in MATRIX:
        if cell.not_applicable:
            assert len(cell.not_applicable) > 20  # a reason a person can read
            continue
        spec = build(cell.params)
        # SoftEther's vpnserver is userspace: it runs in the peer's namespace, no UML
        want = NodeKind.HOST if cell.peer == "softether" else NodeKind.REFPEER
        assert spec.node("peer").kind is want


def _fake_cell(params):  # type: ignore[no-untyped-def]
    ok = params["auth"] != "chap"
    return {"result": "pass" if ok else "fail", "detail": "" if ok else "our side: tunnel up: "
            "state down", "checks": [], "figures": {"boot_s": 3.0}, "seconds": 1.0}


def test_vpnlab_interop_exits_0_exactly_when_every_applicable_cell_passed(tmp_path, monkeypatch,
                                                                         capsys):
    from testbed import refpeer_matrix

    monkeypatch.setattr(refpeer_matrix, "run_cell", _fake_cell)
    report = tmp_path / "m.json"
    assert refpeer_matrix.run_matrix("pptpd-pap*", 1, str(report)) == 0
    assert refpeer_matrix.run_matrix("pptpd-*", 2, str(report)) == 1
    out = capsys.readouterr().out
    assert "[FAIL] pptpd-chap-clear" in out and "our side: tunnel up" in out
    assert "[N/A ] pptpd-mschapv2-mppe56-stateless" in out and "56-bit" in out
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["counts"]["n/a"] == 2
    assert {c["id"]: c["result"] for c in data["cells"]}["pptpd-chap-clear"] == "fail"
    with pytest.raises(errors.TestbedError, match="no cell matches"):
        refpeer_matrix.run_matrix("nothing-like-this", 1, None)
