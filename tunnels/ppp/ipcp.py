"""IPCP (RFC 1332) with the name-server options of RFC 1877.

The server (`assign` set) gives the client its address and name servers by naking the client's
0.0.0.0 requests with the values it was given; the client asks with 0.0.0.0 and takes the naks.
Van Jacobson compression (option 2) is rejected: our data path carries plain IPv4.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import IntEnum

from tunnels.ppp.fsm import Verdict, reject_or_nak
from tunnels.ppp.packets import Code, Option

ZERO = ipaddress.IPv4Address(0)


class IPCPOption(IntEnum):
    IP_COMPRESSION_PROTOCOL = 2
    IP_ADDRESS = 3
    PRIMARY_DNS = 129
    PRIMARY_NBNS = 130
    SECONDARY_DNS = 131
    SECONDARY_NBNS = 132


_NAME_SERVERS = (IPCPOption.PRIMARY_DNS, IPCPOption.PRIMARY_NBNS, IPCPOption.SECONDARY_DNS,
                 IPCPOption.SECONDARY_NBNS)


def _addr(data: bytes) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(data)


@dataclass
class IPCPPolicy:
    """`local`: our address (server: its tunnel address; client: None = ask). `assign`: the
    address to give the peer (server only). `name_servers`: option -> address the server hands
    out; on a client, the options to ask for."""

    local: ipaddress.IPv4Address | None = None
    assign: ipaddress.IPv4Address | None = None
    name_servers: dict[int, ipaddress.IPv4Address] = field(default_factory=dict)
    peer: ipaddress.IPv4Address | None = None
    _rejected: set[int] = field(default_factory=set)

    @property
    def is_server(self) -> bool:
        return self.assign is not None

    def request(self) -> list[Option]:
        options = []
        if IPCPOption.IP_ADDRESS not in self._rejected:
            options.append(Option(IPCPOption.IP_ADDRESS, (self.local or ZERO).packed))
        if not self.is_server:
            for kind, value in sorted(self.name_servers.items()):
                if kind not in self._rejected:
                    options.append(Option(kind, value.packed))
        return options

    def judge(self, options: list[Option]) -> Verdict:
        refusal = reject_or_nak(options, self._acceptable_type, self._nak_for)
        if refusal is not None:
            return refusal
        for o in options:
            if o.type == IPCPOption.IP_ADDRESS:
                self.peer = _addr(o.data)
        return Verdict(Code.CONFIGURE_ACK, options)

    def _acceptable_type(self, o: Option) -> bool:
        if len(o.data) != 4:
            return False
        if o.type == IPCPOption.IP_ADDRESS:
            return True
        return self.is_server and o.type in self.name_servers

    def _nak_for(self, o: Option) -> Option | None:
        value = _addr(o.data)
        if o.type == IPCPOption.IP_ADDRESS:
            if self.is_server and value != self.assign:
                return Option(o.type, self.assign.packed)  # type: ignore[union-attr]
            if not self.is_server and value == ZERO:
                return None  # a server without an address of its own: accept (RFC 1332 §3.3)
            return None
        wanted = self.name_servers[o.type]
        return Option(o.type, wanted.packed) if value != wanted else None

    def acked(self, options: list[Option]) -> None:
        for o in options:
            if o.type == IPCPOption.IP_ADDRESS:
                self.local = _addr(o.data)
            elif o.type in _NAME_SERVERS:
                self.name_servers[o.type] = _addr(o.data)

    def naked(self, options: list[Option]) -> None:
        for o in options:
            if len(o.data) != 4:
                continue
            if o.type == IPCPOption.IP_ADDRESS and not self.is_server:
                self.local = _addr(o.data)
            elif o.type in _NAME_SERVERS and not self.is_server:
                self.name_servers[o.type] = _addr(o.data)

    def rejected(self, options: list[Option]) -> None:
        for o in options:
            self._rejected.add(o.type)
            self.name_servers.pop(o.type, None)

    def dns(self) -> tuple[str, ...]:
        return tuple(str(self.name_servers[k]) for k in (IPCPOption.PRIMARY_DNS,
                     IPCPOption.SECONDARY_DNS) if k in self.name_servers)

    def nbns(self) -> tuple[str, ...]:
        return tuple(str(self.name_servers[k]) for k in (IPCPOption.PRIMARY_NBNS,
                     IPCPOption.SECONDARY_NBNS) if k in self.name_servers)
