"""IKEConfig refuses bad values up front, naming the field and what it expects."""

from __future__ import annotations

import pytest

from tunnels.ipsec.ike import IKEConfig, IKEConfigError


@pytest.mark.parametrize("kw,field", [
    ({"psk": b""}, "psk"),
    ({"psk": "text"}, "psk"),
    ({"auth": "xauth"}, "auth"),
    ({"ike_ciphers": ("des-cbc",)}, "ike_ciphers"),
    ({"ike_ciphers": ()}, "ike_ciphers"),
    ({"ike_ciphers": "aes-cbc-128"}, "ike_ciphers"),
    ({"ike_hashes": ("sha256",)}, "ike_hashes"),
    ({"dh_groups": (5,)}, "dh_groups"),
    ({"dh_groups": (1, 2)}, "dh_groups"),  # group 1 needs allow_group1
    ({"esp_ciphers": ("null",)}, "esp_ciphers"),
    ({"esp_integrity": ("hmac-sha256-128",)}, "esp_integrity"),
    ({"pfs_group": 5}, "pfs_group"),
    ({"lifetime_phase1": 10}, "lifetime_phase1"),
    ({"lifetime_phase2": 0}, "lifetime_phase2"),
    ({"lifetime_phase2_kb": -1}, "lifetime_phase2_kb"),
    ({"rekey_margin": 0.7}, "rekey_margin"),
    ({"nat_t_versions": ("draft-01",)}, "nat_t_versions"),
    ({"dpd_interval": -1}, "dpd_interval"),
    ({"retransmit_tries": 0}, "retransmit_tries"),
    ({"retransmit_backoff": 0.5}, "retransmit_backoff"),
    ({"l2tp_port": 70000}, "l2tp_port"),
    ({"auth": "rsa-sig"}, "certificate"),
])
def test_bad_values_name_the_field(kw, field):
    kw = {"psk": b"secret", **kw}
    with pytest.raises(IKEConfigError) as info:
        IKEConfig(**kw)
    assert str(info.value).startswith(field)


def test_defaults():
    config = IKEConfig(psk=b"secret")
    assert config.dh_groups == (14, 2) and not config.allow_group1
    assert (config.lifetime_phase1, config.lifetime_phase2) == (28800, 3600)
    assert config.nat_t and config.dpd_interval == 30
    assert len(config.ike_proposals()) == 3 * 2 * 2 and len(config.esp_proposals()) == 3 * 2
    assert IKEConfig(psk=b"x", dh_groups=(1, 2), allow_group1=True).dh_groups == (1, 2)


@pytest.mark.parametrize("local,remote,role", [
    (("0.0.0.0", 500), ("192.0.2.1", 500), "initiator"),
    (("10.0.0.2", 500), ("0.0.0.0", 500), "initiator"),
    (("10.0.0.2", 0), ("192.0.2.1", 500), "initiator"),
    (("not an address", 500), ("192.0.2.1", 500), "responder"),
    (("10.0.0.2", 500), ("192.0.2.1", 500), "gateway"),
])
def test_session_arguments_are_checked(local, remote, role):
    from tunnels.errors import LocalProtocolError
    from tunnels.ipsec.ike import IKEResponder, IKESession
    with pytest.raises(LocalProtocolError):
        IKESession(IKEConfig(psk=b"x"), role, local, remote)
    if role == "responder":
        with pytest.raises(LocalProtocolError):
            IKEResponder(IKEConfig(psk=b"x"), local)


def test_api_misuse_is_a_local_protocol_error():
    from tunnels.errors import LocalProtocolError
    from tunnels.ipsec.ike import IKESession
    responder = IKESession(IKEConfig(psk=b"x"), "responder", ("192.0.2.1", 500))
    with pytest.raises(LocalProtocolError):
        responder.start(0.0)
    client = IKESession(IKEConfig(psk=b"x"), "initiator", ("10.0.0.2", 500), ("192.0.2.1", 500))
    client.start(0.0)
    with pytest.raises(LocalProtocolError):
        client.start(0.0)
    with pytest.raises(LocalProtocolError):
        client.rekey_child(0x1234, 0.0)
