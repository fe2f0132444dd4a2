"""Where the server's client addresses come from: a static pool (network ID and mask) or a DHCP
server on the intranet (leased in blocks, as RRAS does), plus per-user static addresses.

Both sources have one synchronous interface, so a call never waits for an address:
`take(key)` when a call arrives (None: exhausted, the call is refused), `claim(key, address)`
when the verdict names a static address (the pool's pick goes back), `give_back(key)` when
the call ends. `server_address` is the server's own end of every tunnel.
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any


class StaticPool:
    """A pool prefix: the first host is the server's address (unless `server_address` says
    otherwise), the others go to clients; `reserved` (accounts' static addresses) are never
    handed out by `take`, only by `claim`."""

    source = "pool"

    def __init__(self, network: ipaddress.IPv4Network, server_address: str | None = None,
                 reserved: Iterable[str] = ()):
        hosts = [str(h) for h in network.hosts()]
        self.network = network
        self.server_address = server_address or hosts[0]
        self.reserved = set(reserved)
        self.free = collections.deque(h for h in hosts
                                      if h != self.server_address and h not in self.reserved)
        self.used: dict[Hashable, str] = {}
        self._in_use: set[str] = set()
        self.counters = {"taken": 0, "claimed": 0, "exhausted": 0, "claim_conflicts": 0}

    @property
    def gateway(self) -> str:
        return self.server_address

    def take(self, key: Hashable) -> str | None:
        if not self.free:
            self.counters["exhausted"] += 1
            return None
        address = self.free.popleft()
        self.used[key] = address
        self._in_use.add(address)
        self.counters["taken"] += 1
        return address

    def claim(self, key: Hashable, address: str) -> bool:
        """The call `key` gets `address` instead of its pick; False when another call has it
        or it is the server's own."""
        if self.used.get(key) == address:
            return True
        if address in self._in_use or address == self.server_address:
            self.counters["claim_conflicts"] += 1
            return False
        self.give_back(key)
        if address in self.free:
            self.free.remove(address)  # O(pool); only for a static address met at run time
        self.used[key] = address
        self._in_use.add(address)
        self.counters["claimed"] += 1
        return True

    def give_back(self, key: Hashable) -> None:
        address = self.used.pop(key, None)
        if address is None:
            return
        self._in_use.discard(address)
        if address in self.reserved or not self._ours(address):
            return  # a static address is never handed out by take()
        self.free.appendleft(address)

    def _ours(self, address: str) -> bool:
        return ipaddress.IPv4Address(address) in self.network

    def status(self) -> dict[str, Any]:
        return {"source": self.source, "network": str(self.network),
                "server_address": self.server_address, "free": len(self.free),
                "in_use": len(self.used), "reserved": sorted(self.reserved),
                "counters": dict(self.counters)}


class DHCPPool:
    """Addresses leased from the intranet's DHCP server (RRAS's DHCP option), the leases kept
    by `tunnels.runtime.dhcp.DHCPAddressPool` (blocks, renewal, release when unused).

    The addresses belong to the intranet subnet, so the server answers ARP for them there:
    proxy ARP on the intranet interface (put back as found on close) and a host route into
    the TUN device for each address a call holds. `lost(address)` gives the call that must
    hang up when a lease held by a call is lost (DHCPNAK, expiry)."""

    source = "dhcp"

    def __init__(self, leases: Any, interface: str, tun: str, route: Any = None):
        self.leases, self.interface, self.tun = leases, interface, tun
        self.used: dict[Hashable, str] = {}
        self._route = route or _ip_route
        self.counters = {"taken": 0, "claimed": 0, "exhausted": 0, "claim_conflicts": 0}
        # proxy ARP on, and answered at once (the kernel delays proxy replies up to 0.8 s)
        self._settings = {Path(f"/proc/sys/net/ipv4/conf/{interface}/proxy_arp"): "1",
                          Path(f"/proc/sys/net/ipv4/neigh/{interface}/proxy_delay"): "0"}
        self._saved: dict[Path, str] = {}

    @property
    def server_address(self) -> str:
        return str(self.leases.server_address)

    gateway = server_address

    def start(self) -> None:
        """Proxy ARP on: the intranet asks for a client's address, the server answers."""
        for path, value in self._settings.items():
            current = path.read_text().strip()
            if current != value:
                path.write_text(value + "\n")
                self._saved[path] = current

    def take(self, key: Hashable) -> str | None:
        address = self.leases.take()
        if address is None:
            self.counters["exhausted"] += 1
            return None
        self.used[key] = address
        self._route("replace", address, self.tun)
        self.counters["taken"] += 1
        return address

    def claim(self, key: Hashable, address: str) -> bool:
        """A static address is not ours to give with DHCP: only the lease already held."""
        if self.used.get(key) == address:
            return True
        self.counters["claim_conflicts"] += 1
        return False

    def give_back(self, key: Hashable) -> None:
        address = self.used.pop(key, None)
        if address is not None:
            self._route("del", address, self.tun)
            self.leases.give_back(address)

    def holder(self, address: str) -> Hashable | None:
        return next((k for k, a in self.used.items() if a == address), None)

    def status(self) -> dict[str, Any]:
        return {"source": self.source, "server_address": self.server_address,
                "interface": self.interface, "in_use": len(self.used),
                "counters": dict(self.counters), "dhcp": self.leases.status()}

    def close(self) -> None:
        for key in list(self.used):
            self.give_back(key)
        self.leases.close(release=True)  # DHCPRELEASE for every lease
        for path, value in self._saved.items():
            try:
                path.write_text(value + "\n")
            except OSError:
                pass
        self._saved.clear()


def _ip_route(action: str, address: str, device: str) -> None:
    from tunnels.runtime.routes import ip

    ip("route", action, f"{address}/32", "dev", device, check=action != "del")
