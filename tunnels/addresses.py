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
