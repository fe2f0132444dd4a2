"""strongSwan + xl2tpd reference peers: what testbed/refpeer.py renders (no root, no UML)."""

from __future__ import annotations

from testbed.refpeer import PeerSpec, render_files, role_script


def test_strongswan_lns_renders_xl2tpd_and_a_strict_transport_mode_psk_responder():
    spec = PeerSpec("strongswan-lns", psk="k3y", mppe="none", ike="3des-sha1-modp1024",
                    esp="3des-sha1")
    files = render_files(spec)
    conf = files["ipsec.conf"][0]
    assert "\tright=%any" in conf and "\ttype=transport" in conf
    assert "\tike=3des-sha1-modp1024!" in conf and "\tesp=3des-sha1!" in conf
    assert files["ipsec.secrets"] == (': PSK "k3y"\n', 0o600)
    assert "[lns default]" in files["xl2tpd/xl2tpd.conf"][0]
    script = role_script(spec)
    # L2TP only from inside ESP, before xl2tpd listens
    assert script.index("--pol none -j DROP") < script.index("ipsec start") < \
        script.index("xl2tpd -D")


def test_strongswan_lac_dials_l2tp_only_once_the_child_sa_is_installed():
    from testbed.refpeer import _DIALS

    spec = PeerSpec("strongswan-lac", server="203.0.113.9", psk="k", mppe="none")
    conf = render_files(spec)["ipsec.conf"][0]
    assert "\tright=203.0.113.9" in conf and "[lac vpnlab]" in \
        render_files(spec)["xl2tpd/xl2tpd.conf"][0]
    dial = _DIALS["strongswan-lac"][2]
    assert dial.index("ipsec up vpnlab") < dial.index("grep -q INSTALLED || {") < \
        dial.index("c vpnlab")
    assert "--pol none" not in role_script(spec)
