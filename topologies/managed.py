"""`managed-server`: the chapter's "Managing Virtual Private Networking" on the remote-access
topology: where accounts live, who may connect, how identity is verified, where addresses come
from and how activity is recorded.

The intranet file server doubles as the company's infrastructure server: with
`provider=radius` (or `accounting=radius`) a real FreeRADIUS runs there, with `addresses=dhcp`
a real dnsmasq hands the VPN server blocks of intranet addresses (RRAS's DHCP-obtained pool;
the server answers ARP for its clients on the intranet). `policies=chapter` loads remote
access policies in the spirit of the chapter's Tables 9.1-9.4: PPTP and L2TP/IPsec for the
VPN_Users group with their own profiles, contractors only in working hours, everyone else
refused. One client connects as `user`; the checks compare what happened with what the
policies say should happen (`expected`), on the client, in the server's status, on the wire.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import SpecError
from testbed.lab import Lab
from testbed.model import LabSpec
from testbed.scenario import CheckResult, Param, Scenario
from topologies import remote_access as ra

RADIUS_SECRET = "vpnlab-radius-secret"
INFRA = ra.FILESERVER  # 10.10.0.20: FreeRADIUS and dnsmasq run on the intranet file server
# radius_failover=yes: the first server listed never answers: the file server holds the address
# too but drops RADIUS to it, so the requests and their retransmissions are on the wire
SILENT_RADIUS = "10.10.0.21"
DHCP_RANGE = ("10.10.0.100", "10.10.0.131")
STATIC_ADDRESS = "10.10.100.50"
ACCOUNTING_LOG = "accounting.jsonl"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    dialin: str = "policy"
    static_address: str | None = None


USERS = {u.name: u for u in (
    User("alice", ("VPN_Users",)),
    User("bob", ("VPN_Users",)),
    User("carol", ("VPN_Users",), dialin="deny"),  # Deny access on her Dial-in tab
    User("dave", ("Contractors",)),
    User("erin", (), dialin="allow"),  # Allow access, but no policy's conditions fit her
    User("frank", ("VPN_Users",), static_address=STATIC_ADDRESS),
)}
PPTP_POLICY = "VPN_Users over PPTP"
L2TP_POLICY = "VPN_Users over L2TP/IPsec"
CONTRACTOR_POLICY = "Contractors in working hours"


def policies_toml(params: Mapping[str, str]) -> list[str]:
    if params["policies"] == "default":
        return []  # the Windows 2000 default policy (tunnels/policy.py DEFAULT_POLICIES)
    return [
        "[[policies]]",
        f'name = "{PPTP_POLICY}"',
        'nas_port_type = ["virtual"]',
        'tunnel_type = ["pptp"]',
        'groups = ["VPN_Users"]',
        'permission = "grant"',
        "[policies.profile]",
        'auth = ["mschapv2", "mschap"]',
        'encryption = ["strong", "strongest"]',
        f"idle_timeout = {params['idle_timeout']}",
        "",
        "[[policies]]",
        f'name = "{L2TP_POLICY}"',
        'nas_port_type = ["virtual"]',
        'tunnel_type = ["l2tp"]',
        'groups = ["VPN_Users"]',
        'permission = "grant"',
        "[policies.profile]",
        'auth = ["mschapv2", "mschap"]',
        'encryption = ["strongest"]',  # 3DES (or AES) only: DES is refused with 742
        "",
        "[[policies]]",
        f'name = "{CONTRACTOR_POLICY}"',
        'groups = ["Contractors"]',
        f'days_and_times = ["{params["contractor_hours"]}"]',
        'permission = "grant"',
        "[policies.profile]",
        f"session_timeout = {params['session_timeout']}",
        "",
    ]


def expected(params: Mapping[str, str], now: float | None = None) -> tuple[bool, int | None,
                                                                          str | None]:
    """(granted, Windows error, policy) the chapter's rules give for this connection."""
    from tunnels.policy import TimeWindow

    user = USERS[params["user"]]
    if params["password"] != ra.PASSWORD:
        return False, 691, None
    radius = params["provider"] == "radius"
    # RADIUS users: the Access-Accept admits under the default policy; with the chapter's
    # policies their permission is "control access through policy"
    dialin = ("allow" if params["policies"] == "default" else "policy") if radius \
        else user.dialin
    if params["policies"] == "default":
        return (dialin == "allow", None if dialin == "allow" else 649,
                "Allow access if dial-in permission is enabled")
    tunnel = "pptp" if params["protocol"] == "pptp" else "l2tp"
    groups = user.groups if not (radius and user.dialin == "deny") else ()
    stamp = datetime.datetime.fromtimestamp(time.time() if now is None else now)
    if "VPN_Users" in groups:
        policy = PPTP_POLICY if tunnel == "pptp" else L2TP_POLICY
    elif "Contractors" in groups and TimeWindow.parse(params["contractor_hours"]).contains(stamp):
        policy = CONTRACTOR_POLICY
    else:
        return False, 649, None
    if dialin == "deny":
        return False, 649, policy
    if policy != CONTRACTOR_POLICY and params["auth"] not in ("mschapv2", "mschap"):
        return False, 649, policy
    if policy == L2TP_POLICY and (params["cipher"] or "3des-cbc") == "des-cbc":
        return False, 742, policy
    # granted; with PPTP encryption none or basic the MPPE negotiation then fails (the
    # profile wants 56 or 128 bits), after the policy's decision
    return True, None, policy


SERVER_AUTH = ("mschapv2", "mschap", "chap", "pap", "eap-md5")  # the policies narrow these
SERVER_CIPHERS = ("3des-cbc", "aes-cbc-128", "aes-cbc-256", "des-cbc")


def server_config(params: Mapping[str, str], listen: str, run_dir: Path) -> str:
    """One RRAS-like server for both of the chapter's VPN connections (PPTP and L2TP/IPsec),
    so the per-tunnel-type policies both apply; the policies, not the server's settings,
    decide which methods and levels a user gets."""
    rap = {**_ra_params(params), "protocol": "l2tp-ipsec", "cipher": ""}
    head, _, tail = ra.server_config(rap, listen, str(run_dir / "esp-keys.jsonl"),
                                     users=users_toml(params)).partition("\n\n")
    replaced = {"auth": f"auth = {json.dumps(list(SERVER_AUTH))}",
                "protocols": 'protocols = ["pptp", "l2tp-ipsec"]',
                "ipsec_ciphers": f"ipsec_ciphers = {json.dumps(list(SERVER_CIPHERS))}",
                "pool": None if params["addresses"] == "dhcp" else f'pool = "{params["pool"]}"'}
    out = [ln for ln in head.splitlines() if ln.split(" = ")[0] not in replaced]
    out += [v for v in replaced.values() if v is not None]
    out += ["", "[ports]", f"pptp = {params['ports']}", f"l2tp = {_l2tp_ports(params)}", ""]
    if params["addresses"] == "dhcp":
        out += ["[addresses]", 'source = "dhcp"', 'dhcp_interface = "eth1"',
                f'dhcp_server = "{INFRA}"', f"dhcp_block = {params['dhcp_block']}", ""]
    if params["provider"] == "radius":
        out += ["[authentication]", 'provider = "radius"']
        for address in _radius_addresses(params):
            out += ["[[authentication.radius]]", f'address = "{address}"',
                    f'secret = "{RADIUS_SECRET}"', "timeout = 1", "retries = 2"]
        out.append("")
    if params["accounting"] != "none":
        out += ["[accounting]", f'provider = "{params["accounting"]}"',
                f"interim_interval = {params['interim']}"]
        if params["accounting"] == "local":
            out.append(f'log = "{run_dir / ACCOUNTING_LOG}"')
        else:
            out += ["[[accounting.radius]]", f'address = "{INFRA}"',
                    f'secret = "{RADIUS_SECRET}"']
        out.append("")
    return "\n".join([*out, *policies_toml(params), tail])


def users_toml(params: Mapping[str, str]) -> str:
    lines = []
    for user in USERS.values():
        lines += [f"[users.{user.name}]", f'password = "{ra.PASSWORD}"',
                  f'dialin = "{user.dialin}"',
                  f"groups = [{', '.join(json.dumps(g) for g in user.groups)}]"]
        if user.static_address and params["addresses"] == "pool" and \
                ipaddress.IPv4Address(user.static_address) in ipaddress.IPv4Network(params["pool"]):
            lines.append(f'static_address = "{user.static_address}"')
    return "\n".join(lines) + "\n"


def _l2tp_ports(params: Mapping[str, str]) -> str:
    return params["l2tp_ports"] or params["ports"]


def _radius_addresses(params: Mapping[str, str]) -> list[str]:
    return [SILENT_RADIUS, INFRA] if params["radius_failover"] == "yes" else [INFRA]


def radius_users(params: Mapping[str, str]) -> tuple:
    """The same people in FreeRADIUS: groups as Filter-Id, a Class to echo in accounting, the
    static address as Framed-IP-Address, and `radius_session_timeout`/`radius_idle_timeout`
    as Session-Timeout/Idle-Timeout for everyone. A denied dial-in is accepted in no group:
    with the chapter's policies none matches (649)."""
    from testbed.freeradius import RadiusUser

    out = []
    for user in USERS.values():
        groups = () if user.dialin == "deny" else user.groups
        reply: list[tuple[str, str | int]] = [("Filter-Id", g) for g in groups]
        reply.append(("Class", f"vpnlab-{user.name}"))
        if user.static_address:
            reply.append(("Framed-IP-Address", user.static_address))
        for item, param in (("Session-Timeout", "radius_session_timeout"),
                            ("Idle-Timeout", "radius_idle_timeout")):
            if int(params[param]):
                reply.append((item, int(params[param])))
        out.append(RadiusUser(user.name, ra.PASSWORD, tuple(reply)))
    return tuple(out)


def _ra_params(params: Mapping[str, str]) -> dict[str, str]:
    keep = ("protocol", "auth", "encryption", "mppe", "nat", "cipher", "clients")
    return ra.SCENARIO.resolve({k: params[k] for k in keep})


_COUNTS = ("interim", "dhcp_block", "session_timeout", "idle_timeout", "ports", "l2tp_ports",
           "radius_session_timeout", "radius_idle_timeout")
_MAY_BE_EMPTY = ("l2tp_ports",)


def build(params: Mapping[str, str]) -> LabSpec:
    if params["protocol"] not in ("pptp", "l2tp-ipsec"):
        raise SpecError(f"managed-server: protocol={params['protocol']!r}: expected pptp or "
                        "l2tp-ipsec (the chapter's two VPN connections)")
    if params["user"] not in USERS:
        raise SpecError(f"managed-server: user={params['user']!r}: expected one of "
                        f"{', '.join(USERS)}")
    for name in _COUNTS:
        value = params[name]
        if not (value.isdigit() or (value == "" and name in _MAY_BE_EMPTY)):
            raise SpecError(f"managed-server: {name}={value!r}: expected a whole number >= 0"
                            + (" or empty" if name in _MAY_BE_EMPTY else ""))
    spec = ra.build(_ra_params(params))
    return LabSpec("managed-server", spec.nodes, spec.links,
                   "remote access to a managed VPN server: accounts, RADIUS, policies, "
                   "DHCP-obtained addresses, accounting")


def start(lab: Lab, params: Mapping[str, str]) -> None:
    assert lab.run_dir is not None
    infra = lab.node("fileserver")
    if params["provider"] == "radius" or params["accounting"] == "radius":
        from testbed.freeradius import FreeRadius, FreeRadiusSpec, RadiusClientSpec

        spec = FreeRadiusSpec(address=INFRA, users=radius_users(params),
                              clients=(RadiusClientSpec("10.10.0.0/24", RADIUS_SECRET),))
        lab.freeradius = FreeRadius.on_node(infra, spec).start()  # type: ignore[attr-defined]
    if params["radius_failover"] == "yes":
        infra.run(["ip", "address", "add", f"{SILENT_RADIUS}/24", "dev", "eth0"], check=True)
        infra.run(["iptables", "-A", "INPUT", "-d", SILENT_RADIUS, "-p", "udp", "--dport",
                   "1812", "-j", "DROP"], check=True)
    if params["addresses"] == "dhcp":
        from testbed.dnsmasq import start_dnsmasq

        lab.dnsmasq = start_dnsmasq(  # type: ignore[attr-defined]
            infra, "eth0", DHCP_RANGE[0], DHCP_RANGE[1], netmask="255.255.255.0")
    listen = lab.address("vpnsrv", "isp")
    config = lab.run_dir / "vpnsrv.toml"
    config.write_text(server_config(params, listen, lab.run_dir))
    lab.node("vpnsrv").start_daemon(
        "vpnserver", ra._cli("server", "--config", str(config), "--json", "--status",
                             str(lab.run_dir / "vpnsrv-status.json")),
        ready=r'"event": "(listening|failed)"', timeout=30)
    lab.pre_tunnel = {c: lab.node(c).run(  # type: ignore[attr-defined]
        ["ping", "-c1", "-W1", "-n", INFRA]).ok for c in ra.clients(lab)}
    ra.connect(lab, "client", _ra_params(params), user=params["user"],
               password=params["password"])
    if "client2" in lab.nodes:  # a second caller, once the first one is settled
        ra.connect(lab, "client2", second_params(params), user=params["user2"])


def second_params(params: Mapping[str, str]) -> dict[str, str]:
    """The second caller's remote-access parameters: `protocol2` when given."""
    return {**_ra_params(params), "protocol": params["protocol2"] or params["protocol"]}


def dhcp_leases(lab: Lab) -> list[dict]:
    """dnsmasq's lease file on the intranet server, as dicts (address, mac, client_id...)."""
    from dataclasses import asdict

    return [asdict(lease) for lease in lab.dnsmasq.leases()]  # type: ignore[attr-defined]


def checks(lab: Lab, params: Mapping[str, str]) -> list[CheckResult]:
    granted, code, policy = expected(params)
    st = ra.status(lab, "client")
    server = ra.status(lab, "vpnsrv")
    out = []
    if granted:
        up = st.get("state") == "up"
        out.append(CheckResult(f"{params['user']}: granted, tunnel up", up,
                               f"address {st.get('local_address')}" if up else
                               f"state {st.get('state')}: {st.get('reason')}"))
        if up:
            mine = [s for s in server.get("sessions", [])
                    if s.get("address") == st.get("local_address")]
            out.append(CheckResult(f"the server lets {params['user']} in by policy {policy!r}",
                                   bool(mine) and mine[0].get("policy") == policy,
                                   f"server: {mine[0] if mine else 'no session'}"))
            out += [r for r in ra.check_reach(lab) if r.name.startswith("client:")]
    else:
        down = st.get("state") == "down"
        reason = st.get("reason") or ""
        out.append(CheckResult(f"{params['user']}: refused with error {code}",
                               down and f"error {code}" in reason,
                               f"state {st.get('state')}: {reason}"))
        refused = server.get("refused", []) + server.get("ended", [])
        named = [r for r in refused if str(code) in json.dumps(r) or
                 (policy and policy in json.dumps(r))]
        out.append(CheckResult("the server says why", bool(named),
                               json.dumps(refused[-1]) if refused else "nothing recorded"))
        res = lab.node("client").run(["ping", "-c1", "-W1", "-n", INFRA])
        out.append(CheckResult("the intranet stays out of reach", not res.ok,
                               "answered" if res.ok else "no answer"))
    if "client2" in lab.nodes:
        out += _check_second(lab, params, server)
    return out


def second_refusal(params: Mapping[str, str]) -> str | None:
    """Why the second caller cannot get in (its tunnel type's port limit, an exhausted pool),
    or None. Ports are counted per tunnel type, as RRAS counts its PPTP and L2TP ports."""
    first = "pptp" if params["protocol"] == "pptp" else "l2tp"
    second = "pptp" if (params["protocol2"] or params["protocol"]) == "pptp" else "l2tp"
    limit = int(params["ports"] if second == "pptp" else _l2tp_ports(params))
    if limit < (2 if first == second else 1):
        return "ports are in use"
    if params["addresses"] == "pool" and \
            ipaddress.IPv4Network(params["pool"]).num_addresses - 3 < 2:
        return "no address left"
    return None


def _check_second(lab: Lab, params: Mapping[str, str], server: dict) -> list[CheckResult]:
    st = ra.status(lab, "client2")
    why = second_refusal(params)
    if why is None:
        return [CheckResult(f"client2 ({params['user2']}, "
                            f"{second_params(params)['protocol']}): tunnel up",
                            st.get("state") == "up",
                            f"state {st.get('state')}: {st.get('reason')}")]
    recorded = [r for r in server.get("refused", []) if why in str(r.get("reason"))]
    return [CheckResult(f"client2 ({params['user2']}): refused cleanly ({why})",
                        st.get("state") == "down" and bool(recorded),
                        f"client: {st.get('state')}: {st.get('reason')}; server: "
                        f"{recorded[-1] if recorded else server.get('refused')}"),
            CheckResult("the first caller is unaffected", ra.status(lab, "client").get("state")
                        == "up" or not expected(params)[0], "")]


SCENARIO = Scenario(
    name="managed-server",
    description="A managed VPN server: accounts, RADIUS (FreeRADIUS), remote access "
                "policies, DHCP-obtained addresses (dnsmasq), accounting",
    build=build,
    start=start,
    checks=checks,
    params={
        "protocol": Param("pptp", ("pptp", "l2tp-ipsec"), "tunnel protocol"),
        "auth": Param("mschapv2", ("pap", "chap", "mschap", "mschapv2", "eap-md5"),
                      "the client's authentication method"),
        "encryption": Param("strongest", ("none", "optional", "basic", "strong", "strongest"),
                            "the client's encryption setting"),
        "mppe": Param("stateless", ("stateless", "stateful"), "MPPE mode"),
        "cipher": Param("", ("", "des-cbc", "3des-cbc", "aes-cbc-128", "aes-cbc-256"),
                        "L2TP/IPsec ESP cipher (empty: 3DES)"),
        "nat": Param("none", ("none", "pptp-helper"), "the client behind a home NAT"),
        "clients": Param("1", ("1", "2"), "callers (2 needs nat=pptp-helper); the second "
                         "connects as user2 after the first"),
        "user2": Param("bob", tuple(USERS), "who the second caller is"),
        "pool": Param(ra.POOL, (), "the static pool (the first address is the server's)"),
        "provider": Param("local", ("local", "radius"),
                          "authentication provider: local accounts or RADIUS (FreeRADIUS)"),
        "accounting": Param("none", ("none", "local", "radius"), "accounting provider"),
        "interim": Param("0", (), "seconds between accounting Interim-Updates (0: none)"),
        "addresses": Param("pool", ("pool", "dhcp"),
                           "client addresses from a static pool or from DHCP (dnsmasq)"),
        "dhcp_block": Param("4", (), "addresses the server leases from DHCP at a time"),
        "policies": Param("chapter", ("chapter", "default"),
                          "remote access policies: the chapter's, or Windows 2000's default"),
        "user": Param("alice", tuple(USERS), "who connects (see USERS: groups and dial-in)"),
        "password": Param(ra.PASSWORD, (), "the password the client gives"),
        "contractor_hours": Param("Mon-Sun 00:00-24:00", (), "when contractors may connect"),
        "session_timeout": Param("3600", (), "contractors' session timeout (s)"),
        "idle_timeout": Param("900", (), "PPTP profile's idle timeout (s)"),
        "ports": Param("16", (), "PPTP ports (calls); also L2TP's unless l2tp_ports is set"),
        "l2tp_ports": Param("", (), "L2TP ports (calls) when not the same as PPTP's"),
        "protocol2": Param("", ("", "pptp", "l2tp-ipsec"),
                           "the second caller's protocol (empty: the first caller's)"),
        "radius_session_timeout": Param("0", (), "Session-Timeout in every Access-Accept "
                                        "(s; 0: none)"),
        "radius_idle_timeout": Param("0", (), "Idle-Timeout in every Access-Accept (s; 0: none)"),
        "radius_failover": Param("no", ("no", "yes"),
                                 "list a silent RADIUS server first: fail-over to the real one"),
    },
)
