"""The runtime against the real kernel, in network namespaces these tests create themselves.

Each test spawns `unshare --net sleep` processes (anonymous namespaces, no `ip netns` names),
joins them with a veth pair, runs code inside with `nsenter -t PID -n`, and kills what it
started by PID in `finally`: the namespaces, their TUN devices and routes go with them. Under
root pytest already runs inside vpnlab's sandbox, so not even the veth pair touches the root
namespace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns
REPO = Path(__file__).resolve().parents[1]


def namespace_skip_reason() -> str | None:
    """Why `Namespace` cannot be used here (None when it can): the tools, and root."""
    if shutil.which("unshare") is None or shutil.which("mnexec") is None:
        return "unshare (util-linux) or mnexec (mininet) missing"
    try:
        subprocess.run(["unshare", "--net", "true"], check=True, capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace (needs root): {exc}"
    return None


class Namespace:
    """A network namespace held by one `sleep` process; gone when that process is killed."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["unshare", "--net", "sleep", "600"])
        self.pid = self.proc.pid
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{self.pid}/ns/net") == ours:  # readiness: unshare done
            if time.monotonic() > deadline:
                raise RuntimeError("unshare --net did not take effect")
            time.sleep(0.005)
        self.run(["ip", "link", "set", "lo", "up"])

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", *argv]

    def run(self, argv: list[str], check: bool = True, timeout: float = 20,
            ) -> subprocess.CompletedProcess:
        done = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout,
                              cwd=REPO)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}: {done.stderr}")
        return done

    def python(self, script: str, timeout: float = 20) -> dict:
        done = self.run([sys.executable, "-c", textwrap.dedent(script)], timeout=timeout)
        return json.loads(done.stdout.strip().splitlines()[-1])

    def popen(self, argv: list[str]) -> Daemon:
        return Daemon(self.argv(argv))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


class Daemon:
    """A process whose stdout lines are collected, for readiness waits on a line."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=REPO)
        self.lines: list[str] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                seen += 1
                if re.search(pattern, line):
                    return json.loads(line)
            if self.proc.poll() is not None and seen == len(self.lines):
                break
            time.sleep(0.01)
        self.stop()
        raise AssertionError(f"no line matching {pattern!r}; got {self.lines}; stderr "
                             f"{self.stderr[-2000:]}")

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._reader.join(2)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        return code


@pytest.fixture
def namespaces() -> Iterator:
    made: list[Namespace] = []

    def make() -> Namespace:
        made.append(Namespace())
        return made[-1]

    try:
        yield make
    finally:
        for ns in reversed(made):
            ns.close()


def join(a: Namespace, b: Namespace, a_addrs: list[str], b_addrs: list[str]) -> None:
    """A veth pair va0 (in a) -- vb0 (in b), created inside a: nothing in our namespace."""
    a.run(["ip", "link", "add", "va0", "type", "veth", "peer", "name", "vb0", "netns",
           str(b.pid)])
    for ns, dev, addrs in ((a, "va0", a_addrs), (b, "vb0", b_addrs)):
        for addr in addrs:
            ns.run(["ip", "addr", "add", addr, "dev", dev])
        ns.run(["ip", "link", "set", dev, "up"])


def test_tun_device_carries_packets_both_ways(namespaces):
    """A ping to the TUN's peer comes out of our fd; the reply we write reaches ping."""
    ns = namespaces()
    result = ns.python("""
        import json, select, subprocess
        from tunnels.runtime.tun import TunDevice
        tun = TunDevice("tvt0")
        tun.configure("10.99.0.1", "10.99.0.2", 1400)
        ping = subprocess.Popen(["ping", "-c1", "-W3", "-n", "10.99.0.2"],
                                stdout=subprocess.PIPE, text=True)
        request = None
        while request is None or request[9] != 1:  # skip anything but ICMP
            select.select([tun.fd], [], [], 3)
            request = tun.read()
        reply = bytearray(request)
        reply[12:16], reply[16:20] = request[16:20], request[12:16]
        reply[20], reply[22:24] = 0, b"\\0\\0"  # echo reply, checksum recomputed below
        total = sum(int.from_bytes(reply[i:i + 2], "big") for i in range(20, len(reply), 2))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        reply[22:24] = (~total & 0xFFFF).to_bytes(2, "big")
        tun.write(bytes(reply))
        ok = ping.wait(5) == 0
        link = subprocess.run(["ip", "-o", "link", "show", "tvt0"], capture_output=True,
                              text=True).stdout.split()
        mtu = link[link.index("mtu") + 1]  # not /sys: it belongs to another namespace here
        tun.close()
        gone = subprocess.run(["ip", "link", "show", "tvt0"], capture_output=True).returncode
        print(json.dumps({"dst": ".".join(map(str, request[16:20])), "type": request[20],
                          "ping_ok": ok, "mtu": mtu, "gone_after_close": gone != 0}))
    """)
    assert result == {"dst": "10.99.0.2", "type": 8, "ping_ok": True, "mtu": "1400",
                      "gone_after_close": True}


def test_tun_errors_are_named(namespaces):
    ns = namespaces()
    result = ns.python("""
        import json
        from tunnels.runtime.tun import TunDevice, TunError
        out = {}
        first = TunDevice("tdup0")
        try:
            TunDevice("tdup0")
        except TunError as exc:
            out["busy"] = str(exc)
        try:
            TunDevice("x" * 16)
        except TunError as exc:
            out["long"] = str(exc)
        try:
            first.configure("10.1.1.1", "not-an-address", 1400)
        except TunError as exc:
            out["configure"] = str(exc)
        first.close()
        print(json.dumps(out))
    """)
    assert "cannot create TUN device 'tdup0'" in result["busy"] and "in use" in result["busy"]
    assert "expected 1 to 15 characters" in result["long"]
    assert result["configure"].startswith("`ip addr add 10.1.1.1/32 peer not-an-address/32")


RECEIVER = """
    import json, select, sys
    from tunnels.runtime.rawgre import GRESocket
    sock = GRESocket("192.0.2.2")
    print("ready", flush=True)
    got = []
    while len(got) < 2 and select.select([sock.fileno()], [], [], 5)[0]:
        while (item := sock.receive()) is not None:
            got.append([item[0], item[1].hex()])
    print(json.dumps({"got": got, "counters": sock.counters}), flush=True)
"""


def test_raw_gre_leaves_from_the_bound_address_and_survives_errors(namespaces):
    a, b = namespaces(), namespaces()
    # .1 is a's primary address; GRE must leave from .11, the address "the peer reached"
    join(a, b, ["192.0.2.1/24", "192.0.2.11/24"], ["192.0.2.2/24"])
    receiver = b.popen([sys.executable, "-c", textwrap.dedent(RECEIVER)])
    try:
        _wait_ready(receiver)
        sent = a.python("""
            import json
            from tunnels.runtime.rawgre import GRESocket
            sock = GRESocket("192.0.2.11")
            gre = bytes.fromhex("3001880b0004abcd") + b"ping"
            sock.send("192.0.2.2", gre)
            sock.send("203.0.113.99", gre)  # no route: this packet fails, counted ...
            sock.send("192.0.2.2", gre + b"2")  # ... and the socket goes on serving
            print(json.dumps({"counters": sock.counters, "last": sock.last_error}))
        """)
        receiver.proc.wait(10)
        got = json.loads(receiver.lines[-1])
    finally:
        receiver.stop()
    assert sent["counters"]["sent"] == 2 and sent["counters"]["send_errors"] == 1
    assert "unreachable" in sent["last"].lower()
    assert got["got"] == [["192.0.2.11", "3001880b0004abcd" + b"ping".hex()],
                          ["192.0.2.11", "3001880b0004abcd" + b"ping2".hex()]]


def _wait_ready(daemon: Daemon, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while "ready" not in daemon.lines:
        if time.monotonic() > deadline or daemon.proc.poll() is not None:
            raise AssertionError(f"not ready: {daemon.lines}")
        time.sleep(0.01)


ROUTES = """
    import json, subprocess
    from tunnels.runtime.routes import ClientRoutes
    from tunnels.runtime.tun import TunDevice
    def routes():
        out = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
        return sorted(" ".join(l.split()) for l in out.splitlines())
    def dev(addr):
        words = subprocess.run(["ip", "-4", "route", "get", addr], capture_output=True,
                               text=True).stdout.split()
        return words[words.index("dev") + 1]
    before = routes()
    tun = TunDevice("vpn0")
    tun.configure("10.10.100.2", "10.10.100.1", 1400)
    with_tun = routes()
    r = ClientRoutes("198.51.100.7", "vpn0", MODE, ("10.10.0.0/24",))
    r.install()
    during = {"routes": routes(), "server": dev("198.51.100.7"), "web": dev("192.0.2.80"),
              "intranet": dev("10.10.0.20"), "described": r.described()}
    r.remove()
    after_remove = routes()
    r.install()
    tun.close()  # the daemon died without its cleanup: routes through vpn0 go with it
    after_crash = routes()
    print(json.dumps({"before": before, "with_tun": with_tun, "during": during,
                      "after_remove": after_remove,
                      "after_crash": after_crash}))
"""


@pytest.mark.parametrize("mode", ["default", "split"])
def test_client_routes_server_first_then_tunnel(namespaces, mode):
    ns = namespaces()
    ns.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"])
    ns.run(["ip", "link", "set", "eth0p", "up"])
    ns.run(["ip", "addr", "add", "198.18.0.2/24", "dev", "eth0"])
    ns.run(["ip", "link", "set", "eth0", "up"])
    ns.run(["ip", "route", "add", "default", "via", "198.18.0.1"])
    out = ns.python(ROUTES.replace("MODE", repr(mode)))
    during = out["during"]
    assert during["described"][0] == "198.51.100.7/32 via 198.18.0.1 dev eth0"
    assert "198.51.100.7 via 198.18.0.1 dev eth0" in during["routes"]
    assert during["server"] == "eth0" and during["intranet"] == "vpn0"
    if mode == "default":
        assert {"0.0.0.0/1 dev vpn0 scope link", "128.0.0.0/1 dev vpn0 scope link"} <= \
            set(during["routes"])
        assert during["web"] == "vpn0"
    else:
        assert during["web"] == "eth0" and not any("/1 " in r for r in during["routes"])
    assert "default via 198.18.0.1 dev eth0" in during["routes"]  # never touched
    assert out["after_remove"] == out["with_tun"]
    # after a crash only our host route is left, harmless: the default route is intact
    assert set(out["after_crash"]) - set(out["before"]) <= {"198.51.100.7 via 198.18.0.1 "
                                                               "dev eth0"}
    assert set(out["before"]) <= set(out["after_crash"])


def test_server_routing_forwards_and_puts_forwarding_back(namespaces):
    ns = namespaces()
    out = ns.python("""
        import json, subprocess
        from tunnels.runtime.routes import ServerRouting
        from tunnels.runtime.tun import TunDevice
        fwd = lambda: open("/proc/sys/net/ipv4/ip_forward").read().strip()
        open("/proc/sys/net/ipv4/ip_forward", "w").write("0")
        tun = TunDevice("vpns0")
        tun.configure("10.10.100.1", None, 1400)
        r = ServerRouting("10.10.100.0/24", "vpns0")
        r.install()
        route = subprocess.run(["ip", "route", "show", "10.10.100.0/24"], capture_output=True,
                               text=True).stdout.split()
        during = fwd()
        r.remove()
        tun.close()
        print(json.dumps({"during": during, "route": route, "after": fwd()}))
    """)
    assert out["during"] == "1" and out["after"] == "0" and out["route"][:3] == [
        "10.10.100.0/24", "dev", "vpns0"]


SERVER_TOML = """
[server]
listen = "192.0.2.2"
name = "vpnsrv"
pool = "10.10.100.0/24"
dns = ["10.10.0.53"]
auth = ["mschapv2"]
encryption = "strongest"
mppe = "stateless"
echo_interval = 5

[users.alice]
password = "Pa55w0rd!"
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "testbed.cli", *args]


def test_vpnlab_connect_and_server_between_two_namespaces(namespaces, tmp_path):
    """The product's first result, without the testbed: our client and server, a ping
    through the encrypted tunnel, clean stops on SIGTERM."""
    client_ns, server_ns = namespaces(), namespaces()
    join(client_ns, server_ns, ["192.0.2.1/24"], ["192.0.2.2/24"])
    config = tmp_path / "server.toml"
    config.write_text(SERVER_TOML)
    server = server_ns.popen(_cli("server", "--config", str(config), "--json"))
    client = None
    try:
        listening = server.wait_line('"event": "listening"')
        assert listening["encryption"] == "strongest"
        t0 = time.monotonic()
        client = client_ns.popen(_cli(
            "connect", "--protocol", "pptp", "--server", "192.0.2.2", "--user", "alice",
            "--password", "Pa55w0rd!", "--auth", "mschapv2", "--encryption", "strongest",
            "--routes", "split", "--split", "10.10.100.0/24", "--json"))
        up = client.wait_line('"event": "tunnel-(up|down)"')
        elapsed = time.monotonic() - t0
        assert up["event"] == "tunnel-up", up
        assert up["local_address"] == "10.10.100.2" and up["peer_address"] == "10.10.100.1"
        assert up["auth"] == "mschapv2" and up["encryption"] == "mppe-128 stateless"
        assert up["dns"] == ["10.10.0.53"] and up["bringup_seconds"] < 5, (up, elapsed)
        ping = client_ns.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-n", "10.10.100.1"],
                             check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert client.stop() == 0, client.stderr
        assert client.events()[-1]["event"] == "tunnel-down"
        assert client_ns.run(["ip", "link", "show", "vpn0"], check=False).returncode != 0
        assert "10.10.100.0/24" not in client_ns.run(["ip", "route"]).stdout
        server.wait_line('"event": "session-down"')
    finally:
        if client is not None:
            client.stop()
        code = server.stop()
    assert code == 0, server.stderr
    assert server_ns.run(["ip", "link", "show", "vpns0"], check=False).returncode != 0
    assert "internal error" not in server.stderr and (client is None or
                                                      "internal error" not in client.stderr)


def test_client_names_a_server_that_does_not_answer(namespaces):
    client_ns, server_ns = namespaces(), namespaces()
    join(client_ns, server_ns, ["192.0.2.1/24"], ["192.0.2.2/24"])
    client = client_ns.popen(_cli("connect", "--server", "192.0.2.2", "--user", "a",
                                  "--password", "b", "--json"))
    down = client.wait_line('"event": "tunnel-down"')
    assert client.proc.wait(10) == 1
    assert down["reason"].startswith("cannot reach 192.0.2.2:1723")


def test_server_carries_many_concurrent_calls(namespaces, tmp_path):
    """Eight clients in eight namespaces on one bridge, all up at once against one server:
    each its own Call ID, address and PPP session, all pinging, and one hang-up leaves the
    others up."""
    n = 8
    server_ns = namespaces()
    server_ns.run(["ip", "link", "add", "br0", "type", "bridge"])
    server_ns.run(["ip", "addr", "add", "192.0.2.2/24", "dev", "br0"])
    server_ns.run(["ip", "link", "set", "br0", "up"])
    clients = []
    for i in range(n):
        ns = namespaces()
        ns.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns",
                str(server_ns.pid)])
        ns.run(["ip", "addr", "add", f"192.0.2.{10 + i}/24", "dev", "eth0"])
        ns.run(["ip", "link", "set", "eth0", "up"])
        server_ns.run(["ip", "link", "set", f"p{i}", "master", "br0", "up"])
        clients.append(ns)
    config = tmp_path / "server.toml"
    config.write_text(SERVER_TOML + "\n".join(
        f'[users.u{i}]\npassword = "pw{i}"' for i in range(n)) + "\n")
    server = server_ns.popen(_cli("server", "--config", str(config), "--json"))
    daemons: list[Daemon] = []
    try:
        server.wait_line('"event": "listening"')
        t0 = time.monotonic()
        for i, ns in enumerate(clients):
            daemons.append(ns.popen(_cli(
                "connect", "--server", "192.0.2.2", "--user", f"u{i}", "--password", f"pw{i}",
                "--auth", "mschapv2", "--encryption", "strongest", "--routes", "split",
                "--split", "10.10.100.0/24", "--json")))
        ups = [d.wait_line('"event": "tunnel-(up|down)"', timeout=30) for d in daemons]
        all_up = time.monotonic() - t0
        assert all(u["event"] == "tunnel-up" for u in ups), ups
        assert len({u["local_address"] for u in ups}) == n
        assert len({u["peer_call_id"] for u in ups}) == n  # the server's Call IDs
        for ns in clients:
            ping = ns.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "-n", "10.10.100.1"],
                          check=False)
            assert ping.returncode == 0, ping.stdout
        assert daemons[0].stop() == 0
        server.wait_line('"event": "session-down"')
        for ns in clients[1:]:
            assert ns.run(["ping", "-c1", "-W2", "-n", "10.10.100.1"], check=False).returncode \
                == 0
        print(f"{n} concurrent tunnels up in {all_up:.2f}s; per client "
              f"{sorted(u['bringup_seconds'] for u in ups)}")
    finally:
        for d in daemons:
            d.stop()
        code = server.stop()
    assert code == 0, server.stderr
    assert "internal error" not in server.stderr


def test_client_reconnects_only_when_asked(namespaces, tmp_path):
    """--reconnect 10: after the server restarts the client comes back up by itself; without
    it (the default) the client exits 1 with the reason, as the other tests show."""
    client_ns, server_ns = namespaces(), namespaces()
    join(client_ns, server_ns, ["192.0.2.1/24"], ["192.0.2.2/24"])
    config = tmp_path / "server.toml"
    config.write_text(SERVER_TOML)
    argv = _cli("server", "--config", str(config), "--json")
    server = server_ns.popen(argv)
    client = None
    try:
        server.wait_line('"event": "listening"')
        client = client_ns.popen(_cli(
            "connect", "--server", "192.0.2.2", "--user", "alice", "--password", "Pa55w0rd!",
            "--encryption", "strongest", "--routes", "split", "--split", "10.10.100.0/24",
            "--reconnect", "10", "--reconnect-delay", "1", "--json"))
        client.wait_line('"event": "tunnel-up"')
        assert server.stop() == 0
        again = client.wait_line('"event": "reconnecting"')
        assert again["attempt"] == 1 and "stopped the control connection" in again["after"]
        server = server_ns.popen(argv)
        server.wait_line('"event": "listening"')
        deadline = time.monotonic() + 30
        while sum(e["event"] == "tunnel-up" for e in client.events()) < 2:
            assert time.monotonic() < deadline, client.events()
            time.sleep(0.05)
        assert client_ns.run(["ping", "-c1", "-W2", "-n", "10.10.100.1"],
                             check=False).returncode == 0
        assert client.stop() == 0
    finally:
        if client is not None:
            client.stop()
        server.stop()
