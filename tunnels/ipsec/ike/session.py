"""One IKEv1 peer: Main Mode, Quick Mode, Informational, DPD, retransmission and rekeying,
sans-I/O (datagrams, API calls and `now` in; datagrams with their port pair and events out).

Transport rules this module owns (IKE runs over UDP, RFC 2408 §2.5.1 leaves reliability to
the implementation):
- A request that expects an answer (MM1/3/5, QM1, and the responder's QM2, which only the
  initiator's QM3 acknowledges) is retransmitted with exponential back-off; after
  `retransmit_tries` the exchange fails with a named reason.
- A datagram identical to one already answered gets the same answer again (counted as a
  duplicate), which is how a lost MM2/MM4/MM6/QM2/QM3 is recovered: the peer retransmits.
- Nothing unauthenticated changes state once phase 1 exists; an unauthenticated error Notify
  during Main Mode ends the negotiation with its name (RFC 2408 §5.1 allows it, and it is the
  only way the initiator learns of a wrong pre-shared key).
- Behind a NAT both ends float to UDP 4500 from MM5 on (RFC 3947 §4). Each outgoing
  datagram names its destination and source port; the runtime adds the non-ESP marker on
  4500 (RFC 3948 §2.2) and sends NAT keepalives when told (`NATKeepaliveDue`).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunnels.errors import LocalProtocolError, RemoteProtocolError
from tunnels.ipsec.ike import payloads as p
from tunnels.ipsec.ike.config import IKEConfig
from tunnels.ipsec.ike.constants import (
    NAT_T_PORT,
    ExchangeType,
    Flags,
    NotifyType,
    ProtocolId,
)
from tunnels.ipsec.ike.events import (
    ChildSADeleted,
    ChildSAEstablished,
    ChildSAFailed,
    Event,
    IKEClosed,
    IKEFailed,
    NATKeepaliveDue,
    NotifyReceived,
    Phase1Established,
    RemoteAddressChanged,
)
from tunnels.ipsec.ike.phase1 import ZERO_COOKIE, MainMode, MMState, NegotiationFailed
from tunnels.ipsec.ike.phase2 import QMState, QuickMode, build_informational, open_informational

Address = tuple[str, int]
Datagram = tuple[Address, int, bytes]  # (destination, source port, bytes)
_ANSWER_CACHE = 16
_ERROR_NOTIFY_MAX = 8191  # RFC 2408 §3.14.1: 1-8191 are errors, 16384+ status


def _check_address(name: str, address: Address) -> None:
    """NAT-D hashes the real addresses (RFC 3947 §3.2): a wildcard would look like a NAT."""
    try:
        ok = ipaddress.IPv4Address(address[0]) != ipaddress.IPv4Address("0.0.0.0") \
            and 0 < address[1] <= 0xFFFF
    except (ValueError, TypeError, IndexError):
        ok = False
    if not ok:
        raise LocalProtocolError(f"{name}: {address!r}; expected (IPv4 address, port) with "
                                 "the address the datagrams really use, not 0.0.0.0")


def notify_name(value: int) -> str:
    try:
        return NotifyType(value).name
    except ValueError:
        return f"notify {value}"


@dataclass
class _Pending:
    """A sent request awaiting its answer."""

    datagram: Datagram
    next_at: float
    interval: float
    tries_left: int
    what: str
    on_give_up: Callable[[str], None]


@dataclass
class _Child:
    sa: ChildSAEstablished
    expire_at: float
    rekey_at: float | None
    rekeying: bool = False


class IKESession:
    """One peer, one role. `remote` is where the initiator sends; a responder learns it from
    the datagrams it receives (a NAT may rewrite it)."""

    def __init__(self, config: IKEConfig, role: str = "initiator",
                 local: Address = ("0.0.0.0", 0), remote: Address = ("0.0.0.0", 0),
                 random: Callable[[int], bytes] = secrets.token_bytes,
                 spi_allocator: Callable[[], int] | None = None):
        if role not in ("initiator", "responder"):
            raise LocalProtocolError(f"role: {role!r}; expected 'initiator' or 'responder'")
        _check_address("local", local)
        if role == "initiator":
            _check_address("remote", remote)
        self.config, self.role, self.random = config, role, random
        self.local, self.remote = local, remote
        self._spi_allocator = spi_allocator or self._random_spi
        self._sas: list[MainMode] = []
        self._qms: dict[int, QuickMode] = {}
        self._qm_replaces: dict[int, int] = {}  # QM message id -> spi_in of the child it rekeys
        self._children: dict[int, _Child] = {}
        self._pending: dict[tuple[str, int | bytes], _Pending] = {}
        self._answers: OrderedDict[bytes, Datagram | None] = OrderedDict()
        self._out: list[Datagram] = []
        self._events: deque[Event] = deque()
        self._p1_times: dict[bytes, tuple[float, float | None]] = {}  # icookie: expire, rekey
        self._last_heard = 0.0
        self._dpd_due: float | None = None
        self._dpd_outstanding: int | None = None
        self._dpd_seq = int.from_bytes(random(4), "big") & 0x7FFFFFFF
        self._dpd_misses = 0
        self._keepalive_due: float | None = None
        self.closed = False
        self.reason = ""
        self.counters: dict[str, int] = {
            "received": 0, "sent": 0, "dropped": 0, "duplicates": 0, "retransmits": 0,
            "unauthenticated": 0, "ke_unpadded": 0}
        self.last_drop = ""

    # -- API ----------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Initiator: Main Mode message 1 (and Quick Mode once phase 1 is up)."""
        if self.role != "initiator":
            raise LocalProtocolError("start(): only an initiator starts Main Mode")
        if self._sas or self.closed:
            raise LocalProtocolError("start(): already started")
        self._start_main_mode(now, floated=False)

    def receive_datagram(self, data: bytes, src: Address, now: float) -> None:
        """Any bytes: events and datagrams, or a counted drop (`counters`, `last_drop`)."""
        self.counters["received"] += 1
        try:
            self._receive(bytes(data), src, now)
        except RemoteProtocolError as exc:
            self.counters["dropped"] += 1
            self.last_drop = str(exc)

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [x.next_at for x in self._pending.values()]
        times += [t for expire, rekey in self._p1_times.values() for t in (expire, rekey)
                  if t is not None]
        for child in self._children.values():
            times.append(child.expire_at)
            if child.rekey_at is not None and not child.rekeying:
                times.append(child.rekey_at)
        times += [t for t in (self._dpd_due, self._keepalive_due) if t is not None]
        return min(times) if times and not self.closed else None

    def handle_timer(self, now: float) -> None:
        if self.closed:
            return
        for key, pending in list(self._pending.items()):
            if now >= pending.next_at and key in self._pending:
                self._retransmit(key, pending, now)
        self._phase1_lifetimes(now)
        self._child_lifetimes(now)
        self._dead_peer_detection(now)
        if self._keepalive_due is not None and now >= self._keepalive_due:
            sa = self._current()
            if sa is not None:
                self._events.append(NATKeepaliveDue((sa.remote[0], NAT_T_PORT), NAT_T_PORT))
            self._keepalive_due = now + self.config.nat_keepalive

    def delete(self, now: float) -> None:
        """Delete every ESP SA and the ISAKMP SA, telling the peer (RFC 2408 §3.15)."""
        if self.closed:
            return
        sa = self._current()
        if sa is not None:
            spis = tuple(c.sa.spi_in.to_bytes(4, "big") for c in self._children.values())
            if spis:
                self._send_info(sa, [p.D(ProtocolId.IPSEC_ESP, spis)])
            self._send_info(sa, [p.D(ProtocolId.ISAKMP, (sa.icookie + sa.rcookie,))])
        self._close("deleted locally")

    def rekey_child(self, spi_in: int, now: float) -> None:
        """Start a Quick Mode replacing this SA (the ESP layer calls it near its byte limit)."""
        child = self._children.get(spi_in)
        if child is None:
            raise LocalProtocolError(f"rekey_child: no SA with spi_in {spi_in:#010x}")
        if not child.rekeying:
            child.rekeying = True
            self._start_quick_mode(now, replaces=spi_in)

    def start_child(self, now: float) -> None:
        """Another ESP SA over the established ISAKMP SA (Quick Mode as initiator)."""
        if self.closed or self.role != "initiator":
            raise LocalProtocolError("start_child(): only an open initiator session")
        self._start_quick_mode(now)

    def forget(self, reason: str) -> None:
        """Drop every SA without a word to the peer: it said INITIAL-CONTACT, so it has none
        of them any more (RFC 2407 §4.6.3.3)."""
        self._close(reason)

    @property
    def peer_id(self) -> str:
        sa = self._current()
        return sa.peer_id if sa is not None else ""

    def icookies(self) -> list[bytes]:
        return [sa.icookie for sa in self._sas]

    @property
    def established(self) -> bool:
        return self._current() is not None

    def status(self) -> dict[str, Any]:
        sa = self._current() or (self._sas[-1] if self._sas else None)
        return {
            "role": self.role, "local": self.local, "remote": self.remote,
            "peer_id": sa.peer_id if sa else "",
            "phase1": sa.state.value if sa else "none",
            "proposal": (sa.proposal.cipher, sa.proposal.hash, sa.proposal.group)
            if sa and sa.proposal else None,
            "nat": {"mode": sa.nat.mode, "local_behind_nat": sa.nat.local_behind_nat,
                    "remote_behind_nat": sa.nat.remote_behind_nat} if sa else None,
            "isakmp_sas": len([s for s in self._sas if s.state is MMState.ESTABLISHED]),
            "child_sas": [{"spi_in": f"{c.sa.spi_in:#010x}", "spi_out": f"{c.sa.spi_out:#010x}",
                           "cipher": c.sa.cipher, "integrity": c.sa.integrity,
                           "encapsulation": c.sa.encapsulation}
                          for c in self._children.values()],
            "closed": self.closed, "reason": self.reason, "counters": dict(self.counters),
            "last_drop": self.last_drop,
        }

    # -- receiving ----------------------------------------------------------------------
    def _receive(self, data: bytes, src: Address, now: float) -> None:
        if self.closed:
            raise RemoteProtocolError("session closed")
        header, body = p.decode_header(data)
        if data in self._answers:
            self.counters["duplicates"] += 1
            answer = self._answers[data]
            if answer is not None:
                self._transmit(answer)
            return
        sa = self._sa_for(header, now)
        handler = _EXCHANGES.get(header.exchange)
        if handler is None:
            raise RemoteProtocolError(f"exchange type {header.exchange} not supported")
        handler(self, sa, header, body, data, src, now)

    def _sa_for(self, header: p.Header, now: float) -> MainMode:
        for sa in self._sas:
            if sa.icookie == header.icookie and (
                    sa.rcookie == header.rcookie
                    or (sa.state in (MMState.I_SENT_SA, MMState.I_SENT_AM1)
                        and sa.rcookie == ZERO_COOKIE)):
                return sa
        if (self.role == "responder" and header.rcookie == ZERO_COOKIE
                and header.exchange in _PHASE1_EXCHANGES):
            sa = MainMode(self.config, False, self._local_for_new(), self.remote, self.random)
            sa.icookie = header.icookie
            self._sas.append(sa)
            # a half-open SA must not live forever (an initiator that vanished, or a flood)
            self._p1_times[sa.icookie] = (now + self.config.half_open_timeout, None)
            return sa
        raise RemoteProtocolError(f"no ISAKMP SA for cookies {header.icookie.hex()}/"
                                  f"{header.rcookie.hex()}", p.notify_answer(
                                      NotifyType.INVALID_COOKIE))

    def _local_for_new(self) -> Address:
        current = self._current()
        return current.local if current is not None else self.local

    def _on_main_mode(self, sa: MainMode, header: p.Header, body: bytes, data: bytes,
                      src: Address, now: float) -> None:
        port_before = sa.local[1]
        try:
            reply = sa.handle(header, body, src)
        except RemoteProtocolError as exc:
            if not isinstance(exc, NegotiationFailed):
                if sa.state is MMState.R_START:  # a stray MM1 leaves no half-made SA behind
                    self._drop_sa(sa)
                raise
            if sa.state is MMState.R_START:
                sa.rcookie = ZERO_COOKIE  # RFC 2408 §3.1: no responder cookie if we refuse
            notify = exc.notify
            self._answer_plain_notify(sa, notify, src)
            self._phase1_failed(sa, str(exc), notify.name)
            return
        self._heard(sa, src, now, moved=False)  # MM5's new port is the NAT-T float itself
        self._pending.pop(("mm", sa.icookie), None)
        if reply is not None:
            src_port = sa.local[1] if sa.initiator else port_before
            dst = sa.remote if sa.initiator else src
            self._reply(data, (dst, src_port, reply))
            if sa.state in _AWAITING:  # AM2 too: only AM3 acknowledges it
                self._expect(("mm", sa.icookie), (dst, src_port, reply), now,
                             _AWAITING[sa.state], self._mm_gave_up(sa))
        else:
            self._remember(data, None)
        if sa.state is MMState.ESTABLISHED:
            self._phase1_up(sa, now)

    def _on_quick_mode(self, sa: MainMode, header: p.Header, body: bytes, data: bytes,
                       src: Address, now: float) -> None:
        if sa.state is not MMState.ESTABLISHED:
            raise RemoteProtocolError("Quick Mode before phase 1 is established")
        qm = self._qms.get(header.message_id)
        try:
            if qm is None:
                qm = QuickMode(sa, self.config, False, header.message_id, self._new_spi,
                               self.random)
                reply: bytes | None = qm.respond(header, body)
                self._qms[header.message_id] = qm
            else:
                reply = qm.handle(header, body)
        except NegotiationFailed as exc:
            self._heard(sa, src, now)
            self._send_info(sa, [p.N(exc.notify, ProtocolId.IPSEC_ESP)])
            self._qm_failed(header.message_id, str(exc), exc.notify.name)
            return
        self._heard(sa, src, now)
        if reply is not None:
            datagram = (sa.remote, sa.local[1], reply)
            self._reply(data, datagram)
            self._pending.pop(("qm", header.message_id), None)
            if qm.state is QMState.R_SENT_2:
                self._expect(("qm", header.message_id), datagram, now, "Quick Mode message 2",
                             lambda why, mid=header.message_id: self._qm_failed(mid, why))
        else:
            self._remember(data, None)
            self._pending.pop(("qm", header.message_id), None)
        if qm.result is not None:
            self._child_up(qm, now)

    def _on_informational(self, sa: MainMode, header: p.Header, body: bytes, data: bytes,
                          src: Address, now: float) -> None:
        if not header.flags & Flags.E:
            self._on_plain_informational(sa, header, body)
            return
        if sa.state is not MMState.ESTABLISHED:
            raise RemoteProtocolError("encrypted Informational before phase 1 is established")
        msg = open_informational(sa, header, body)
        self._remember(data, None)
        self._heard(sa, src, now)
        for payload in msg.payloads[1:]:
            if isinstance(payload, p.N):
                self._on_notify(sa, payload, now)
            elif isinstance(payload, p.D):
                self._on_delete(sa, payload, now)

    def _on_plain_informational(self, sa: MainMode, header: p.Header, body: bytes) -> None:
        """Unprotected: only an error Notify during Main Mode is believed, and only from the
        peer holding our cookie."""
        payloads, _ = p.decode_payloads(header.next_payload, body)
        if sa.state in (MMState.ESTABLISHED, MMState.R_START):
            self.counters["unauthenticated"] += 1
            raise RemoteProtocolError("unprotected Informational after phase 1 (ignored)")
        for n in payloads:
            if isinstance(n, p.N) and 0 < n.notify_type <= _ERROR_NOTIFY_MAX:
                name = notify_name(n.notify_type)
                self._phase1_failed(sa, _PEER_REFUSED.get(
                    n.notify_type, f"the peer refused Main Mode with {name}").format(name=name),
                    name)
                return
        self.counters["unauthenticated"] += 1

    def _on_notify(self, sa: MainMode, n: p.N, now: float) -> None:
        if n.notify_type == NotifyType.R_U_THERE:
            self._send_info(sa, [p.N(NotifyType.R_U_THERE_ACK, ProtocolId.ISAKMP,
                                     sa.icookie + sa.rcookie, n.data)])
        elif n.notify_type == NotifyType.R_U_THERE_ACK:
            pass  # _heard() already reset the DPD counters (RFC 3706 §5.1)
        elif 0 < n.notify_type <= _ERROR_NOTIFY_MAX and any(
                qm.initiator and qm.state is QMState.I_SENT_1 for qm in self._qms.values()):
            name = notify_name(n.notify_type)
            for mid, qm in list(self._qms.items()):
                if qm.initiator and qm.state is QMState.I_SENT_1:
                    self._qm_failed(mid, f"the responder refused Quick Mode with {name}", name)
        else:
            self._events.append(NotifyReceived(n.notify_type, notify_name(n.notify_type),
                                               n.data))

    def _on_delete(self, sa: MainMode, d: p.D, now: float) -> None:
        """RFC 2408 §3.15. For ESP, practice (racoon, strongSwan, Windows) names the deleting
        end's inbound SPI, our outbound; we accept either."""
        if d.protocol_id == ProtocolId.ISAKMP:
            for spi in d.spis:
                for old in [s for s in self._sas if s.icookie + s.rcookie == spi]:
                    self._drop_sa(old)
            if not any(s.state is MMState.ESTABLISHED for s in self._sas):
                self._close("the peer deleted the ISAKMP SA", quiet_children=True)
            return
        if d.protocol_id != ProtocolId.IPSEC_ESP:
            return
        for raw in d.spis:
            spi = int.from_bytes(raw, "big")
            for child in list(self._children.values()):
                if spi in (child.sa.spi_out, child.sa.spi_in):
                    self._remove_child(child, "the peer deleted the SA")

    # -- phase 1 ------------------------------------------------------------------------
    def _start_main_mode(self, now: float, floated: bool) -> MainMode:
        local, remote = self.local, self.remote
        if floated:
            local, remote = (local[0], NAT_T_PORT), (remote[0], NAT_T_PORT)
        sa = MainMode(self.config, True, local, remote, self.random, floated)
        sa.initial_contact = not self._sas and not self._children  # not for a rekey
        self._sas.append(sa)
        first = sa.start_aggressive() if self.config.aggressive else sa.start()
        datagram = (sa.remote, sa.local[1], first)
        self._transmit(datagram)
        self._expect(("mm", sa.icookie), datagram, now, _AWAITING[sa.state],
                     self._mm_gave_up(sa))
        return sa

    def _mm_gave_up(self, sa: MainMode) -> Callable[[str], None]:
        def give_up(why: str) -> None:
            self._phase1_failed(sa, why, None)
        return give_up

    def _phase1_up(self, sa: MainMode, now: float) -> None:
        assert sa.proposal is not None
        rekey = now + sa.lifetime * (1 - self.config.rekey_margin) if sa.initiator else None
        self._p1_times[sa.icookie] = (now + sa.lifetime, rekey)
        self._events.append(Phase1Established(
            sa.icookie, sa.rcookie, sa.proposal.cipher, sa.proposal.hash, sa.proposal.group,
            sa.proposal.auth, sa.lifetime, sa.nat.local_behind_nat, sa.nat.remote_behind_nat,
            sa.peer_id, sa.peer_initial_contact, sa.nat_without_nat_t, sa.peer_ke_unpadded))
        if sa.peer_ke_unpadded:
            self.counters["ke_unpadded"] += 1
        if not sa.initiator and sa.peer_initial_contact:
            # RFC 2407 §4.6.3.3: the peer restarted; what this session held before is gone
            # there (it reached us from the address of a session it no longer knows).
            for old in [s for s in self._sas if s is not sa]:
                self._drop_sa(old)
            for child in list(self._children.values()):
                self._remove_child(child, "the peer restarted (INITIAL-CONTACT)")
        for old in [s for s in self._sas if s is not sa and s.state is MMState.ESTABLISHED]:
            if sa.initiator:  # our phase-1 rekey is done: the old ISAKMP SA goes
                self._send_info(old, [p.D(ProtocolId.ISAKMP, (old.icookie + old.rcookie,))])
                self._drop_sa(old)
        self._keepalive_due = now + self.config.nat_keepalive if sa.nat.local_behind_nat \
            else None
        if sa.initiator and not self._children and not any(
                q.state is QMState.I_SENT_1 for q in self._qms.values()):
            self._start_quick_mode(now)
        for child in self._children.values():
            if child.rekeying and not any(q.state is QMState.I_SENT_1
                                          for q in self._qms.values()):
                self._start_quick_mode(now, replaces=child.sa.spi_in)

    def _phase1_failed(self, sa: MainMode, reason: str, notify: str | None) -> None:
        self._drop_sa(sa)
        self._events.append(IKEFailed(reason, notify))
        if not any(s.state is MMState.ESTABLISHED for s in self._sas) and not self._children:
            self._close(reason, event=False)

    def _drop_sa(self, sa: MainMode) -> None:
        sa.state = MMState.DELETED
        self._sas = [s for s in self._sas if s is not sa]
        self._p1_times.pop(sa.icookie, None)
        self._pending.pop(("mm", sa.icookie), None)
        for mid, qm in list(self._qms.items()):
            if qm.sa is sa:
                self._pending.pop(("qm", mid), None)
                del self._qms[mid]

    def _phase1_lifetimes(self, now: float) -> None:
        for icookie, (expire, rekey) in list(self._p1_times.items()):
            sa = next((s for s in self._sas if s.icookie == icookie), None)
            if sa is None:
                continue
            if now >= expire and sa.state is not MMState.ESTABLISHED:
                self._phase1_failed(sa, f"Main Mode not completed within "
                                        f"{self.config.half_open_timeout:g}s", None)
            elif now >= expire:
                self._send_info(sa, [p.D(ProtocolId.ISAKMP, (sa.icookie + sa.rcookie,))])
                self._drop_sa(sa)
                if not self._sas:
                    self._close("ISAKMP SA lifetime expired", quiet_children=True)
            elif rekey is not None and now >= rekey:
                self._p1_times[icookie] = (expire, None)
                self._start_main_mode(now, floated=sa.floated)

    def _answer_plain_notify(self, sa: MainMode, notify: NotifyType, src: Address) -> None:
        msg = p.encode_plain(sa.icookie, sa.rcookie, ExchangeType.INFORMATIONAL, 0,
                             [p.N(notify, ProtocolId.ISAKMP)])
        self._transmit((src if not sa.initiator else sa.remote, sa.local[1], msg))

    # -- phase 2 ------------------------------------------------------------------------
    def _start_quick_mode(self, now: float, replaces: int | None = None) -> None:
        sa = self._current()
        if sa is None:
            if not any(s.state is not MMState.ESTABLISHED for s in self._sas):
                self._start_main_mode(now, floated=bool(self._sas and self._sas[-1].floated))
            return  # the Quick Mode starts when phase 1 is up (_phase1_up)
        mid = self._new_message_id()
        qm = QuickMode(sa, self.config, True, mid, self._new_spi, self.random)
        self._qms[mid] = qm
        if replaces is not None:
            self._qm_replaces[mid] = replaces
        datagram = (sa.remote, sa.local[1], qm.start())
        self._transmit(datagram)
        self._expect(("qm", mid), datagram, now, "Quick Mode message 1",
                     lambda why: self._qm_failed(mid, why))

    def _qm_failed(self, mid: int, reason: str, notify: str | None = None) -> None:
        self._qms.pop(mid, None)
        self._pending.pop(("qm", mid), None)
        replaced = self._qm_replaces.pop(mid, None)
        if replaced is not None and replaced in self._children:
            self._children[replaced].rekeying = False
        self._events.append(ChildSAFailed(reason, notify))

    def _child_up(self, qm: QuickMode, now: float) -> None:
        assert qm.result is not None
        life = qm.result.lifetime_seconds
        rekey = now + life * (1 - self.config.rekey_margin) if qm.initiator else None
        self._children[qm.spi_in] = _Child(qm.result, now + life, rekey)
        self._qms.pop(qm.message_id, None)  # repeats are answered from the answer cache
        self._events.append(qm.result)
        if qm.peer_ke_unpadded:
            self.counters["ke_unpadded"] += 1
        old = self._qm_replaces.pop(qm.message_id, None)
        if old is not None and old in self._children:
            child = self._children[old]
            self._send_info(qm.sa, [p.D(ProtocolId.IPSEC_ESP, (old.to_bytes(4, "big"),))])
            self._remove_child(child, "rekeyed")

    def _remove_child(self, child: _Child, reason: str) -> None:
        self._children.pop(child.sa.spi_in, None)
        self._events.append(ChildSADeleted(child.sa.spi_in, child.sa.spi_out, reason))

    def _child_lifetimes(self, now: float) -> None:
        for child in list(self._children.values()):
            if now >= child.expire_at:
                sa = self._current()
                if sa is not None:
                    self._send_info(sa, [p.D(ProtocolId.IPSEC_ESP,
                                             (child.sa.spi_in.to_bytes(4, "big"),))])
                self._remove_child(child, "lifetime expired")
            elif child.rekey_at is not None and now >= child.rekey_at and not child.rekeying:
                child.rekeying = True
                self._start_quick_mode(now, replaces=child.sa.spi_in)
        if not self._sas and not self._children and not self.closed:
            self.closed = True  # the ISAKMP SA went earlier; its last IPsec SA now too

    # -- DPD (RFC 3706) -----------------------------------------------------------------
    def _heard(self, sa: MainMode, src: Address, now: float, moved: bool = True) -> None:
        """An authenticated (or at least cookie-matching, in Main Mode) message: the peer is
        alive, and a responder follows it to wherever the NAT maps it now."""
        if not sa.initiator:
            if moved and sa.state is MMState.ESTABLISHED and src != sa.remote:
                self._events.append(RemoteAddressChanged(sa.remote, src))
            sa.remote = src
            self.remote = src
        self._last_heard = now
        self._dpd_misses, self._dpd_outstanding = 0, None
        if self.config.dpd_interval and sa.peer_dpd and sa.state is MMState.ESTABLISHED:
            self._dpd_due = now + self._dpd_idle()

    def _dpd_idle(self) -> float:
        """How long the peer may be silent before we probe. RFC 3706 lets both ends probe;
        the responder waits half as long again so that, with both ends alive, only the
        initiator's R-U-THERE and their ACKs cross the path, not two of each."""
        return self.config.dpd_interval * (1.0 if self.role == "initiator" else 1.5)

    def _dead_peer_detection(self, now: float) -> None:
        if self._dpd_due is None or now < self._dpd_due:
            return
        sa = self._current()
        if sa is None:
            self._dpd_due = None
            return
        if self._dpd_outstanding is not None:
            self._dpd_misses += 1
            if self._dpd_misses >= self.config.dpd_max_failures:
                self._close(f"peer dead: no answer to {self._dpd_misses} R-U-THERE "
                            f"(RFC 3706), silent for {now - self._last_heard:g}s")
                return
        self._dpd_seq = (self._dpd_seq + 1) & 0xFFFFFFFF
        self._dpd_outstanding = self._dpd_seq
        self._send_info(sa, [p.N(NotifyType.R_U_THERE, ProtocolId.ISAKMP,
                                 sa.icookie + sa.rcookie, self._dpd_seq.to_bytes(4, "big"))])
        self._dpd_due = now + self._dpd_idle()

    # -- sending ------------------------------------------------------------------------
    def _current(self) -> MainMode | None:
        for sa in reversed(self._sas):
            if sa.state is MMState.ESTABLISHED:
                return sa
        return None

    def _send_info(self, sa: MainMode, payloads: list[object]) -> None:
        mid = self._new_message_id()
        self._transmit((sa.remote, sa.local[1], build_informational(sa, mid, payloads)))

    def _transmit(self, datagram: Datagram) -> None:
        self.counters["sent"] += 1
        self._out.append(datagram)

    def _reply(self, request: bytes, datagram: Datagram) -> None:
        self._remember(request, datagram)
        self._transmit(datagram)

    def _remember(self, request: bytes, answer: Datagram | None) -> None:
        self._answers[request] = answer
        while len(self._answers) > _ANSWER_CACHE:
            self._answers.popitem(last=False)

    def _expect(self, key: tuple[str, int | bytes], datagram: Datagram, now: float, what: str,
                on_give_up: Callable[[str], None]) -> None:
        cfg = self.config
        self._pending[key] = _Pending(datagram, now + cfg.retransmit_timeout,
                                      cfg.retransmit_timeout, cfg.retransmit_tries, what,
                                      on_give_up)

    def _retransmit(self, key: tuple[str, int | bytes], pending: _Pending, now: float) -> None:
        if pending.tries_left <= 0:
            del self._pending[key]
            dst = pending.datagram[0]
            pending.on_give_up(f"no answer to {pending.what} after {self.config.retransmit_tries}"
                               f" retransmissions: is UDP {dst[1]} to {dst[0]} blocked or the "
                               "peer down?")
            return
        pending.tries_left -= 1
        pending.interval *= self.config.retransmit_backoff
        pending.next_at = now + pending.interval
        self.counters["retransmits"] += 1
        self._transmit(pending.datagram)

    def _close(self, reason: str, event: bool = True, quiet_children: bool = False) -> None:
        """The session ends. Child SAs die with it unless the peer only deleted the ISAKMP
        SA (RFC 2409 §5.7 keeps IPsec SAs independent of it) or its lifetime ran out; then
        they live on until their own lifetime or Delete."""
        if quiet_children and self._children:
            self._sas, self._pending, self._qms = [], {}, {}
            self._dpd_due = self._keepalive_due = None
            if event:
                self._events.append(IKEClosed(reason))
            return
        for child in list(self._children.values()):
            self._remove_child(child, reason)
        self._sas, self._pending, self._qms, self._p1_times = [], {}, {}, {}
        self._dpd_due = self._keepalive_due = None
        self.closed, self.reason = True, reason
        if event:
            self._events.append(IKEClosed(reason))

    def _new_message_id(self) -> int:
        while True:
            mid = int.from_bytes(self.random(4), "big")
            if mid and mid not in self._qms:
                return mid

    def _new_spi(self) -> int:
        return self._spi_allocator()

    def _random_spi(self) -> int:
        while True:
            spi = int.from_bytes(self.random(4), "big")
            if spi >= 256 and spi not in self._children:  # RFC 4303 §2.1: 1-255 reserved
                return spi


# what a sent message awaits its answer as, for the give-up reason
_AWAITING = {MMState.I_SENT_SA: "Main Mode message 1", MMState.I_SENT_KE: "Main Mode message 3",
             MMState.I_SENT_ID: "Main Mode message 5",
             MMState.I_SENT_AM1: "Aggressive Mode message 1",
             MMState.R_SENT_AM2: "Aggressive Mode message 2"}
_PHASE1_EXCHANGES = (ExchangeType.IDENTITY_PROTECTION, ExchangeType.AGGRESSIVE)
_PEER_REFUSED = {
    NotifyType.NO_PROPOSAL_CHOSEN: "the responder accepted none of our phase-1 proposals "
                                   "({name})",
    NotifyType.INVALID_HASH_INFORMATION: "the responder could not verify our identity "
                                         "({name}): the pre-shared keys differ",
    NotifyType.AUTHENTICATION_FAILED: "the responder could not verify our identity ({name}): "
                                      "wrong pre-shared key or certificate",
    NotifyType.INVALID_ID_INFORMATION: "the responder refused our identity ({name})",
}
_Exchange = Callable[[IKESession, MainMode, p.Header, bytes, bytes, Address, float], None]
_EXCHANGES: dict[int, _Exchange] = {
    ExchangeType.IDENTITY_PROTECTION: IKESession._on_main_mode,  # RFC 2409 §5
    ExchangeType.AGGRESSIVE: IKESession._on_main_mode,  # RFC 2409 §5.4, same SA object
    ExchangeType.QUICK_MODE: IKESession._on_quick_mode,  # RFC 2409 §5.5
    ExchangeType.INFORMATIONAL: IKESession._on_informational,  # RFC 2409 §5.7
}
