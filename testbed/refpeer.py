"""Reference peers: real third-party VPN software in user-mode Linux, as a lab node.

A node of kind `refpeer` is a Mininet namespace like any other (its link's veth `eth0` lives
there, and the lab captures it like every other interface) in which a user-mode Linux instance
runs. Inside the namespace a bridge joins `eth0` and a pre-created TAP; the UML's own `eth0`
uses the legacy `tuntap` transport on that TAP (the `vec` transport's vnet headers would leave
partial checksums in captures) and gets the node's address and routes from the topology.

The UML boots the host's root filesystem read-only through hostfs with our own init
(`refpeer/init.sh`, then `refpeer/agent.py` as PID 1), loads modules from Debian's
`/usr/lib/uml/modules/<ver>` through a module tree made once with `depmod -b`, bind-mounts the
configuration files rendered here from a `PeerSpec` over /etc, runs the software's role script
and writes `ready`. The instance's state directory (`<run dir>/logs/<node>-uml`, mounted at
/run/vpnlab inside) holds everything: console.log, kernel.log, syslog, pppd.log, role.log, and
the command agent's `cmd/` files through which `RefPeer.run` executes commands inside.

Teardown: power-off through the agent (daemons get SIGTERM first), then SIGTERM and SIGKILL to
the UML's process group by PID, always reaped. Labs run in vpnlab's sandbox (a private PID
namespace), so a SIGKILLed runner takes every linux.uml process with it, and the TAP and the
namespaces go with the network namespace.

This module renders and drives; it never decides what a protocol check passes (conformance/).
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import refpeer_ipsec
from testbed.errors import MissingTool, SpecError, TestbedError
from testbed.process import Result, in_namespace

DATA = Path(__file__).with_name("refpeer")
UML = "/usr/bin/linux.uml"
UML_MODULES = Path("/usr/lib/uml/modules")
MODULE_CACHE = Path(os.environ.get("VPNLAB_RUNS_DIR", "/var/tmp/vpnlab")) / "uml-modules"
TAP = "tap0"
BRIDGE = "br0"
# Modules each kind of peer loads at boot (the recipe's measured sets). xl2tpd (LNS/LAC) and
# strongSwan + xl2tpd come with our L2TP endpoint: a SOFTWARE entry with L2TP_MODULES (and
# IPSEC_MODULES), a renderer in _RENDERERS and a role in _ROLES; nothing else changes.
PPTP_MODULES = ("ppp_generic", "ppp_async", "ppp_mppe", "arc4", "sha1_generic")
L2TP_MODULES = ("ppp_generic", "ppp_async", "ppp_synctty", "l2tp_ppp")
IPSEC_MODULES = ("xfrm_user", "esp4", "authenc", "echainiv", "seqiv", "cbc", "hmac",
                 "cryptomgr", "des_generic", "iptable_filter", "xt_policy")
SOFTWARE: dict[str, tuple[str, ...]] = {
    "pptpd": PPTP_MODULES,  # a server: started by its role at boot
    "pptp-linux": PPTP_MODULES,  # a client: dials on request (RefPeer.dial)
    # xl2tpd in kernel mode (pppol2tp) with pppd; MPPE's modules too (PPP over L2TP)
    "xl2tpd-lns": L2TP_MODULES + PPTP_MODULES[2:],  # an LNS: xl2tpd started at boot
    "xl2tpd-lac": L2TP_MODULES + PPTP_MODULES[2:],  # a LAC: xl2tpd at boot, dials on request
    # strongSwan (IKEv1 transport mode, PSK) + xl2tpd: L2TP/IPsec (testbed/refpeer_ipsec.py)
    "strongswan-lns": L2TP_MODULES + PPTP_MODULES[2:] + IPSEC_MODULES,
    "strongswan-lac": L2TP_MODULES + PPTP_MODULES[2:] + IPSEC_MODULES,
}
AUTH_OPTION = {"pap": "pap", "chap": "chap", "mschap": "mschap", "mschapv2": "mschap-v2"}
MPPE_OPTIONS = {"none": ("nomppe",), "40": ("require-mppe-40",), "128": ("require-mppe-128",)}
_ids = itertools.count()


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """What runs in a reference peer and how it is configured (pppd's own option names).

    software: pptpd (PPTP server) or pptp-linux (PPTP client). auth: the one method the
    server requires or the client accepts. mppe: "none", "40" or "128" (pppd and Linux's
    ppp_mppe have no 56-bit). mppe_stateful: accept stateful MPPE when the other side asks
    (pppd always requests stateless itself). users: (name, password) pairs; a client uses
    the first. server: the address a client dials. local_ip/remote_ips: pptpd's tunnel
    addresses. echo: LCP echo interval in seconds (0: off), 3 misses end the link.
    tunnel_secret: xl2tpd's `challenge = yes` with this secret in l2tp-secrets (L2TP tunnel
    authentication, RFC 2661 §5.1.1); empty: none. psk, ike, esp: strongSwan's pre-shared
    key and its IKE and ESP proposals (ipsec.conf syntax, taken strictly).
    """

    software: str
    users: tuple[tuple[str, str], ...] = (("alice", "Pa55w0rd!"),)
    auth: str = "mschapv2"
    mppe: str = "128"
    mppe_stateful: bool = False
    server: str | None = None
    local_ip: str = "172.30.0.1"
    remote_ips: str = "172.30.0.10-19"
    echo: int = 10
    mem_mb: int = 96
    tunnel_secret: str = ""
    psk: str = ""
    ike: str = "aes256-sha1-modp2048"
    esp: str = "aes256-sha1"

    def __post_init__(self) -> None:
        if self.software not in SOFTWARE:
            raise SpecError(f"reference peer: software {self.software!r}: expected one of "
                            f"{', '.join(SOFTWARE)}")
        if self.auth not in AUTH_OPTION:
            raise SpecError(f"reference peer {self.software}: auth {self.auth!r}: expected one "
                            f"of {', '.join(AUTH_OPTION)}")
        if self.mppe not in MPPE_OPTIONS:
            raise SpecError(f"reference peer {self.software}: mppe {self.mppe!r}: expected "
                            "none, 40 or 128 (pppd has no 56-bit MPPE)")
        if self.mppe != "none" and self.auth not in ("mschap", "mschapv2"):
            raise SpecError(f"reference peer {self.software}: mppe {self.mppe}: MPPE keys come "
                            "from MS-CHAP: expected auth mschap or mschapv2")
        if self.software in ("pptp-linux", "xl2tpd-lac", "strongswan-lac") and not self.server:
            raise SpecError(f"reference peer {self.software}: server: the address to dial is "
                            "needed")
        if not self.users:
            raise SpecError(f"reference peer {self.software}: users: at least one is needed")

    @property
    def modules(self) -> tuple[str, ...]:
        return SOFTWARE[self.software]


# -- rendering (pure: unit-tested without root) ------------------------------------------------
def _ppp_common(spec: PeerSpec) -> list[str]:
    lines = list(MPPE_OPTIONS[spec.mppe])
    if spec.mppe != "none":
        lines.append("mppe-stateful" if spec.mppe_stateful else "nomppe-stateful")
    lines += ["nobsdcomp", "nodeflate", "novj", "novjccomp", "nodefaultroute", "noipx",
              "mtu 1400", "mru 1400", "debug", "logfile /run/vpnlab/pppd.log"]
    if spec.echo:
        lines += [f"lcp-echo-interval {spec.echo}", "lcp-echo-failure 3"]
    return lines


def _secrets(spec: PeerSpec) -> str:
    rows = ["# client  server  secret  addresses (rendered by vpnlab)"]
    rows += [f'{user} * "{password}" *' for user, password in spec.users]
    return "\n".join(rows) + "\n"


def render_files(spec: PeerSpec) -> dict[str, tuple[str, int]]:
    """The files bind-mounted over /etc inside the peer: {path under etc/: (text, mode)}.
    The whole of /etc/ppp is ours, so Debian's /etc/ppp/options (echo every 30 s) stays out."""
    files: dict[str, tuple[str, int]] = {
        "ppp/options": ("# vpnlab reference peer: options are in the per-peer files\n", 0o644),
        "ppp/chap-secrets": (_secrets(spec), 0o600),
        "ppp/pap-secrets": (_secrets(spec), 0o600),
        "ppp/ip-up": (_hook("ppp-up"), 0o755),
        "ppp/ip-down": (_hook("ppp-down"), 0o755),
    }
    files.update(_RENDERERS[spec.software](spec))
    return files


def _pptpd_files(spec: PeerSpec) -> dict[str, tuple[str, int]]:
    opts = ["name pptpd", "auth", f"require-{AUTH_OPTION[spec.auth]}", "refuse-eap",
            *_ppp_common(spec)]
    return {"ppp/options.pptpd": ("\n".join(opts) + "\n", 0o644),
            "pptpd.conf": ("option /etc/ppp/options.pptpd\n"
                           f"localip {spec.local_ip}\nremoteip {spec.remote_ips}\n", 0o644)}


def _pptp_linux_files(spec: PeerSpec) -> dict[str, tuple[str, int]]:
    user = spec.users[0][0]
    refuse = [f"refuse-{AUTH_OPTION[m]}" for m in AUTH_OPTION if m != spec.auth]
    opts = [f'pty "pptp {spec.server} --nolaunchpppd --loglevel 1"', f"name {user}",
            f"user {user}", "remotename vpnlab", "noauth", "refuse-eap", *refuse,
            *_ppp_common(spec), "maxfail 1", "ipparam vpnlab",
            # after the link ends pppd waits child-timeout (default 5 s) for its pty program;
            # pptp-linux's `pptp` never exits by itself and is sent SIGTERM at the end of it,
            # which is what clears its call: 1 s gives the same exchange 4 s sooner per
            # hang-up. Reverted once (a71f579: after a re-dial, `pptp` held the pty when our
            # server stopped and pppd never saw the hang-up); our server now ends each call
            # with LCP Terminate-Request first, which pppd acts on by itself.
            "child-timeout 1"]
    return {"ppp/peers/vpnlab": ("\n".join(opts) + "\n", 0o644)}


def _xl2tpd_files(spec: PeerSpec, section: list[str],
                  ppp: list[str]) -> dict[str, tuple[str, int]]:
    """xl2tpd.conf (one section; tunnel authentication when there is a secret), l2tp-secrets
    and the pppd options xl2tpd passes on (its own auth options stay off: pppd's decide)."""
    conf = ["[global]", "port = 1701", "access control = no", "debug tunnel = yes",
            "debug state = yes", "debug avp = yes", "", *section, "length bit = yes",
            "require authentication = no", "ppp debug = yes",
            "pppoptfile = /etc/ppp/options.xl2tpd",
            f"challenge = {'yes' if spec.tunnel_secret else 'no'}"]
    # us them secret: xl2tpd takes the rest of the line as the secret, quotes included
    secrets = f"* * {spec.tunnel_secret}\n" if spec.tunnel_secret else ""
    return {"xl2tpd/xl2tpd.conf": ("\n".join(conf) + "\n", 0o644),
            "xl2tpd/l2tp-secrets": ("# rendered by vpnlab\n" + secrets, 0o600),
            "ppp/options.xl2tpd": ("\n".join([*ppp, *_ppp_common(spec)]) + "\n", 0o644)}


def _xl2tpd_lns_files(spec: PeerSpec) -> dict[str, tuple[str, int]]:
    first, _, last = spec.remote_ips.partition("-")
    last = f"{first.rsplit('.', 1)[0]}.{last}" if last and "." not in last else last or first
    return _xl2tpd_files(spec, ["[lns default]", "hostname = xl2tpd", f"local ip = {spec.local_ip}",
                                f"ip range = {first}-{last}"],
                         ["name xl2tpd", "auth", f"require-{AUTH_OPTION[spec.auth]}",
                          "refuse-eap"])


def _xl2tpd_lac_files(spec: PeerSpec) -> dict[str, tuple[str, int]]:
    user = spec.users[0][0]
    refuse = [f"refuse-{AUTH_OPTION[m]}" for m in AUTH_OPTION if m != spec.auth]
    return _xl2tpd_files(spec, ["[lac vpnlab]", f"lns = {spec.server}", "hostname = xl2tpd",
                                "redial = no", "autodial = no"],
                         [f"name {user}", f"user {user}", "remotename vpnlab", "noauth",
                          "refuse-eap", *refuse, "ipparam vpnlab"])


_RENDERERS = {"pptpd": _pptpd_files, "pptp-linux": _pptp_linux_files,
              "xl2tpd-lns": _xl2tpd_lns_files, "xl2tpd-lac": _xl2tpd_lac_files,
              "strongswan-lns": lambda s: {**_xl2tpd_lns_files(s),
                                           **refpeer_ipsec.strongswan_files(s)},
              "strongswan-lac": lambda s: {**_xl2tpd_lac_files(s),
                                           **refpeer_ipsec.strongswan_files(s)}}


def _hook(name: str) -> str:
    """pppd's ip-up/ip-down (interface tty speed local remote ipparam): a JSON line, so the
    host reads the tunnel's state as data, never from pppd's free-text log."""
    return ("#!/bin/sh\n"
            f"printf '{{\"event\": \"{name}\", \"interface\": \"%s\", \"local\": \"%s\", "
            f"\"remote\": \"%s\", \"uptime\": %s}}\\n' \"$1\" \"$4\" \"$5\" "
            "\"$(cut -d' ' -f1 /proc/uptime)\" >> /run/vpnlab/ppp-events\n")


# pptpd forks into the background; ready = TCP 1723 listening (polled, bounded)
_ROLES = {
    "pptpd": ("pptpd -c /etc/pptpd.conf || exit 1\n"
              "for i in $(seq 200); do\n"
              "  ss -Hltn 'sport = :1723' | grep -q LISTEN && exit 0; sleep 0.025\n"
              "done\necho 'pptpd not listening on 1723'; exit 1\n"),
    **dict.fromkeys(("xl2tpd-lns", "xl2tpd-lac"), (
        "xl2tpd -D -c /etc/xl2tpd/xl2tpd.conf -s /etc/xl2tpd/l2tp-secrets -p /run/xl2tpd.pid "
        "-C /run/xl2tpd/l2tp-control >> /run/vpnlab/xl2tpd.log 2>&1 &\n"
        "for i in $(seq 200); do\n"
        "  ss -Hlun 'sport = :1701' | grep -q . && [ -p /run/xl2tpd/l2tp-control ] && exit 0\n"
        "  sleep 0.025\ndone\necho 'xl2tpd not listening on 1701'; exit 1\n")),
}
_ROLES.update({s: refpeer_ipsec.role(s, _ROLES["xl2tpd-lns"])
               for s in ("strongswan-lns", "strongswan-lac")})
# a client peer dials (RefPeer.dial): exit 0 once ppp0 is up (pppd's ip-up), else non-zero
_DIALS = {
    "pptp-linux": ["pppd", "call", "vpnlab", "updetach"],
    # xl2tpd keeps the tunnel (and calls the LAC "already active") after its call ended:
    # `d` closes that tunnel first, so a new `c` builds a new one
    "xl2tpd-lac": ["sh", "-c", "n=$(grep -c ppp-up /run/vpnlab/ppp-events 2>/dev/null)\n"
                   "c=/run/xl2tpd/l2tp-control\n"
                   "[ \"${n:-0}\" -gt 0 ] && { echo 'd vpnlab' > $c; sleep 1; }\n"
                   "echo 'c vpnlab' > $c || exit 1\n"
                   "for i in $(seq 500); do\n"
                   "  [ \"$(grep -c ppp-up /run/vpnlab/ppp-events 2>/dev/null)\" -gt \"${n:-0}\" ] "
                   "&& exit 0\n  sleep 0.05\ndone\nexit 1\n"],
}
_DIALS["strongswan-lac"] = ["sh", "-c", refpeer_ipsec.IPSEC_UP + _DIALS["xl2tpd-lac"][2]]


def role_script(spec: PeerSpec) -> str:
    """Runs after the network is up; its exit status is reported in `ready`."""
    return _ROLES.get(spec.software, "exit 0\n")


def boot_env(name: str, address: str | None, routes: list[tuple[str, str]],
             modules: tuple[str, ...]) -> str:
    values = {
        "VPNLAB_NAME": name, "VPNLAB_IF": "eth0", "VPNLAB_ADDRESS": address or "",
        "VPNLAB_ROUTES": " ".join(f"{dest}@{via}" for dest, via in routes),
        # the agent runs from the state dir (/run/vpnlab inside): init mounts tmpfs over /tmp,
        # /var/lib, /root..., which would hide a project checked out below one of them
        "VPNLAB_MODULES": " ".join(modules), "VPNLAB_AGENT": "/run/vpnlab/agent.py",
    }
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def uml_argv(name: str, state: Path, mem_mb: int) -> list[str]:
    return [UML, f"umid={name}", f"uml_dir={state / 'uml'}", f"mem={mem_mb}M",
            "rootfstype=hostfs", "rootflags=/", "ro", f"init={DATA / 'init.sh'}",
            "con=null", "con0=fd:0,fd:1", f"eth0=tuntap,{TAP}", f"vpnlab_state={state}"]


# -- the module tree ----------------------------------------------------------------------------
def uml_version() -> str:
    versions = sorted(p.name for p in UML_MODULES.iterdir()) if UML_MODULES.is_dir() else []
    if not versions or not Path(UML).exists():
        raise MissingTool("user-mode Linux", "apt-get install user-mode-linux")
    return versions[-1]


def module_root() -> Path:
    """`modprobe -d ROOT` tree for the packaged UML modules: links, not copies, with
    `depmod -b` run once and cached; built in a private directory then renamed into place,
    so concurrent labs (xdist workers) never see half a tree."""
    version = uml_version()
    root = MODULE_CACHE / version
    if (root / "lib" / "modules" / version / "modules.dep").exists():
        return root
    tmp = MODULE_CACHE / f".{version}-{os.getpid()}"
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    tree = tmp / "lib" / "modules" / version
    tree.mkdir(parents=True)
    (tree / "kernel").symlink_to(UML_MODULES / version / "kernel")
    for f in (UML_MODULES / version).glob("modules.*"):
        (tree / f.name).write_bytes(f.read_bytes())
    subprocess.run(["depmod", "-b", str(tmp), version], check=True, capture_output=True)
    try:
        tmp.rename(root)
    except OSError:  # another worker got there first
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
    return root


# -- a running instance -------------------------------------------------------------------------
class RefPeer:
    """One user-mode Linux instance attached to the namespace of process `pid_ns`."""

    def __init__(self, name: str, spec: PeerSpec, pid_ns: int, state: Path,
                 address: str | None, routes: list[tuple[str, str]]):
        self.name, self.spec, self.pid_ns, self.state = name, spec, pid_ns, state
        self.address, self.routes = address, routes
        self.proc: subprocess.Popen | None = None
        self.boot_seconds: float | None = None

    # files the host reads: logs and pppd's events
    def log(self, which: str) -> str:
        try:
            return (self.state / which).read_text(errors="replace")
        except OSError:
            return ""

    def ppp_events(self) -> list[dict]:
        return [json.loads(line) for line in self.log("ppp-events").splitlines() if line]

    def _ns(self, argv: list[str]) -> None:
        done = subprocess.run(in_namespace(self.pid_ns, argv), capture_output=True, text=True,
                              timeout=10)
        if done.returncode:
            raise TestbedError(f"reference peer {self.name}: `{' '.join(argv)}` exited "
                               f"{done.returncode}: {done.stderr.strip()}")

    def _write_state(self) -> None:
        subprocess.run(["rm", "-rf", str(self.state)], check=True)
        (self.state / "cmd").mkdir(parents=True)
        (self.state / "uml").mkdir()
        modroot = module_root()
        files = {
            "boot.env": (boot_env(self.name, self.address, self.routes, self.spec.modules),
                         0o644),
            "modprobe.sh": (f'#!/bin/sh\nexec /sbin/modprobe -d {modroot} "$@"\n', 0o755),
            "role.sh": (role_script(self.spec), 0o644),
            "agent.py": ((DATA / "agent.py").read_text(), 0o644),
            **{f"etc/{k}": v for k, v in render_files(self.spec).items()},
        }
        for rel, (text, mode) in files.items():
            path = self.state / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(mode)

    def _attach(self) -> None:
        """eth0 (the lab's veth) and the TAP on one bridge in the node's namespace."""
        self._ns(["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])
        self._ns(["ip", "link", "add", BRIDGE, "type", "bridge", "stp_state", "0",
                  "forward_delay", "0"])
        for dev in ("eth0", TAP):
            self._ns(["ip", "link", "set", dev, "master", BRIDGE])
        for dev in (BRIDGE, "eth0", TAP):
            self._ns(["ip", "link", "set", dev, "up"])
        self._ns(["sysctl", "-q", "-w", f"net.ipv6.conf.{BRIDGE}.disable_ipv6=1"])

    def boot(self, timeout: float = 60.0) -> float:
        """Start the instance and wait for its `ready` file; returns the seconds it took."""
        self.start()
        return self.wait_ready(timeout)

    def start(self) -> None:
        self._write_state()
        self._attach()
        self._t0 = time.monotonic()
        with open(self.state / "kernel.log", "wb") as log:
            self.proc = subprocess.Popen(
                in_namespace(self.pid_ns, uml_argv(self.name, self.state, self.spec.mem_mb)),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> float:
        ready = self._wait_file(self.state / "ready", timeout, "boot")
        self.boot_seconds = time.monotonic() - self._t0
        if json.loads(ready)["role_rc"] != 0:
            raise TestbedError(f"reference peer {self.name}: {self.spec.software} did not "
                               f"start; role.log:\n{self.log('role.log')[-800:]}\nsyslog:\n"
                               f"{self.log('syslog')[-800:]}")
        return self.boot_seconds

    def _wait_file(self, path: Path, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            if path.exists():
                return path.read_text()
            if self.proc is None or self.proc.poll() is not None:
                raise TestbedError(f"reference peer {self.name}: UML exited during {what}; "
                                   f"console:\n{self.log('console.log')[-800:]}\nkernel:\n"
                                   f"{self.log('kernel.log')[-800:]}")
            if time.monotonic() > deadline:
                raise TestbedError(f"reference peer {self.name}: {what} not finished after "
                                   f"{timeout}s; console:\n{self.log('console.log')[-800:]}")
            time.sleep(0.02)

    def run(self, argv: list[str], timeout: float = 30.0, check: bool = False) -> Result:
        """Run argv inside the instance through the agent: exit status and output."""
        ident = f"{os.getpid()}-{next(_ids)}"
        base = self.state / "cmd" / ident
        tmp = base.with_suffix(".tmp")
        tmp.write_text(json.dumps({"argv": argv, "timeout": timeout}))
        tmp.rename(base.with_suffix(".json"))
        rc = json.loads(self._wait_file(base.with_suffix(".rc"), timeout + 5,
                                        f"`{' '.join(argv)}`"))["rc"]
        out = base.with_suffix(".out").read_text(errors="replace")
        for suffix in (".run", ".out", ".rc"):
            base.with_suffix(suffix).unlink(missing_ok=True)
        result = Result(rc, out, "")
        if check and not result.ok:
            raise TestbedError(f"reference peer {self.name}: `{' '.join(argv)}` exited {rc}: "
                               f"{out.strip()[-400:]}")
        return result

    def sh(self, script: str, timeout: float = 30.0, check: bool = False) -> Result:
        return self.run(["sh", "-c", script], timeout=timeout, check=check)

    def dial(self, timeout: float = 30.0) -> Result:
        """A client peer dials: `pppd call vpnlab updetach` (xl2tpd: `c vpnlab` on its control
        pipe, then ppp0's ip-up) returns once IPCP is up (0) or the attempt failed."""
        return self.run(_DIALS[self.spec.software], timeout=timeout)

    def stop(self) -> int | None:
        """Power off through the agent, then SIGTERM/SIGKILL the process group; reaped."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            (self.state / "cmd" / "poweroff").write_text("")
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                for sig, wait in ((signal.SIGTERM, 2), (signal.SIGKILL, 5)):
                    try:
                        os.killpg(self.proc.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        self.proc.wait(wait)
                        break
                    except subprocess.TimeoutExpired:
                        continue
        try:  # UML's helper processes share its process group: none may outlive it
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.wait(5)

    def memory_kib(self) -> int:
        """Host memory of the UML's processes in kB: proportional set size, each address space
        once (guest RAM is shared memory; only the pages the guest touched count)."""
        if self.proc is None:
            return 0
        spaces: dict[str, int] = {}  # UML's helpers share its address space (CLONE_VM): the
        for pid in _group(self.proc.pid):  # same mappings, counted once
            try:
                maps = Path(f"/proc/{pid}/maps").read_text()
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            spaces[maps] = sum(int(line.split()[1]) for line in rollup.splitlines()
                               if line.startswith("Pss:"))
        return sum(spaces.values())


def _group(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out
