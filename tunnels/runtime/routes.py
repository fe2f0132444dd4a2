"""Routes around a tunnel, on the client and on the server. Commands are argv lists.

Client: a host route to the server through the original gateway goes in FIRST, so the tunnel
never carries its own carrier traffic (TCP 1723 and GRE); then either everything through the
tunnel (`default`) or only the given prefixes (`split`). `default` is installed as the two
halves 0.0.0.0/1 and 128.0.0.0/1 through the TUN device: they beat the original default route
by being more specific, so the original is never touched, and if the daemon dies without its
cleanup they vanish with the TUN device and the node keeps its own default route.

Server: the pool is a separate subnet routed to the server by the intranet (our choice over
proxy ARP: no ARP tricks, works across routers, and the intranet sees each client's own
address). The server routes the pool into its TUN device and forwards between it and the
intranet (`net.ipv4.ip_forward`, per namespace; put back as found on stop).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

DEFAULT_HALVES = ("0.0.0.0/1", "128.0.0.0/1")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class RouteError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise RouteError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def route_to(address: str) -> list[str]:
    """`via GW dev IF` (or `dev IF` on-link) the kernel uses to reach `address` right now."""
    words = ip("-4", "route", "get", address).split()
    if "dev" not in words:
        raise RouteError(f"no route to {address}: {' '.join(words)}")
    via = ["via", words[words.index("via") + 1]] if "via" in words else []
    return [*via, "dev", words[words.index("dev") + 1]]


class ClientRoutes:
    def __init__(self, server: str, interface: str, mode: str, split: tuple[str, ...]):
        if mode not in ("default", "split"):
            raise ValueError(f"route mode {mode!r}: expected default or split")
        self.server, self.interface, self.mode, self.split = server, interface, mode, split
        self.added: list[list[str]] = []  # `ip route` arguments, in the order added

    def plan(self, carrier: list[str]) -> list[list[str]]:
        """The routes to add, in order, given the current path to the server."""
        prefixes = DEFAULT_HALVES if self.mode == "default" else self.split
        return [[f"{self.server}/32", *carrier],
                *([prefix, "dev", self.interface] for prefix in prefixes)]

    def install(self) -> None:
        """Host route first; on any failure what was added is removed again and it raises."""
        try:
            for route in self.plan(route_to(self.server)):
                ip("route", "replace", *route)
                self.added.append(route)
        except RouteError:
            self.remove()
            raise

    def described(self) -> list[str]:
        return [" ".join(r) for r in self.added]

    def remove(self) -> None:
        """Undo in reverse; a route already gone (with the TUN device) is not an error."""
        for route in reversed(self.added):
            ip("route", "del", *route, check=False)
        self.added.clear()


class ServerRouting:
    """`pool`: the static pool's prefix routed into the TUN device, or None (DHCP: each
    client's address gets its host route from tunnels/addresses.py as it is handed out)."""

    def __init__(self, pool: str | None, interface: str, forward: Path = IP_FORWARD):
        self.pool, self.interface, self.forward = pool, interface, forward
        self.saved_forward: str | None = None
        self.routed = False

    def install(self) -> None:
        current = self.forward.read_text().strip()
        if current != "1":
            self.forward.write_text("1\n")
            self.saved_forward = current
        if self.pool is not None:
            ip("route", "replace", self.pool, "dev", self.interface)
            self.routed = True

    def remove(self) -> None:
        if self.routed:
            ip("route", "del", self.pool, "dev", self.interface, check=False)
            self.routed = False
        if self.saved_forward is not None:
            try:
                self.forward.write_text(self.saved_forward + "\n")
            except OSError:
                pass
            self.saved_forward = None
