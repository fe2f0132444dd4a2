"""The IPsec policy of an L2TP/IPsec host (RFC 4301 §4.4.1, RFC 3193 §4): UDP 1701 to and from
a peer travels only inside that peer's transport-mode ESP SA.

Sans-I/O: the runtime hands over what arrived (raw ESP, a UDP 4500 payload or plain UDP 1701)
with the sender's address and port and the time, and gets back an event; it asks `outbound`
what to put on the wire for an L2TP datagram. Drops are events too (`Dropped`, with the name of
the counter that went up), never exceptions, so one packet cannot stop the pump.

Keys: inbound SAs by SPI (the SPI is what the receiver chose, so it is unique here, RFC 4301
§4.1); outbound SAs by the peer as seen on the wire, (address, UDP port) with NAT-T and
(address, None) without. Two Windows clients behind one NAT both send from 500/4500; the NAT
gives them one public address and two ports, so keying by address alone would cross them.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tunnels.errors import LocalProtocolError
from tunnels.ipsec.esp import EspError, SAExpired, encapsulate_udp, open_esp
from tunnels.ipsec.ipv4 import PROTO_UDP, address_sum
from tunnels.ipsec.natt import NattMalformed, classify, strip_marker
from tunnels.ipsec.sa import SecurityAssociation, SequenceExhausted

L2TP_PORT = 1701
_UDP = struct.Struct("!HHHH")
Peer = tuple[str, int | None]  # (address, UDP source port with NAT-T, else None)
PacketKind = Literal["esp", "udp4500", "udp1701"]


@dataclass(frozen=True, slots=True)
class L2tpDatagram:
    """A UDP datagram for L2TP: `peer` is the key to answer with in `outbound`."""

    peer: Peer
    src_port: int
    dst_port: int
    payload: bytes
    spi: int | None  # the inbound SA it came through; None for cleartext (policy off)


@dataclass(frozen=True, slots=True)
class IkePacket:
    """An IKE message that came on UDP 4500 behind the non-ESP marker (RFC 3948 §2.2)."""

    peer: Peer
    data: bytes


@dataclass(frozen=True, slots=True)
class Dropped:
    """A packet discarded on purpose; `reason` is the counter it was counted in."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Transmit:
    """What to send: an IP protocol 50 payload ("esp"), a UDP payload from `src_port` to
    `dst_port` ("udp4500", or "udp1701" in clear when protection is not required)."""

    kind: PacketKind
    dst: str
    src_port: int | None
    dst_port: int | None
    payload: bytes


Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class RekeyDue:
    """An SA reached its soft lifetime: IKE should negotiate its successor (once per SA)."""

    direction: Direction
    spi: int
    peer: Peer


@dataclass(frozen=True, slots=True)
class SAEnded:
    """An SA reached its hard lifetime and was removed."""

    direction: Direction
    spi: int
    peer: Peer


class NoSecurityAssociation(LocalProtocolError):
    """L2TP to a peer with no outbound SA while the policy requires protection."""


InboundEvent = L2tpDatagram | IkePacket | Dropped


def _inbound_peer(sa: SecurityAssociation) -> Peer:
    return (sa.src, sa.encap[0] if sa.encap else None)


def _outbound_peer(sa: SecurityAssociation) -> Peer:
    return (sa.dst, sa.encap[1] if sa.encap else None)


class TransportPolicy:
    """SAs of one host, the protect/bypass decision for UDP 1701, and the counters."""

    def __init__(self, *, require_protection: bool = True, l2tp_port: int = L2TP_PORT,
                 iv_source: Callable[[int], bytes] = secrets.token_bytes):
        self.require_protection = require_protection
        self.l2tp_port = l2tp_port
        self._iv = iv_source  # RFC 3602 §3: IVs MUST be unpredictable; tests inject theirs
        # The system's CSPRNG either way: esp.py draws the IV itself (the compiled path from
        # a RAND_bytes pool, a third of a microsecond less than a urandom call per packet).
        self._iv_drawn_by_esp = iv_source in (secrets.token_bytes, os.urandom)
        self.inbound_sas: dict[int, SecurityAssociation] = {}
        self.outbound_sas: dict[Peer, SecurityAssociation] = {}
        self._address_sums: dict[Peer, int] = {}  # pseudo-header part of the inner UDP checksum
        # SAs whose soft lifetime was reported, by identity (the object, not id(): a freed
        # SA's id can come back as its successor's).
        self._soft_reported: list[SecurityAssociation] = []
        self.counters: Counter[str] = Counter()
        self.version = 0  # moves with every change of the SA tables (caches of SAs check it)

    # SA table ----------------------------------------------------------------------------
    def add_inbound(self, sa: SecurityAssociation) -> None:
        if sa.spi in self.inbound_sas:
            raise LocalProtocolError(f"inbound SPI {sa.spi:#010x} already in use")
        self.inbound_sas[sa.spi] = sa
        self.version += 1

    def add_outbound(self, sa: SecurityAssociation) -> None:
        """Install (or, after a rekey, replace) the SA used to send to its peer."""
        peer = _outbound_peer(sa)
        replaced = self.outbound_sas.get(peer)
        if replaced is not None:
            self._forget(replaced)
        self.outbound_sas[peer] = sa
        self._address_sums[peer] = address_sum(sa.src_packed, sa.dst_packed)
        self.version += 1

    def add_pair(self, inbound: SecurityAssociation, outbound: SecurityAssociation) -> None:
        self.add_inbound(inbound)
        self.add_outbound(outbound)

    def remove(self, sa: SecurityAssociation) -> None:
        if self.inbound_sas.get(sa.spi) is sa:
            del self.inbound_sas[sa.spi]
        peer = _outbound_peer(sa)
        if self.outbound_sas.get(peer) is sa:
            del self.outbound_sas[peer]
            del self._address_sums[peer]
        self._forget(sa)
        self.version += 1

    def _forget(self, sa: SecurityAssociation) -> None:
        self._soft_reported = [s for s in self._soft_reported if s is not sa]

    def _all(self) -> list[tuple[Direction, Peer, SecurityAssociation]]:
        return [*(("in", _inbound_peer(sa), sa) for sa in self.inbound_sas.values()),
                *(("out", peer, sa) for peer, sa in self.outbound_sas.items())]

    # Inbound -----------------------------------------------------------------------------
    def _drop(self, reason: str, detail: str = "") -> Dropped:
        self.counters[reason] += 1
        return Dropped(reason, detail)

    def inbound(self, src: Peer, packet_kind: PacketKind, data: bytes,
                now: float) -> InboundEvent:
        """Classify and open what arrived from `src` ((address, UDP source port), the port
        None for raw ESP); plain UDP 1701 is accepted only when protection is not required."""
        if packet_kind == "esp":
            return self._esp((src[0], None), data, now)
        if packet_kind == "udp4500":
            try:
                kind = classify(data)
            except NattMalformed as exc:
                return self._drop("malformed", str(exc))
            if kind == "keepalive":  # RFC 3948 §2.3: the receiver ignores it
                return self._drop("nat_keepalive")
            if kind == "ike":
                return IkePacket(src, strip_marker(data))
            return self._esp(src, data, now)
        if packet_kind == "udp1701":
            if self.require_protection:
                return self._drop("cleartext_l2tp_dropped", f"from {src[0]}:{src[1]}")
            self.counters["cleartext_l2tp"] += 1
            return L2tpDatagram(src, src[1] or 0, self.l2tp_port, data, None)
        raise LocalProtocolError(f"packet kind {packet_kind!r}: esp, udp4500 or udp1701")

    def _esp(self, src: Peer, data: bytes, now: float) -> InboundEvent:
        if len(data) < 8:
            return self._drop("malformed", f"{len(data)}-octet ESP")
        spi = int.from_bytes(data[:4], "big")
        sa = self.inbound_sas.get(spi)
        if sa is None:
            return self._drop("unknown_spi", f"SPI {spi:#010x} from {src[0]}")
        if sa.src != src[0] or (sa.encap[0] if sa.encap else None) != src[1]:
            # Another peer (or the same one through another NAT mapping) using this SPI.
            return self._drop("peer_mismatch", f"SPI {spi:#010x} from {src}, SA is "
                                               f"{_inbound_peer(sa)}")
        try:
            next_header, plain, start, end = open_esp(sa, data, now)
        except EspError as exc:
            return self._drop(exc.counter, str(exc))
        return self._l2tp(src, sa, next_header, plain, start, end)

    def _l2tp(self, src: Peer, sa: SecurityAssociation, next_header: int, plain: bytes,
              start: int, end: int) -> InboundEvent:
        """The L2TP datagram in `plain[start:end]` (ESP's payload, not sliced out yet)."""
        if next_header != PROTO_UDP:
            return self._drop("selector_mismatch", f"protocol {next_header} in an L2TP SA")
        if end - start < 8:
            return self._drop("malformed", f"UDP header: need 8 octets, have {end - start}")
        sport, dport, length, _ = _UDP.unpack_from(plain, start)
        if not 8 <= length <= end - start:
            return self._drop("malformed", f"UDP length {length} in a {end - start}-octet "
                                           f"segment")
        if dport != self.l2tp_port:
            return self._drop("selector_mismatch", f"UDP port {dport} in an L2TP SA")
        # The UDP checksum is not checked: the ICV already proved the datagram intact, and
        # after a NAT it would be wrong anyway (RFC 3948 §3.1.2).
        self.counters["l2tp_in"] += 1
        return L2tpDatagram(src, sport, dport, plain[start + 8 : start + length], sa.spi)

    # Outbound ----------------------------------------------------------------------------
    def outbound(self, dst: Peer, sport: int, dport: int, udp_payload: bytes,
                 now: float) -> Transmit:
        """What to send for a UDP datagram (L2TP) to `dst` (the `peer` of what it sent)."""
        if dst not in self.outbound_sas and not self.require_protection:
            self.counters["cleartext_l2tp_out"] += 1
            return Transmit("udp1701", dst[0], sport, dport, udp_payload)
        sa, esp = self.protect(dst, sport, dport, udp_payload, now)
        encap = sa.encap
        if encap is None:
            return Transmit("esp", sa.dst, None, None, esp)
        return Transmit("udp4500", sa.dst, encap[0], encap[1], esp)

    def protect(self, dst: Peer, sport: int, dport: int, udp_payload: bytes,
                now: float) -> tuple[SecurityAssociation, bytes]:
        """`outbound` when an SA is required (the L2TP/IPsec stacks' data path): the SA and
        the ESP packet, without a Transmit; NoSecurityAssociation when there is none."""
        sa = self.outbound_sas.get(dst)
        if sa is None:
            self.counters["no_outbound_sa"] += 1
            raise NoSecurityAssociation(f"no SA to {dst}: L2TP is not sent in clear")
        try:  # the UDP header, its checksum and ESP built in one buffer (esp.py)
            iv = None if self._iv_drawn_by_esp else self._iv(sa.enc.block_size)
            esp = encapsulate_udp(sa, sport, dport, udp_payload, self._address_sums[dst], iv,
                                  now)
        except (SAExpired, SequenceExhausted):
            self.counters["outbound_sa_expired"] += 1  # IKE missed the soft lifetime
            raise
        self.counters["l2tp_out"] += 1
        return sa, esp

    # Lifetimes ---------------------------------------------------------------------------
    def get_timer(self, now: float) -> float | None:
        """The next time a soft or hard time lifetime is due (byte lifetimes are checked on
        every packet)."""
        deadlines = [sa.next_deadline(now) for _, _, sa in self._all()]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[RekeyDue | SAEnded]:
        """Report soft lifetimes once and remove SAs past their hard lifetime (RFC 4301
        §4.4.2.1); byte lifetimes are seen here too, at the next tick."""
        events: list[RekeyDue | SAEnded] = []
        for direction, peer, sa in self._all():
            if sa.expired(now):
                self.remove(sa)
                events.append(SAEnded(direction, sa.spi, peer))
            elif sa.soft_expired(now) and all(s is not sa for s in self._soft_reported):
                self._soft_reported.append(sa)
                events.append(RekeyDue(direction, sa.spi, peer))
        return events
