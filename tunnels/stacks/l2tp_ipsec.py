"""L2TP/IPsec, still without I/O: L2TP over UDP 1701 inside ESP transport mode (RFC 3193),
keys from IKEv1, through NATs with NAT-T (RFC 3947/3948).

`L2TPIPsecServer` and `L2TPIPsecClient` wrap the L2TP stacks (tunnels/stacks/l2tp.py) with an
IKE responder/initiator and a `TransportPolicy`, and keep exactly the L2TP stacks' interface,
so the daemon and the pump swap one for the other. Only the datagram addresses differ: they
name the transport.

Transport tuples (`src` of `receive_datagram`, `dst` of `datagrams_to_send`)::

    ("esp", peer_address, 0, 0)                   IP protocol 50 payload (raw ESP)
    ("udp", peer_address, peer_port, local_port)  UDP payload; local_port in {500, 4500, 1701}

On 4500 the payloads are exactly what UDP carries: this module adds the non-ESP marker to IKE
(RFC 3948 §2.2), strips it on receipt, and sends NAT keepalives (the one octet 0xFF, §2.3);
the runtime (tunnels/runtime/ipsec_sockets.py) only moves bytes.

Policy (RFC 3193 §4, the chapter): L2TP travels only inside the peer's SA. The server drops
and counts UDP 1701 in clear (`cleartext_l2tp_dropped`); its L2TP replies go out through the
SA of the peer they answer. Peers are kept apart at every layer, which two Windows clients
behind one NAT (both from UDP 500/4500) need: IKE by initiator cookie (IKEResponder), ESP by
SPI (TransportPolicy, inbound SPIs unique stack-wide), L2TP by the peer's (address, NAT port)
and its Tunnel ID (the L2TP server sees each NAT-T peer as address:NAT-port).

Without NAT-T a NAT breaks ESP (it cannot map IP protocol 50 to two clients, and it rewrites
the address the transport-mode checksums cover). The server sees it in Main Mode (the
client's address ID is not where the messages come from), refuses with an IKE Delete right
after phase 1 and reports `IPsecFailed`; the client names the reason (`NAT_WITHOUT_NAT_T`),
and also when L2TP gets no answer through the SA.

A peer whose NAT mapping moves keeps its SAs and tunnel once an authenticated IKE message
(DPD, a rekey) comes from the new port (RFC 3947 §5.2); ESP from the new port before that is
dropped as `peer_mismatch`.

Events: the L2TP stacks' `SessionUp`, `SessionDown`, `ControlClosed`, `SessionEvent`, plus
`IKEEstablished`, `IPsecUp` (again on every rekey), `IPsecDown` and `IPsecFailed` (below).

Daemon wiring: `MultiSocket(address, l2tp_port=True)` (server) or `MultiSocket(address)`
(client, `address` = `local_address_toward(server)`) from tunnels/runtime/ipsec_sockets.py
is the pump's packet socket; `L2TPIPsecServer(..., local_address=address)` or
`L2TPIPsecClient(..., local_address=address)` the stack. `local_address` is the real
address, never 0.0.0.0 (NAT-D hashes it, RFC 3947 §3.2).
"""

from __future__ import annotations

import ipaddress
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from tunnels.errors import LocalProtocolError
from tunnels.ipsec.ike import (
    ChildSADeleted,
    ChildSAEstablished,
    ChildSAFailed,
    IKEClosed,
    IKEConfig,
    IKEFailed,
    IKEResponder,
    IKESession,
    NATKeepaliveDue,
    Phase1Established,
    RemoteAddressChanged,
)
from tunnels.ipsec.natt import KEEPALIVE, NAT_T_PORT, ike_with_marker
from tunnels.ipsec.policy import (
    Dropped,
    IkePacket,
    L2tpDatagram,
    Peer,
    RekeyDue,
    TransportPolicy,
)
from tunnels.ipsec.sa import SecurityAssociation
from tunnels.l2tp.control import TunnelConfig
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.stacks.l2tp import NO_REPLY_REASON, L2TP_PORT, L2TPClient, L2TPServer
from tunnels.stacks.l2tp_ipsec_data import DataPath
from tunnels.stacks.sessions import ControlClosed
from tunnels.stacks.sessions import SHUTDOWN_GRACE
from tunnels.ppp.auth.base import Verdict

IKE_PORT = 500
Transport = tuple[str, str, int, int]  # (kind, peer address, peer port, local port)
Address = tuple[str, int]

NAT_WITHOUT_NAT_T = ("IPsec ESP cannot pass this NAT without NAT-T (RFC 3947): a NAT "
                     "rewrote the client's address; turn NAT-T on at both ends or connect "
                     "without the NAT")
ESP_NO_REPLY = ("no answer from the L2TP server inside the IPsec SA: is ESP (IP protocol 50) "
                "filtered on the way?")
ESP_NO_REPLY_NAT_T = ("no answer from the L2TP server inside the UDP-encapsulated IPsec SA: "
                      "is UDP 4500 filtered on the way?")


# -- events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IKEEstablished:
    """Phase 1 (the ISAKMP SA) is up with `peer` ("address:port" as seen on the wire)."""

    LOG_NAME: ClassVar[str] = "ike-established"  # the daemons' JSON event name

    peer: str
    peer_id: str
    cipher: str
    hash: str
    group: int
    auth: str
    nat: bool  # a NAT was detected (NAT-T floats to 4500)
    peer_ke_unpadded: bool = False  # its KE lacked leading zeros (RFC 2409 §5), accepted


@dataclass(frozen=True, slots=True)
class IPsecUp:
    """An ESP SA pair is installed: L2TP with `peer` is protected from now on."""

    LOG_NAME: ClassVar[str] = "ipsec-up"  # the daemons' JSON event name

    peer: str
    spi_in: int
    spi_out: int
    cipher: str
    integrity: str
    encapsulation: str  # "transport" (IP protocol 50) | "udp-transport" (UDP 4500)


@dataclass(frozen=True, slots=True)
class IPsecDown:
    LOG_NAME: ClassVar[str] = "ipsec-down"  # the daemons' JSON event name

    peer: str
    spi_in: int
    spi_out: int
    reason: str


@dataclass(frozen=True, slots=True)
class IPsecFailed:
    """IKE (phase 1 or Quick Mode) failed or was refused: no SA, a named reason."""

    LOG_NAME: ClassVar[str] = "ipsec-failed"  # the daemons' JSON event name

    peer: str
    reason: str
    notify: str | None = None


# -- configuration -----------------------------------------------------------------------------
_LEVEL_CIPHERS = {  # the chapter's policy profile for L2TP/IPsec; AES is our extension
    "basic": ("des-cbc",), "strong": ("des-cbc",), "strongest": ("3des-cbc",),
    "aes-128": ("aes-cbc-128",), "aes-256": ("aes-cbc-256",), "aes": ("aes-cbc-256",
                                                                      "aes-cbc-128"),
}


def esp_ciphers_for(levels: str | EncryptionLevel | Iterable[str | EncryptionLevel]
                    ) -> tuple[str, ...]:
    """ESP ciphers for one level or several (a server allowing Strong and Strongest), the
    strongest first."""
    if isinstance(levels, str | EncryptionLevel):
        levels = (levels,)
    names: list[str] = []
    for level in levels:
        key = level.value if isinstance(level, EncryptionLevel) else str(level).lower()
        if key not in _LEVEL_CIPHERS:
            raise ValueError(f"encryption level {key!r}: expected one of "
                             f"{', '.join(_LEVEL_CIPHERS)} (ESP has no 'none' here: L2TP/"
                             "IPsec without encryption is not the chapter's VPN connection)")
        names += [c for c in _LEVEL_CIPHERS[key] if c not in names]
    order = ("aes-cbc-256", "aes-cbc-128", "3des-cbc", "des-cbc")
    return tuple(sorted(names, key=order.index))


def ike_config_for(level: str | EncryptionLevel | Iterable[str | EncryptionLevel],
                   psk: bytes | str = b"", **overrides: Any) -> IKEConfig:
    """The IKE configuration of an encryption level: Basic/Strong = DES, Strongest = 3DES,
    "aes-128"/"aes-256"/"aes" as an extension; HMAC-SHA1 then HMAC-MD5 integrity. Any other
    IKEConfig field can be given (auth="rsa-sig", certificate=..., nat_t=False, ...)."""
    if isinstance(psk, str):
        psk = psk.encode()
    overrides.setdefault("esp_ciphers", esp_ciphers_for(level))
    overrides.setdefault("esp_integrity", ("hmac-sha1-96", "hmac-md5-96"))
    if psk:
        overrides.setdefault("psk", psk)
    return IKEConfig(**overrides)


def ike_config_from(settings: Any) -> IKEConfig:
    """IKE for a daemon's L2TP/IPsec settings (tunnels/config.py's ServerConfig or
    ClientConfig): the chapter's level names the ESP cipher (Basic/Strong DES, Strongest 3DES)
    unless ipsec_ciphers lists them; RSA signatures when certificates are configured (the
    chapter's default for Windows), else the pre-shared key; the SA lifetimes."""
    extra: dict[str, Any] = {"nat_t": settings.nat_t,
                             "lifetime_phase2": int(settings.ipsec_lifetime)}
    if settings.ipsec_lifetime_kb:
        extra["lifetime_phase2_kb"] = settings.ipsec_lifetime_kb
    if settings.ipsec_ciphers:
        extra["esp_ciphers"] = settings.ipsec_ciphers
    if settings.certificate:
        extra.update(auth="rsa-sig", certificate=settings.certificate,
                     private_key=settings.private_key,
                     trusted_certificates=settings.ca)
    level = settings.encryption.value
    return ike_config_for(level if level in ("basic", "strong", "strongest") else "strongest",
                          settings.psk, **extra)


def _peer_text(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def _security_associations(event: ChildSAEstablished
                           ) -> tuple[SecurityAssociation, SecurityAssociation]:
    """The (inbound, outbound) SA pair of a Quick Mode result; UDP ports with NAT-T."""
    local, remote = event.local, event.remote
    encap_out = encap_in = None
    if event.encapsulation == "udp-transport":
        encap_out, encap_in = (local[1], remote[1]), (remote[1], local[1])
    common = {"lifetime_seconds": event.lifetime_seconds, "lifetime_bytes": event.lifetime_bytes}
    inbound = SecurityAssociation.from_keys(event.spi_in, event.cipher, event.enc_key_in,
                                            event.integrity, event.auth_key_in, remote[0],
                                            local[0], encap=encap_in, **common)
    outbound = SecurityAssociation.from_keys(event.spi_out, event.cipher, event.enc_key_out,
                                             event.integrity, event.auth_key_out, local[0],
                                             remote[0], encap=encap_out, **common)
    return inbound, outbound


def _move(sa: SecurityAssociation, end: str, address: str, encap: tuple[int, int]) -> None:
    """Point one end of a UDP-encapsulated SA at the peer's new NAT mapping (keys, sequence
    numbers and the replay window stay)."""
    setattr(sa, end, address)
    setattr(sa, f"{end}_packed", ipaddress.IPv4Address(address).packed)
    sa.encap = encap


@dataclass
class _Child:
    inbound: SecurityAssociation
    outbound: SecurityAssociation
    peer: str
    created: float


class _IPsecStack(DataPath):
    """What client and server share: the wire (transport tuples), the policy, SA install and
    removal, L2TP through the SAs, one timer over IKE, L2TP and SA lifetimes; the data path's
    common case is DataPath's (tunnels/stacks/l2tp_ipsec_data.py)."""

    l2tp: L2TPServer | L2TPClient
    ike: IKEResponder | IKESession  # the same receive/timer calls; events differ

    def __init__(self, ike_config: IKEConfig, local_address: str,
                 random: Callable[[int], bytes]):
        self.ike_config = ike_config
        self.local_address = local_address
        self.random = random
        self.policy = TransportPolicy(require_protection=True, l2tp_port=ike_config.l2tp_port,
                                      iv_source=random)
        self.children: dict[int, _Child] = {}  # by inbound SPI
        self._routes: dict[Address, tuple[Peer, int]] = {}  # L2TP address -> (SA peer, port)
        self._out: list[tuple[Transport, bytes]] = []
        self._events: deque[Any] = deque()
        self._now = 0.0  # the latest time seen, for the SA lifetimes' next deadline
        self._ike_dirty = True
        self._ike_deadline: float | None = None
        self._sa_deadline: float | None = None
        self.counters = {"received": 0, "unknown_port": 0, "l2tp_no_sa": 0, "ike_in": 0,
                         "ike_out": 0, "esp_out": 0, "keepalives": 0}
        self._fast_init()

    # -- the L2TP stacks' interface (receive_datagram and send_datagram: l2tp_ipsec_data) ---
    def _receive_general(self, src: Transport, data: bytes, now: float) -> None:
        """What DataPath.receive_datagram does not carry itself (it has counted `received`
        and moved the clock)."""
        kind, address, port, local_port = src
        quiet = False  # True: only data moved, nothing for _drain to do
        if kind == "esp":
            quiet = self._inbound(self.policy.inbound((address, None), "esp", data, now), now)
        elif local_port == IKE_PORT:
            self._receive_ike(bytes(data), (address, port), now)
        elif local_port == NAT_T_PORT:
            quiet = self._inbound(self.policy.inbound((address, port), "udp4500", data, now),
                                  now)
        elif local_port == self.policy.l2tp_port:
            quiet = self._inbound(self.policy.inbound((address, port), "udp1701", data, now),
                                  now)
        else:
            self.counters["unknown_port"] += 1
        if not quiet or self._ike_dirty:
            self._drain(now)

    def _send_general(self, ip_packet: bytes, now: float) -> None:
        """A TUN datagram DataPath.send_datagram does not carry itself: the L2TP stack only
        queues its data message (no event, no control), so it goes through the SA at once,
        without a whole `_drain`."""
        self.l2tp.send_datagram(ip_packet, now)
        if self._ike_dirty:
            self._drain(now)
        else:
            self._flush_l2tp(now)

    def complete_authentication(self, call_id: int, verdict: Verdict, now: float) -> bool:
        done = self.l2tp.complete_authentication(call_id, verdict, now)
        self._drain(now)
        return done

    def disconnect(self, call_id: int, reason: str, now: float) -> bool:
        done = self.l2tp.disconnect(call_id, reason, now)
        self._drain(now)
        return done

    @property
    def by_packed_address(self) -> dict:
        return self.l2tp.by_packed_address

    def datagrams_to_send(self) -> list[tuple[Transport, bytes]]:
        out, self._out = self._out, []
        return out

    gre_to_send = datagrams_to_send

    def control_to_send(self) -> list:
        return []

    def connections_to_close(self) -> list:
        return []

    def datagrams_to_tun(self) -> list[bytes]:
        """The L2TP stack's; each instance binds that method itself (the pump asks after
        every batch: one call, not two)."""
        return self.l2tp.datagrams_to_tun()

    def next_event(self) -> Any:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest of the IKE, L2TP and SA deadlines (asked after every pump batch)."""
        due = self.l2tp.get_timer()
        for deadline in (self._ike_deadline, self._sa_deadline):
            if deadline is not None and (due is None or deadline < due):
                due = deadline
        return due

    def handle_timer(self, now: float) -> None:
        self._now = max(self._now, now)
        if self._ike_deadline is not None and now >= self._ike_deadline:
            self._ike_handle_timer(now)
            self._ike_dirty = True
        self._drain(now)
        self.l2tp.handle_timer(now)
        if self._sa_deadline is not None and now >= self._sa_deadline:
            for event in self.policy.handle_timer(now):  # IKE rekeys by time itself; a byte
                name = f"sa_{type(event).__name__}"     # lifetime is only seen here
                self.counters[name] = self.counters.get(name, 0) + 1
                if isinstance(event, RekeyDue):
                    self._rekey(event, now)
            self._sa_deadline = self._sa_timer(now)
            self._ike_dirty = True
        self._drain(now)

    BYTE_LIFETIME_CHECK = 1.0  # seconds between looks at SAs with a byte lifetime

    def _sa_timer(self, now: float) -> float | None:
        """The policy's next time lifetime; with a byte lifetime, a look every second too
        (the data path never checks lifetimes: it stays O(1) per packet)."""
        deadline = self.policy.get_timer(now)
        if any(c.outbound.lifetime_bytes or c.inbound.lifetime_bytes
               for c in self.children.values()):
            check = now + self.BYTE_LIFETIME_CHECK
            deadline = check if deadline is None else min(deadline, check)
        return deadline

    def _rekey(self, event: RekeyDue, now: float) -> None:
        """An SA reached its soft lifetime (RFC 4301 §4.4.2.1): negotiate its successor.
        The client (the Quick Mode initiator) does; the server waits for it."""

    @property
    def sessions(self) -> dict:
        return self.l2tp.sessions

    @property
    def tunnels(self) -> dict:
        return self.l2tp.tunnels

    def status(self) -> dict:
        sa_counters: dict[str, int] = {}
        for child in self.children.values():
            for sa in (child.inbound, child.outbound):
                for name, value in sa.counters.as_dict().items():
                    sa_counters[name] = sa_counters.get(name, 0) + value
        policy = dict(self.policy.counters)
        return self.l2tp.status() | {
            "ike": self._ike_status(),
            "ipsec": {
                "sas": [{"peer": c.peer, "spi_in": f"{c.inbound.spi:#010x}",
                         "spi_out": f"{c.outbound.spi:#010x}", "cipher": c.inbound.cipher,
                         "integrity": c.inbound.integrity,
                         "encapsulation": "udp-transport" if c.inbound.encap else "transport",
                         "in": c.inbound.counters.as_dict(),
                         "out": c.outbound.counters.as_dict()} for c in self.children.values()],
                "replayed": policy.get("replayed", 0),
                "auth_failures": policy.get("auth_failures", 0),
                "cleartext_l2tp_dropped": policy.get("cleartext_l2tp_dropped", 0),
                "policy": policy, "sa_totals": sa_counters, "counters": dict(self.counters)},
        }

    # -- inbound ---------------------------------------------------------------------------
    def _inbound(self, event: L2tpDatagram | IkePacket | Dropped, now: float) -> bool:
        """Hand what the policy opened on; True when only data moved (see receive_datagram
        of the L2TP stack)."""
        if type(event) is L2tpDatagram:
            address = self._l2tp_address(event)
            self._set_route(address, (event.peer, event.src_port))
            return self.l2tp.receive_datagram(address, event.payload, now)
        if isinstance(event, IkePacket):
            self._receive_ike(event.data, (event.peer[0], event.peer[1] or NAT_T_PORT), now)
            return False
        return True  # Dropped: the policy counted it under its reason

    def _l2tp_address(self, datagram: L2tpDatagram) -> Address:
        raise NotImplementedError

    # -- outbound --------------------------------------------------------------------------
    def _drain(self, now: float) -> None:
        """Move IKE and L2TP output to the wire and handle IKE events, until quiet.

        IKE is looked at only when something touched it (`_ike_dirty`): the responder's
        outputs and timer are O(peers), and an ESP data packet must stay O(1). The IKE and
        SA deadlines are cached for the same reason; only IKE events change the SAs."""
        self._now = max(self._now, now)
        for _ in range(8):  # an event may make IKE or L2TP send, which may give an event
            moved = False
            if self._ike_dirty:
                self._ike_dirty = False
                moved = self._drain_ike(now)
                self._ike_dirty = moved  # an event handled may have made IKE act again
                self._ike_deadline = self._ike_timer()
                self._sa_deadline = self._sa_timer(self._now)
            self._flush_l2tp(now)
            if self._l2tp_events(now):
                self._ike_dirty = moved = True
            if not moved:
                break

    def _flush_l2tp(self, now: float) -> None:
        """Each L2TP datagram queued, through its peer's SA (RFC 3193 §4: never in clear),
        onto the wire as IP protocol 50 or UDP 4500."""
        policy, out = self.policy, self._out
        for dst, data in self.l2tp.datagrams_to_send():
            route = self._routes.get(dst) or self._default_route(dst)
            if route is None:
                self.counters["l2tp_no_sa"] += 1
                continue
            try:
                sa, esp = policy.protect(route[0], policy.l2tp_port, route[1], data, now)
            except LocalProtocolError:  # no SA (NoSecurityAssociation), or it is used up
                self.counters["l2tp_no_sa"] += 1
                continue
            self.counters["esp_out"] += 1
            encap = sa.encap
            out.append((("esp", sa.dst, 0, 0) if encap is None else
                        ("udp", sa.dst, encap[1], encap[0]), esp))

    def _default_route(self, dst: Address) -> tuple[Peer, int] | None:
        return None

    def _ike_out(self, datagrams: list[tuple[Address, int, bytes]]) -> bool:
        for dst, src_port, data in datagrams:
            self.counters["ike_out"] += 1
            if src_port == NAT_T_PORT:
                data = ike_with_marker(data)  # RFC 3948 §2.2
            self._out.append((("udp", dst[0], dst[1], src_port), data))
        return bool(datagrams)

    def _keepalive(self, event: NATKeepaliveDue) -> None:
        self.counters["keepalives"] += 1
        self._out.append((("udp", event.dst[0], event.dst[1], event.src_port), KEEPALIVE))

    # -- SAs -------------------------------------------------------------------------------
    def _install(self, event: ChildSAEstablished, now: float) -> _Child:
        inbound, outbound = _security_associations(event)
        inbound.created = outbound.created = now
        self.policy.add_pair(inbound, outbound)
        child = _Child(inbound, outbound, _peer_text(event.remote), now)
        self.children[event.spi_in] = child
        self._events.append(IPsecUp(child.peer, event.spi_in, event.spi_out, event.cipher,
                                    event.integrity, event.encapsulation))
        return child

    def _uninstall(self, event: ChildSADeleted) -> None:
        child = self.children.pop(event.spi_in, None)
        if child is None:
            return
        self.policy.remove(child.inbound)
        self.policy.remove(child.outbound)
        self._events.append(IPsecDown(child.peer, event.spi_in, event.spi_out, event.reason))
        if all(c.peer != child.peer for c in self.children.values()):
            # the peer's last SA: its L2TP route goes too (a rekey installs first)
            peer = (child.outbound.dst, child.outbound.encap[1] if child.outbound.encap
                    else None)
            for address in [a for a, r in self._routes.items() if r[0] == peer]:
                del self._routes[address]
            self._fast_reset()

    # -- hooks -----------------------------------------------------------------------------
    def _receive_ike(self, data: bytes, src: Address, now: float) -> None:
        self.counters["ike_in"] += 1
        self._ike_dirty = True
        self.ike.receive_datagram(data, src, now)

    def _drain_ike(self, now: float) -> bool:
        raise NotImplementedError

    def _l2tp_events(self, now: float) -> bool:
        """Pass the L2TP stack's events on; True when that made IKE or L2TP act."""
        while (event := self.l2tp.next_event()) is not None:
            self._events.append(event)
        return False

    def _ike_timer(self) -> float | None:
        return self.ike.get_timer()

    def _ike_handle_timer(self, now: float) -> None:
        self.ike.handle_timer(now)

    def _ike_status(self) -> Any:
        raise NotImplementedError


class L2TPIPsecServer(_IPsecStack):
    """The LNS behind an IKE responder: many peers, each with its ISAKMP SA and ESP SAs."""

    def __init__(self, ppp_config_for: Callable[[int, str], PPPConfig | str | None],
                 tunnel_config: TunnelConfig | None, ike_config: IKEConfig,
                 local_address: str, max_sessions: int = 0,
                 random: Callable[[int], bytes] = os.urandom):
        super().__init__(ike_config, local_address, random)
        self.l2tp = L2TPServer(ppp_config_for, tunnel_config, max_sessions, random)
        self.datagrams_to_tun = self.l2tp.datagrams_to_tun  # type: ignore[method-assign]
        self.ike = IKEResponder(ike_config, (local_address, IKE_PORT), random=random)
        self.counters["nat_without_nat_t_refused"] = 0
        self.counters["remote_address_changed"] = 0
        self._aliases: dict[Address, Address] = {}  # a moved peer -> its first L2TP address

    def _l2tp_address(self, datagram: L2tpDatagram) -> Address:
        # With NAT-T, the NAT port names the peer (two clients share one public address);
        # after the peer's NAT mapping moved, the L2TP stack still knows it by the first one.
        peer = datagram.peer
        address = (peer[0], peer[1] if peer[1] is not None else datagram.src_port)
        return self._aliases.get(address, address)

    def _peer_moved(self, old: Address, new: Address) -> None:
        """RFC 3947 §5.2 "dynamic update": the peer's NAT mapping changed (an authenticated
        IKE message came from `new`); its UDP-encapsulated SAs and its L2TP route follow."""
        self.counters["remote_address_changed"] += 1
        for child in self.children.values():
            if child.peer != _peer_text(old) or child.inbound.encap is None:
                continue
            self.policy.remove(child.inbound)
            self.policy.remove(child.outbound)
            _move(child.inbound, "src", new[0], (new[1], child.inbound.encap[1]))
            _move(child.outbound, "dst", new[0], (child.outbound.encap[0], new[1]))
            self.policy.add_pair(child.inbound, child.outbound)
            child.peer = _peer_text(new)
        alias = self._aliases.pop(old, old)
        self._aliases[new] = alias
        route = self._routes.get(alias)
        if route is not None and route[0] == old:
            self._routes[alias] = (new, route[1])
        self._fast_reset()  # the L2TP addresses of the data path's routes moved

    def _drain_ike(self, now: float) -> bool:
        handled = False
        while (pair := self.ike.next_event()) is not None:
            handled = True
            self._on_ike_event(pair[0], pair[1], now)
        return self._ike_out(self.ike.datagrams_to_send()) or handled

    def _on_ike_event(self, session: IKESession, event: Any, now: float) -> None:
        peer = _peer_text(session.remote)
        if isinstance(event, ChildSAEstablished):
            self._install(event, now)
        elif isinstance(event, ChildSADeleted):
            self._uninstall(event)
        elif isinstance(event, Phase1Established):
            self._events.append(IKEEstablished(peer, event.peer_id, event.cipher, event.hash,
                                               event.group, event.auth,
                                               event.remote_behind_nat,
                                               event.peer_ke_unpadded))
            if event.nat_without_nat_t:
                # ESP from behind this NAT cannot work: refuse now, with a Delete the client
                # can read, instead of letting L2TP time out.
                self.counters["nat_without_nat_t_refused"] += 1
                self._events.append(IPsecFailed(peer, NAT_WITHOUT_NAT_T))
                session.delete(now)
        elif isinstance(event, IKEFailed | ChildSAFailed):
            self._events.append(IPsecFailed(peer, event.reason, event.notify))
        elif isinstance(event, NATKeepaliveDue):
            self._keepalive(event)
        elif isinstance(event, RemoteAddressChanged):
            self._peer_moved(event.old, event.new)

    def _ike_status(self) -> Any:
        return {"sessions": self.ike.status(), "counters": dict(self.ike.counters)}

    def begin_shutdown(self, reason: str, now: float, grace: float = SHUTDOWN_GRACE) -> int:
        """LCP Terminate-Request on every open call, inside the SAs (the L2TP stack's)."""
        closed = self.l2tp.begin_shutdown(reason, now, grace)
        self._drain(now)
        return closed

    def shutdown_finished(self, now: float) -> bool:
        return self.l2tp.shutdown_finished(now)

    def shutdown_report(self) -> dict[str, int]:
        return self.l2tp.shutdown_report()

    @property
    def shutdown_deadline(self) -> float | None:
        return self.l2tp.shutdown_deadline

    def stop_all(self, reason: str, now: float) -> None:
        """Shutdown, after begin_shutdown: StopCCN on every tunnel (through the SAs), then
        every IKE session is deleted (Delete payloads for its ESP SAs and its ISAKMP SA)."""
        self.l2tp.stop_all(reason, now)
        self._drain(now)
        for session in list(self.ike.sessions):
            session.delete(now)
        self._ike_dirty = True
        self._drain(now)


class L2TPIPsecClient(_IPsecStack):
    """A remote-access client: IKE Main Mode + Quick Mode first, then the L2TP client through
    the SA; hanging up closes L2TP (CDN, StopCCN), then deletes the SAs (IKE Delete)."""

    def __init__(self, ppp_config: PPPConfig, server: str, tunnel_config: TunnelConfig | None,
                 ike_config: IKEConfig, local_address: str,
                 random: Callable[[int], bytes] = os.urandom):
        super().__init__(ike_config, local_address, random)
        self.server = server
        self.l2tp = L2TPClient(ppp_config, server, tunnel_config, L2TP_PORT, random)
        self.datagrams_to_tun = self.l2tp.datagrams_to_tun  # type: ignore[method-assign]
        self.ike = IKESession(ike_config, "initiator", (local_address, IKE_PORT),
                              (server, IKE_PORT), random=random)
        self._server_peer: Peer | None = None
        self._l2tp_started = False
        self._hung_up = False
        self._failed = False
        self._reason = ""
        self._nat = False

    def start(self, now: float) -> None:
        self.ike.start(now)
        self._ike_dirty = True
        self._drain(now)

    def hang_up(self, now: float, reason: str = "user hung up") -> None:
        self._hung_up = True
        self._reason = self._reason or reason
        if self._l2tp_started and not self.l2tp.done and not self.l2tp.lingering:
            self.l2tp.hang_up(now, reason)
        else:  # L2TP is over (or only re-acking the server's StopCCN): the SAs go now
            self.ike.delete(now)
            self._ike_dirty = True
        self._drain(now)

    @property
    def done(self) -> bool:
        """Failed, or L2TP over and the SAs deleted, with the last datagrams (the IKE
        Deletes) handed out by `datagrams_to_send`."""
        if self._out:
            return False
        if self._failed:
            return True
        l2tp_over = not self._l2tp_started or self.l2tp.done or (
            self.l2tp.lingering and self.ike.closed)  # no SA left to carry a re-ack
        return l2tp_over and self.ike.closed and (self._hung_up or self._l2tp_started)

    @property
    def lingering(self) -> bool:
        """L2TP re-acks the server's StopCCN (L2TPClient.lingering), inside SAs still up."""
        return self.l2tp.lingering and not self.ike.closed

    def _rekey(self, event: RekeyDue, now: float) -> None:
        for spi_in, child in list(self.children.items()):
            if event.spi in (child.inbound.spi, child.outbound.spi):
                try:
                    self.ike.rekey_child(spi_in, now)
                    self.counters["rekeys_by_lifetime"] = \
                        self.counters.get("rekeys_by_lifetime", 0) + 1
                except LocalProtocolError:
                    pass  # IKE replaced or deleted it meanwhile

    @property
    def session_id(self) -> int:
        return self.l2tp.session_id

    @property
    def reason(self) -> str:
        return self._reason or self._translate(self.l2tp.reason)

    def _translate(self, reason: str) -> str:
        if reason != NO_REPLY_REASON:
            return reason
        if not self.ike_config.nat_t:
            return f"{ESP_NO_REPLY} Or: {NAT_WITHOUT_NAT_T}"
        return ESP_NO_REPLY_NAT_T if self._nat else ESP_NO_REPLY

    def _l2tp_address(self, datagram: L2tpDatagram) -> Address:
        return (datagram.peer[0], datagram.src_port)

    def _default_route(self, dst: Address) -> tuple[Peer, int] | None:
        if self._server_peer is None or dst[0] != self.server:
            return None
        return (self._server_peer, dst[1])

    def _drain_ike(self, now: float) -> bool:
        handled = False
        while (event := self.ike.next_event()) is not None:
            handled = True
            self._on_ike_event(event, now)
        return self._ike_out(self.ike.datagrams_to_send()) or handled

    def _on_ike_event(self, event: Any, now: float) -> None:
        peer = _peer_text(self.ike.remote)
        if isinstance(event, ChildSAEstablished):
            self._install(event, now)
            self._server_peer = (event.remote[0], event.remote[1]
                                 if event.encapsulation == "udp-transport" else None)
            self._fast_reset()  # the default route's SA peer
            if not self._l2tp_started and not self._hung_up:
                self._l2tp_started = True
                self.l2tp.start(now)
        elif isinstance(event, ChildSADeleted):
            self._uninstall(event)
        elif isinstance(event, Phase1Established):
            self._nat = event.local_behind_nat or event.remote_behind_nat
            self._events.append(IKEEstablished(peer, event.peer_id, event.cipher, event.hash,
                                               event.group, event.auth, self._nat,
                                               event.peer_ke_unpadded))
        elif isinstance(event, IKEFailed | ChildSAFailed):
            self._fail(peer, event.reason, event.notify, now)
        elif isinstance(event, IKEClosed):
            self._ike_closed(peer, event.reason, now)
        elif isinstance(event, NATKeepaliveDue):
            self._keepalive(event)

    def _fail(self, peer: str, reason: str, notify: str | None, now: float) -> None:
        if self._l2tp_started or self._failed:
            return  # a failed rekey: the SA in use goes on until its lifetime
        self._failed = True
        self._reason = self._reason or reason
        self._events.append(IPsecFailed(peer, self._reason, notify))
        if not self.ike.closed:
            self.ike.delete(now)

    def _ike_closed(self, peer: str, reason: str, now: float) -> None:
        if self._hung_up and (self.l2tp.done or not self._l2tp_started):
            return  # our own delete
        if not self._l2tp_started:
            if not self.ike_config.nat_t and "deleted" in reason:
                reason = f"{NAT_WITHOUT_NAT_T} (the server deleted the IKE SA after Main Mode)"
            self._fail(peer, reason, None, now)
            return
        if not self.children:  # the SAs went with it: L2TP cannot be carried any more
            self._reason = self._reason or f"IPsec closed: {reason}"
            self.l2tp.hang_up(now, self._reason)

    def _l2tp_events(self, now: float) -> bool:
        while (event := self.l2tp.next_event()) is not None:
            if isinstance(event, ControlClosed) and event.reason == NO_REPLY_REASON:
                event = ControlClosed(event.conn_id, self._translate(event.reason))
            self._events.append(event)
        if self._l2tp_started and self.l2tp.done and not self.ike.closed:
            self._hung_up = True
            self.ike.delete(now)  # L2TP is over: the SAs go (RFC 2408 §3.15 Delete)
            return True
        return False

    def _ike_status(self) -> Any:
        return self.ike.status()
