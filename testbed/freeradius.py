"""A real FreeRADIUS (Debian's freeradius 3.2) inside a lab node or a test's namespace.

`FreeRadius(spec, run_dir, pid)` renders a minimal configuration of its own into `run_dir`
(no copy of /etc/freeradius: only what a VPN server's RADIUS needs): one listener pair on the
spec's address, clients with their secrets, users with Cleartext-Password and reply items, the
pap, chap and mschap modules (MPPE keys on, `require_encryption`/`require_strong` off, so the
NAS's own policy decides), the eap module with EAP-MD5 only (`default_eap_type = md5`, no TLS:
EAP relayed by the NAS in EAP-Message attributes, RFC 3579, is answered with Access-Challenges
carrying the MD5 Request and State, then Accept/Reject with EAP-Success/Failure), a
Message-Authenticator in every Access-Accept/Reject (stock 3.2.1 signs only EAP replies, 3.2.5
signs all; our client requires it), and accounting written by
the `detail` module under `run_dir/radacct` plus one line per request in `accounting.log`.
It starts `freeradius -f` under `testbed.process.Daemon` in the namespaces of `pid` and waits
for "Ready to process requests" (logged after the sockets are bound). Several instances on
different addresses (fail-over) each get their own run directory.
"""

from __future__ import annotations

import re
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.errors import TestbedError
from testbed.process import Daemon

if TYPE_CHECKING:
    from testbed.lab import Node

FREERADIUS = shutil.which("freeradius") or "/usr/sbin/freeradius"
DICTIONARY_DIR = Path("/usr/share/freeradius")
LIB_DIR = Path("/usr/lib/freeradius")
READY = r"Ready to process requests"
_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")


@dataclass(frozen=True, slots=True)
class RadiusUser:
    """A user of the `files` module; `reply` holds (attribute, value) reply items in
    FreeRADIUS syntax (strings are quoted on rendering, numbers and addresses are not)."""

    name: str
    password: str
    reply: tuple[tuple[str, str | int], ...] = ()


@dataclass(frozen=True, slots=True)
class RadiusClientSpec:
    """A NAS allowed to talk to the server: an address or prefix ("10.0.0.0/24") and its
    secret."""

    address: str
    secret: str


@dataclass(frozen=True, slots=True)
class FreeRadiusSpec:
    address: str = "127.0.0.1"
    clients: tuple[RadiusClientSpec, ...] = ()
    users: tuple[RadiusUser, ...] = ()
    auth_port: int = 1812
    acct_port: int = 1813
    debug: bool = False  # -X: every packet in the log (slower; secrets in the log)
    extra_authorize: tuple[str, ...] = ()  # unlang lines run after `files`

    def __post_init__(self) -> None:
        if not self.clients:
            raise TestbedError("FreeRadiusSpec.clients: expected at least one NAS client")
        for user in self.users:
            if '"' in user.name or '"' in user.password or "\\" in user.password:
                raise TestbedError(f"RadiusUser {user.name!r}: quotes and backslashes are not "
                                   "rendered")
            for attribute, _ in user.reply:
                if not _ATTRIBUTE.match(attribute):
                    raise TestbedError(f"RadiusUser {user.name!r}: reply attribute "
                                       f"{attribute!r} is not an attribute name")


def skip_reason() -> str | None:
    """Why FreeRADIUS cannot run here (None when it can)."""
    if not Path(FREERADIUS).exists():
        return ("freeradius is not installed (Debian package freeradius; ci/setup.sh installs "
                "it): /usr/sbin/freeradius missing")
    if not (DICTIONARY_DIR / "dictionary").exists():
        return f"freeradius dictionaries missing: {DICTIONARY_DIR}/dictionary"
    return None


class FreeRadius:
    """One FreeRADIUS process; `start()` renders and starts it, `stop()` stops it (idempotent).
    Usable as a context manager."""

    def __init__(self, spec: FreeRadiusSpec, run_dir: Path, pid: int, node: str = "radius"):
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.pid = pid
        self.node = node
        self.daemon: Daemon | None = None

    @classmethod
    def on_node(cls, node: Node, spec: FreeRadiusSpec, name: str = "freeradius") -> FreeRadius:
        """An instance on a running lab's node: its run directory under the lab's, its daemon
        registered with the node so the lab's teardown stops it."""
        server = cls(spec, node.lab.run_dir / f"{node.name}-{name}", node.pid, node.name)
        server._register = (node.daemons, name)
        return server

    _register: tuple[dict[str, Daemon], str] | None = None

    # paths -----------------------------------------------------------------------------------

    @property
    def conf_dir(self) -> Path:
        return self.run_dir / "raddb"

    @property
    def acct_dir(self) -> Path:
        return self.run_dir / "radacct"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "freeradius.log"

    @property
    def accounting_log(self) -> Path:
        return self.run_dir / "accounting.log"

    # life ------------------------------------------------------------------------------------

    def render(self) -> Path:
        """Write the configuration; returns its directory."""
        for sub in ("raddb", "radacct", "run", "log"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        conf = self.conf_dir
        (conf / "dictionary").write_text("# the distribution's dictionaries only\n")
        (conf / "radiusd.conf").write_text(self._radiusd_conf())
        (conf / "clients.conf").write_text(self._clients_conf())
        (conf / "users").write_text(self._users())
        return conf

    def argv(self) -> list[str]:
        debug = ["-X"] if self.spec.debug else []
        return [FREERADIUS, "-f", *debug, "-d", str(self.conf_dir), "-l", "stdout"]

    def start(self, timeout: float = 30.0) -> FreeRadius:
        if self.daemon is not None and self.daemon.running():
            raise TestbedError(f"freeradius on {self.node} already running")
        self.render()
        self.daemon = Daemon(self.node, "freeradius", self.pid, self.argv(), self.log_path)
        if self._register is not None:
            daemons, name = self._register
            daemons[name] = self.daemon
        try:
            self.daemon.wait_ready(READY, timeout)
        except TestbedError:
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        return None if self.daemon is None else self.daemon.stop(signal.SIGTERM)

    def running(self) -> bool:
        return self.daemon is not None and self.daemon.running()

    def output(self) -> str:
        return self.daemon.output() if self.daemon is not None else ""

    def __enter__(self) -> FreeRadius:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # results ---------------------------------------------------------------------------------

    def detail_records(self) -> list[dict[str, str | list[str]]]:
        """Every record of the detail files, in file order: "_time" is the record's header
        line, other keys are attribute names; a repeated attribute (Class) gives a list; quoted
        values are unquoted."""
        records: list[dict[str, str | list[str]]] = []
        for path in sorted(self.acct_dir.rglob("detail*")):
            records.extend(parse_detail(path.read_text(errors="replace")))
        return records

    # rendering -------------------------------------------------------------------------------

    def _radiusd_conf(self) -> str:
        spec, run = self.spec, self.run_dir
        authorize = "\n".join(f"\t\t{line}" for line in spec.extra_authorize)
        counts = "in=%{Acct-Input-Octets} out=%{Acct-Output-Octets}"
        ended = "time=%{Acct-Session-Time} cause=%{Acct-Terminate-Cause}"
        sign = "update reply {\n\t\t\t&Message-Authenticator := 0x00\n\t\t}"
        return f"""\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {run}/log
raddbdir = {self.conf_dir}
radacctdir = {self.acct_dir}
name = freeradius
confdir = ${{raddbdir}}
modconfdir = ${{confdir}}/mods-config
run_dir = {run}/run
db_dir = ${{raddbdir}}
libdir = {LIB_DIR}
dictdir = {DICTIONARY_DIR}
pidfile = ${{run_dir}}/freeradius.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 4096
hostname_lookups = no

log {{
	destination = stdout
	colourise = no
	stripped_names = no
	auth = yes
	auth_badpass = no
	auth_goodpass = no
}}

security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = yes
}}

thread pool {{
	start_servers = 2
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 3
	max_requests_per_server = 0
}}

$INCLUDE clients.conf

modules {{
	pap {{
		normalise = yes
	}}
	chap {{
	}}
	mschap {{
		use_mppe = yes
		require_encryption = no
		require_strong = no
		with_ntdomain_hack = yes
	}}
	eap {{
		default_eap_type = md5
		timer_expire = 60
		ignore_unknown_eap_types = no
		cisco_accounting_username_bug = no
		max_sessions = ${{max_requests}}
		md5 {{
		}}
	}}
	files {{
		filename = ${{confdir}}/users
	}}
	detail {{
		filename = {self.acct_dir}/%{{Packet-Src-IP-Address}}/detail
		escape_filenames = no
		permissions = 0600
		header = "%t"
		locking = no
	}}
	linelog acct_log {{
		filename = {self.accounting_log}
		format = ""
		reference = "messages.%{{%{{Acct-Status-Type}}:-unknown}}"
		messages {{
			Start = "Start %{{User-Name}} %{{Acct-Session-Id}}"
			Interim-Update = "Interim-Update %{{User-Name}} %{{Acct-Session-Id}} {counts}"
			Stop = "Stop %{{User-Name}} %{{Acct-Session-Id}} {counts} {ended}"
			unknown = "Other %{{User-Name}} %{{Acct-Session-Id}}"
		}}
	}}
}}

server default {{
	listen {{
		type = auth
		ipaddr = {spec.address}
		port = {spec.auth_port}
	}}
	listen {{
		type = acct
		ipaddr = {spec.address}
		port = {spec.acct_port}
	}}
	authorize {{
		chap
		mschap
		eap
		files
{authorize}
		pap
	}}
	authenticate {{
		Auth-Type PAP {{
			pap
		}}
		Auth-Type CHAP {{
			chap
		}}
		Auth-Type MS-CHAP {{
			mschap
		}}
		Auth-Type EAP {{
			eap
		}}
	}}
	accounting {{
		detail
		acct_log
	}}
	post-auth {{
		{sign}
		Post-Auth-Type REJECT {{
			{sign}
		}}
	}}
}}
"""

    def _clients_conf(self) -> str:
        blocks = []
        for i, client in enumerate(self.spec.clients):
            blocks.append(f"client nas{i} {{\n\tipaddr = {client.address}\n"
                          f"\tsecret = {client.secret}\n"
                          "\trequire_message_authenticator = yes\n}\n")
        return "\n".join(blocks)

    def _users(self) -> str:
        return "\n".join(render_user(user) for user in self.spec.users) + "\n"


def render_user(user: RadiusUser) -> str:
    """One entry of the users file: check item on the first line, reply items indented."""
    line = f'"{user.name}" Cleartext-Password := "{user.password}"'
    items = [f"\t{name} += {_value(value)}" if name in ("Class", "Filter-Id", "Reply-Message")
             else f"\t{name} := {_value(value)}" for name, value in user.reply]
    return line + ("\n" + ",\n".join(items) if items else "") + "\n"


def _value(value: str | int) -> str:
    if isinstance(value, int) or re.fullmatch(r"[0-9.]+|0x[0-9a-fA-F]+", value):
        return str(value)
    if '"' in value or "\\" in value:
        raise TestbedError(f"reply value {value!r}: quotes and backslashes are not rendered")
    return f'"{value}"'


def parse_detail(text: str) -> list[dict[str, str | list[str]]]:
    """The detail module's format: a header line (the time) at column 0, then one
    "\\tName = value" line per attribute, a blank line between records."""
    records: list[dict[str, str | list[str]]] = []
    current: dict[str, str | list[str]] | None = None
    for line in text.splitlines():
        if not line.strip():
            current = None
        elif not line[0].isspace():
            current = {"_time": line.strip()}
            records.append(current)
        elif current is not None and " = " in line:
            name, value = line.strip().split(" = ", 1)
            _add(current, name, _unquote(value))
    return records


def _add(record: dict[str, str | list[str]], name: str, value: str) -> None:
    if name not in record:
        record[name] = value
        return
    old = record[name]
    record[name] = [*old, value] if isinstance(old, list) else [old, value]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def values(record: dict[str, str | list[str]], name: str) -> Sequence[str]:
    """An attribute of a detail record as a list (empty when absent)."""
    value = record.get(name)
    return [] if value is None else value if isinstance(value, list) else [value]
