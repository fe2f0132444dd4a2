"""strongSwan (IKEv1, transport mode, PSK) beside xl2tpd in a reference peer: the files and
role scripts testbed/refpeer.py adds for software `strongswan-lns` and `strongswan-lac`.

Pure rendering from the recipe's configuration (../shared/peers/cfg/ipsec-*): charon with a
short plugin list (the full modular load takes ~3 s in UML; Debian has no `des` plugin, OpenSSL
gives 3DES), `ipsec.conf` with one connection `vpnlab` for UDP 1701, the proposals the cell
asks for (strict, `!`), and the PSK. The LNS accepts L2TP only from inside ESP (an
iptables-legacy policy rule: nf_tables fails in UML); the LAC dials only once `ipsec status`
shows the CHILD_SA INSTALLED (`ipsec up` exits 0 even when it failed).
"""

from __future__ import annotations

from typing import Protocol

PLUGINS = ("random nonce openssl pem pkcs1 pubkey x509 revocation constraints kdf hmac xcbc "
           "cmac aes sha1 sha2 md5 gmp curve25519 kernel-netlink socket-default stroke updown")
CONN = "vpnlab"


class _Spec(Protocol):
    software: str
    server: str | None
    psk: str
    ike: str
    esp: str


def strongswan_files(spec: _Spec) -> dict[str, tuple[str, int]]:
    """/etc/ipsec.conf, /etc/ipsec.secrets and /etc/strongswan.conf of the peer."""
    lns = spec.software == "strongswan-lns"
    conn = [f"conn {CONN}", "\tkeyexchange=ikev1", "\tauthby=secret", "\ttype=transport",
            "\tleft=%defaultroute", "\tleftprotoport=17/1701",
            *(["\tright=%any", "\trightprotoport=17/%any"] if lns else
              [f"\tright={spec.server}", "\trightprotoport=17/1701"]),
            f"\tike={spec.ike}!", f"\tesp={spec.esp}!", "\trekey=no",
            "\tdpddelay=10", "\tdpdtimeout=30", "\tdpdaction=clear", "\tauto=add"]
    conf = ["# rendered by vpnlab (testbed/refpeer_ipsec.py)", "config setup",
            "\tuniqueids=no", "", *conn]
    charon = ["charon {", "\tload_modular = no", f"\tload = {PLUGINS}",
              "\tinstall_virtual_ip = no", "\tfilelog {", "\t\tcharon {",
              "\t\t\tpath = /run/vpnlab/charon.log", "\t\t\ttime_format = %T",
              "\t\t\tdefault = 1", "\t\t\tike = 2", "\t\t\tknl = 2", "\t\t\tcfg = 2",
              "\t\t\tflush_line = yes", "\t\t}", "\t}", "}"]
    return {"ipsec.conf": ("\n".join(conf) + "\n", 0o644),
            "ipsec.secrets": (f': PSK "{spec.psk}"\n', 0o600),
            "strongswan.conf": ("\n".join(charon) + "\n", 0o644)}


# charon up and the connection loaded (stroke socket answering), bounded
_CHARON = ("ipsec start >> /run/vpnlab/ipsec.log 2>&1 || exit 1\n"
           "for i in $(seq 200); do\n"
           f"  ipsec statusall 2>/dev/null | grep -q '{CONN}:' && break; sleep 0.05\n"
           "done\n"
           f"ipsec statusall 2>/dev/null | grep -q '{CONN}:' || {{ echo 'charon not ready'; "
           "exit 1; }\n")
# only L2TP that arrived inside ESP reaches xl2tpd (as a real L2TP/IPsec server)
_ESP_ONLY = ("iptables-legacy -A INPUT -p udp --dport 1701 -m policy --dir in --pol none "
             "-j DROP || { echo 'iptables policy rule failed'; exit 1; }\n")


def role(software: str, xl2tpd_role: str) -> str:
    """The LNS: ESP-only L2TP, charon, then xl2tpd; the LAC: charon, then xl2tpd."""
    return (_ESP_ONLY if software == "strongswan-lns" else "") + _CHARON + xl2tpd_role


# the LAC's dial: Main Mode + Quick Mode first (unless the SA is still there), then L2TP
IPSEC_UP = (f"ipsec status {CONN} | grep -q INSTALLED || "
            f"ipsec up {CONN} >> /run/vpnlab/ipsec.log 2>&1\n"
            f"ipsec status {CONN} | grep -q INSTALLED || "
            "{ echo 'IPsec SA not installed: not starting L2TP'; exit 3; }\n")
