"""A sans-I/O pool of VPN client addresses leased from a DHCP server (RFC 2131), the way
Windows RRAS does it: blocks of addresses, each leased by its own client identity, released
when unused.

Each address is one DHCP client: option 61 is `b"\\0" + f"{server_name}-{n}".encode()` (type 0,
RFC 2132 §9.14), option 12 the same name, `chaddr` the intranet interface's MAC. Identity
numbers are reused lowest first once their lease is gone, so a server that remembers clients
gives the same addresses back.

    source = DHCPAddressSource(mac, "vpnsrv", block=10, low_water=2, release_after=300,
                               reserve_server_address=True)
    source.acquire(10, now)          # DISCOVER -> OFFER -> REQUEST -> ACK per identity
    for dst, data in source.datagrams_to_send(): ...      # dst is (address, port)
    source.receive_datagram(src, data, now)               # never raises for the content
    source.get_timer() / source.handle_timer(now)         # the one deadline
    while (event := source.next_event()) is not None: ...
    address = source.take()          # a leased free address, or None (counted "take_failed")
    source.give_back(address)

Behaviour
- Acquisition: identities are started `parallel` at a time (default 1: dnsmasq offers the
  same free address to every DISCOVER until a REQUEST commits it, so identities started
  together collide and are NAKed; a server that reserves offered addresses can take more).
  DISCOVERs are broadcast (to 255.255.255.255:67, or to `server` when given) with the
  broadcast flag, since the replies go to an address this host does not have yet; the first
  OFFER is REQUESTed (§4.4.1). Retransmission after `timeout` s, doubling up to
  `max_timeout` (4, 8, 16, 16 s), `tries` transmissions per message; then the identity is
  given up with `AcquireFailed`, and so are the identities queued behind it when it got no
  OFFER at all (no server, or an exhausted range: dnsmasq then stays silent). A DHCPNAK to
  the REQUEST starts that identity again with a DISCOVER (at most `tries` times).
- Pool policy (looked at after every input): when free + acquiring < `low_water`, another
  `block` is acquired; free addresses beyond `block + low_water` that stayed unused
  `release_after` s are released (DHCPRELEASE unicast to the server id, §4.4.6), the longest
  unused first. `release_all(now)` releases everything (shutdown). The policy starts with the
  first `acquire()`; after an identity was given up, the next automatic block waits
  `retry_after` s. `take()`/`give_back()` make the timer due at once, so the policy runs at
  the next `handle_timer()` with the real time.
- With `reserve_server_address=True` the first address bound (and, after it is lost, the next
  one) is the server's own (`.server_address`, `AddressLeased.for_server`); it is never handed
  out, and `acquire()` asks for one more while the server has none.
- Renewal (§4.4.5): at T1 a REQUEST unicast to the server id, retransmitted at half the time
  left to T2 (at least 60 s); at T2 the REQUEST is broadcast (rebinding) until the lease
  expires. By default it is written as an INIT-REBOOT request (ciaddr 0, option 50, broadcast
  flag): an RFC RENEWING request carries ciaddr, and the server answers it unicast to ciaddr,
  an address that is not this host's but a VPN client's (its ACK would be routed into the
  tunnel). `renew_with_ciaddr=True` sends the RFC form for hosts that receive at the address.
  A DHCPNAK or the expiry drops the address with `AddressLost` (`in_use` tells the server to
  hang that call up).

Events: `AddressLeased`, `AddressRenewed`, `AddressReleased`, `AddressLost`, `AcquireFailed`.
Counters (`counters`, a Counter): discovers, offers, requests, acks, naks, releases, renewals,
rebinds, retransmissions, acquire_failed, expired, lost, take_failed, malformed_dropped (not a
DHCP message), unmatched (not for one of our transactions), out_of_state, invalid_reply (a
reply missing what RFC 2131 table 3 requires).
"""

from __future__ import annotations

import heapq
import math
import os
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from tunnels.dhcp.messages import (
    BROADCAST_FLAG,
    CLIENT_PORT,
    SERVER_PORT,
    ZERO,
    DHCPMessage,
    MessageType,
    Op,
    Opt,
)
from tunnels.errors import LocalProtocolError, RemoteProtocolError

Address = tuple[str, int]
BROADCAST: Address = ("255.255.255.255", SERVER_PORT)
INFINITE = 0xFFFFFFFF  # RFC 2132 §9.2: an infinite lease
MIN_RENEW_RETRY = 60.0  # RFC 2131 §4.4.5: "down to a minimum of 60 seconds"
PARAMETERS = (Opt.SUBNET_MASK, Opt.ROUTER, Opt.DNS, Opt.LEASE_TIME, Opt.RENEWAL_TIME,
              Opt.REBINDING_TIME)
__all__ = ["BROADCAST", "CLIENT_PORT", "AcquireFailed", "AddressLeased", "AddressLost",
           "AddressReleased", "AddressRenewed", "DHCPAddressSource", "Event"]


# events -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AddressLeased:
    address: str
    client_id: bytes
    server_id: str
    expires: float
    for_server: bool = False  # the server's own address (reserve_server_address)


@dataclass(frozen=True, slots=True)
class AddressRenewed:
    address: str
    expires: float
    rebound: bool  # answered in REBINDING (possibly by another server)


@dataclass(frozen=True, slots=True)
class AddressReleased:
    address: str
    reason: str  # "unused" or "shutdown"


@dataclass(frozen=True, slots=True)
class AddressLost:
    """A NAK to a renewal or the expiry; `in_use`: a call has it, hang that call up."""

    address: str
    reason: str
    in_use: bool
    for_server: bool


@dataclass(frozen=True, slots=True)
class AcquireFailed:
    client_id: bytes
    reason: str


Event = AddressLeased | AddressRenewed | AddressReleased | AddressLost | AcquireFailed


# the per-identity automaton (RFC 2131 §4.4, figure 5) ---------------------------------------
class State(Enum):
    SELECTING = "selecting"
    REQUESTING = "requesting"
    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"


class Input(Enum):
    OFFER = "offer"
    ACK = "ack"
    NAK = "nak"
    TIMEOUT = "timeout"  # the retransmission timer
    T1 = "t1"
    T2 = "t2"
    EXPIRY = "expiry"


_S, _I = State, Input
# (state, input) -> (action, next state); next None: the lease is gone. Figure 5 of RFC 2131.
_TABLE: Mapping[tuple[State, Input], tuple[str, State | None]] = {
    (_S.SELECTING, _I.OFFER): ("request", _S.REQUESTING),  # §4.4.1: the first offer
    (_S.SELECTING, _I.TIMEOUT): ("retransmit", _S.SELECTING),  # §4.1 back-off
    (_S.REQUESTING, _I.ACK): ("bind", _S.BOUND),
    (_S.REQUESTING, _I.NAK): ("restart", _S.SELECTING),  # §4.4.1: NAK -> INIT
    (_S.REQUESTING, _I.TIMEOUT): ("retransmit", _S.REQUESTING),
    (_S.BOUND, _I.T1): ("renew", _S.RENEWING),  # §4.4.5
    (_S.RENEWING, _I.ACK): ("extend", _S.BOUND),
    (_S.RENEWING, _I.NAK): ("lose", None),
    (_S.RENEWING, _I.TIMEOUT): ("retransmit_renewal", _S.RENEWING),
    (_S.RENEWING, _I.T2): ("rebind", _S.REBINDING),
    (_S.REBINDING, _I.ACK): ("extend_rebound", _S.BOUND),
    (_S.REBINDING, _I.NAK): ("lose", None),
    (_S.REBINDING, _I.TIMEOUT): ("retransmit_renewal", _S.REBINDING),
    (_S.REBINDING, _I.EXPIRY): ("expire", None),
}
_REPLIES = {MessageType.DHCPOFFER: Input.OFFER, MessageType.DHCPACK: Input.ACK,
            MessageType.DHCPNAK: Input.NAK}
_HELD = (State.BOUND, State.RENEWING, State.REBINDING)


class OutOfState(RemoteProtocolError):
    """A reply with no transition in the lease's state (a late or second OFFER, ...)."""


class InvalidReply(RemoteProtocolError):
    """A reply that decodes but lacks what RFC 2131 table 3 requires of it."""


@dataclass(slots=True)
class _Lease:
    identity: int
    client_id: bytes
    state: State = State.SELECTING
    xid: int = 0
    address: str = ZERO
    server_id: str = ""
    started: float = 0.0  # of the transaction (the `secs` field)
    sent: int = 0  # transmissions of the current message
    restarts: int = 0  # DHCPNAKs to our REQUEST while acquiring
    deadline: float | None = None
    t1: float = math.inf
    t2: float = math.inf
    expiry: float = math.inf
    in_use: bool = False
    for_server: bool = False
    idle_since: float = 0.0


class DHCPAddressSource:
    """`mac`: the intranet interface's hardware address (bytes or "aa:bb:.."); `server_name`
    names the identities; `server`: a DHCP server's address to send to instead of broadcast."""

    def __init__(self, mac: bytes | str, server_name: str, *, block: int = 10,
                 low_water: int = 2, release_after: float = 300.0,
                 reserve_server_address: bool = False, server: str | None = None,
                 timeout: float = 4.0, max_timeout: float = 16.0, tries: int = 4,
                 renew_with_ciaddr: bool = False, retry_after: float = 60.0,
                 parallel: int = 1,
                 random: Callable[[int], bytes] = os.urandom):
        self.mac = bytes.fromhex(mac.replace(":", "")) if isinstance(mac, str) else bytes(mac)
        if not 1 <= len(self.mac) <= 16 or not server_name:
            raise LocalProtocolError("a hardware address of 1 to 16 bytes and a server name",
                                     None)
        if (block < 1 or low_water < 0 or tries < 1 or timeout <= 0 or release_after < 0
                or parallel < 1):
            raise LocalProtocolError("block >= 1, low_water >= 0, tries >= 1, timeout > 0, "
                                     "release_after >= 0, parallel >= 1", None)
        self.server_name, self.block, self.low_water = server_name, block, low_water
        self.release_after, self.reserve_server_address = release_after, reserve_server_address
        self.destination: Address = (server, SERVER_PORT) if server else BROADCAST
        self.timeout, self.max_timeout, self.tries = timeout, max(max_timeout, timeout), tries
        self.renew_with_ciaddr, self.random = renew_with_ciaddr, random
        self.retry_after, self.parallel = retry_after, parallel
        self._queue: deque[_Lease] = deque()  # identities waiting for their DISCOVER
        self._refill_not_before = -math.inf
        self.counters: Counter[str] = Counter()
        self._leases: dict[int, _Lease] = {}
        self._by_xid: dict[int, _Lease] = {}
        self._free_identities: list[int] = []
        self._next_identity = 1
        self._outbox: list[tuple[Address, bytes]] = []
        self._events: deque[Event] = deque()
        self._started = False
        self._policy_due: float | None = None
        self._clock = 0.0

    # API ------------------------------------------------------------------------------------
    @property
    def server_address(self) -> str | None:
        return next((x.address for x in self._leases.values() if x.for_server), None)

    def free_count(self) -> int:
        return sum(1 for x in self._leases.values() if self._is_free(x))

    def acquiring_count(self) -> int:
        return sum(1 for x in self._leases.values() if x.state not in _HELD)

    def in_use(self) -> list[str]:
        return sorted(x.address for x in self._leases.values() if x.in_use)

    def acquire(self, count: int, now: float) -> None:
        """Lease `count` more addresses (one more for the server while it has none)."""
        self._clock, self._started = now, True
        if self.reserve_server_address and self.server_address is None and not any(
                x.state not in _HELD for x in self._leases.values()):
            count += 1
        for _ in range(count):
            identity = self._new_identity()
            name = f"{self.server_name}-{identity}".encode()
            self._queue.append(_Lease(identity, b"\0" + name))
            self._leases[identity] = self._queue[-1]
        self._start_queued(now)

    def take(self) -> str | None:
        """A leased, unused address, now in use; None when there is none (counted)."""
        free = [x for x in self._leases.values() if self._is_free(x)]
        if not free:
            self.counters["take_failed"] += 1
            self._policy_due = self._clock
            return None
        # the most recently given back first, so the surplus ages and is released
        lease = max(free, key=lambda x: (x.state is State.BOUND, x.idle_since, -x.identity))
        lease.in_use = True
        self._policy_due = self._clock
        return lease.address

    def give_back(self, address: str, now: float | None = None) -> None:
        lease = next((x for x in self._leases.values() if x.address == address and x.in_use
                      and x.state in _HELD), None)
        if lease is None:
            self.counters["give_back_unknown"] += 1  # lost (NAK, expiry) while in use
            return
        lease.in_use, lease.idle_since = False, self._clock if now is None else now
        self._policy_due = lease.idle_since

    def release_all(self, now: float) -> None:
        """Shutdown: DHCPRELEASE every address, including one only REQUESTed so far."""
        self._clock, self._started = now, False
        for lease in list(self._leases.values()):
            if lease.state is not State.SELECTING:
                self._release(lease, now, "shutdown")
            else:
                self._forget(lease)

    def datagrams_to_send(self) -> list[tuple[Address, bytes]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [x.deadline for x in self._leases.values() if x.deadline is not None]
        if self._policy_due is not None:
            deadlines.append(self._policy_due)
        release_at = self._release_due()
        if release_at is not None:
            deadlines.append(release_at)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        self._clock, self._policy_due = now, None
        for lease in [x for x in self._leases.values()
                      if x.deadline is not None and x.deadline <= now]:
            if self._leases.get(lease.identity) is lease:  # not given up by another's step
                self._step(lease, self._timer_input(lease, now), now, None)
        self._apply_policy(now)

    def receive_datagram(self, src: Address, data: bytes, now: float) -> None:
        """A datagram to port 68; never raises for its content (drops are counted)."""
        self._clock = now
        try:
            message = DHCPMessage.decode(data)
        except RemoteProtocolError:
            self.counters["malformed_dropped"] += 1
            return
        lease = self._by_xid.get(message.xid)
        if (message.op is not Op.BOOTREPLY or message.message_type not in _REPLIES
                or lease is None or message.chaddr != self.mac
                or message.client_id not in (None, lease.client_id)):
            self.counters["unmatched"] += 1
            return
        try:
            self._step(lease, _REPLIES[message.message_type], now, message)
        except OutOfState:
            self.counters["out_of_state"] += 1
        except InvalidReply:
            self.counters["invalid_reply"] += 1
        self._apply_policy(now)

    def status(self) -> dict[str, object]:
        """For a status file: the addresses by state and the counters."""
        held = [x for x in self._leases.values() if x.state in _HELD]
        return {"server_address": self.server_address, "in_use": self.in_use(),
                "free": sorted(x.address for x in held if self._is_free(x)),
                "acquiring": self.acquiring_count(), "counters": dict(self.counters)}

    # the automaton --------------------------------------------------------------------------
    def _step(self, lease: _Lease, event: Input, now: float, message: DHCPMessage | None) -> None:
        entry = _TABLE.get((lease.state, event))
        if entry is None:
            raise OutOfState(f"{event.value} in {lease.state.value}")
        action, next_state = entry
        handler: Callable[[_Lease, float, DHCPMessage | None], None] = getattr(
            self, f"_on_{action}")
        previous = lease.state
        if next_state is not None:
            lease.state = next_state
        try:
            handler(lease, now, message)
        except InvalidReply:
            lease.state = previous
            raise

    def _timer_input(self, lease: _Lease, now: float) -> Input:
        if lease.state is State.BOUND:
            return Input.T1
        if lease.state is State.RENEWING and now >= lease.t2:
            return Input.T2
        if lease.state is State.REBINDING and now >= lease.expiry:
            return Input.EXPIRY
        return Input.TIMEOUT

    def _on_request(self, lease: _Lease, now: float, offer: DHCPMessage | None) -> None:
        assert offer is not None
        if offer.yiaddr == ZERO or offer.server_id is None:
            raise InvalidReply("DHCPOFFER without yiaddr or server identifier")
        self.counters["offers"] += 1
        lease.address, lease.server_id, lease.sent = offer.yiaddr, offer.server_id, 0
        self._send(lease, MessageType.DHCPREQUEST, now)

    def _on_retransmit(self, lease: _Lease, now: float, _: DHCPMessage | None) -> None:
        if lease.sent < self.tries:
            self.counters["retransmissions"] += 1
            kind = (MessageType.DHCPDISCOVER if lease.state is State.SELECTING
                    else MessageType.DHCPREQUEST)
            self._send(lease, kind, now)
            return
        what = ("no DHCPOFFER" if lease.state is State.SELECTING
                else f"no DHCPACK from {lease.server_id} for {lease.address}")
        self._fail(lease, f"{what} after {lease.sent} transmissions to "
                          f"{self.destination[0]}:{self.destination[1]}")

    def _on_bind(self, lease: _Lease, now: float, ack: DHCPMessage | None) -> None:
        assert ack is not None
        self._take_times(lease, ack, now)
        self.counters["acks"] += 1
        lease.idle_since = now
        if self.reserve_server_address and self.server_address is None:
            lease.for_server = True
        self._events.append(AddressLeased(lease.address, lease.client_id, lease.server_id,
                                          lease.expiry, lease.for_server))

    def _on_restart(self, lease: _Lease, now: float, nak: DHCPMessage | None) -> None:
        self.counters["naks"] += 1
        lease.restarts += 1
        if lease.restarts >= self.tries:
            self._fail(lease, f"DHCPNAK to the REQUEST for {lease.address} {lease.restarts} "
                              f"times{_said(nak)}")
            return
        self._start_transaction(lease, now)
        self._send(lease, MessageType.DHCPDISCOVER, now)

    def _on_renew(self, lease: _Lease, now: float, _: DHCPMessage | None) -> None:
        self.counters["renewals"] += 1
        self._start_transaction(lease, now)
        self._on_retransmit_renewal(lease, now, None)

    def _on_rebind(self, lease: _Lease, now: float, _: DHCPMessage | None) -> None:
        self.counters["rebinds"] += 1
        self._start_transaction(lease, now)
        self._on_retransmit_renewal(lease, now, None)

    def _on_retransmit_renewal(self, lease: _Lease, now: float, _: DHCPMessage | None) -> None:
        end = lease.t2 if lease.state is State.RENEWING else lease.expiry
        if lease.sent:
            self.counters["retransmissions"] += 1
        self._send(lease, MessageType.DHCPREQUEST, now,
                   min(end, now + max((end - now) / 2, MIN_RENEW_RETRY)))

    def _on_extend(self, lease: _Lease, now: float, ack: DHCPMessage | None,
                   rebound: bool = False) -> None:
        assert ack is not None
        self._take_times(lease, ack, now)
        self.counters["acks"] += 1
        self._events.append(AddressRenewed(lease.address, lease.expiry, rebound))

    def _on_extend_rebound(self, lease: _Lease, now: float, ack: DHCPMessage | None) -> None:
        self._on_extend(lease, now, ack, rebound=True)

    def _on_lose(self, lease: _Lease, now: float, nak: DHCPMessage | None) -> None:
        self.counters["naks"] += 1
        self._lost(lease, f"DHCPNAK to the renewal{_said(nak)}")

    def _on_expire(self, lease: _Lease, now: float, _: DHCPMessage | None) -> None:
        self.counters["expired"] += 1
        self._lost(lease, "the lease expired: no DHCPACK to renewal or rebinding")

    # helpers --------------------------------------------------------------------------------
    def _is_free(self, lease: _Lease) -> bool:
        return lease.state in _HELD and not lease.in_use and not lease.for_server

    def _new_identity(self) -> int:
        if self._free_identities:
            return heapq.heappop(self._free_identities)
        self._next_identity += 1
        return self._next_identity - 1

    def _start_transaction(self, lease: _Lease, now: float) -> None:
        self._by_xid.pop(lease.xid, None)
        xid = int.from_bytes(self.random(4), "big")
        while xid in self._by_xid:
            xid = (xid + 1) & 0xFFFFFFFF
        lease.xid, lease.started, lease.sent = xid, now, 0
        self._by_xid[xid] = lease

    def _send(self, lease: _Lease, kind: MessageType, now: float,
              deadline: float | None = None) -> None:
        message, dst = self._message(lease, kind, now)
        self._outbox.append((dst, message.encode()))
        self.counters[{MessageType.DHCPDISCOVER: "discovers", MessageType.DHCPREQUEST:
                       "requests", MessageType.DHCPRELEASE: "releases"}[kind]] += 1
        lease.sent += 1
        if deadline is None:
            deadline = now + min(self.timeout * 2 ** (lease.sent - 1), self.max_timeout)
        lease.deadline = deadline

    def _message(self, lease: _Lease, kind: MessageType, now: float,
                 ) -> tuple[DHCPMessage, Address]:
        """What each state sends (RFC 2131 table 5) and where."""
        options: dict[int, object] = {}
        flags, ciaddr, dst = BROADCAST_FLAG, ZERO, self.destination
        if kind is MessageType.DHCPRELEASE:  # §4.4.6: ciaddr, server id, unicast
            flags, ciaddr = 0, lease.address
            options[Opt.SERVER_ID] = lease.server_id
            dst = (lease.server_id, SERVER_PORT)
        elif lease.state is State.REQUESTING:  # §4.3.2 SELECTING: both options
            options[Opt.REQUESTED_ADDRESS] = lease.address
            options[Opt.SERVER_ID] = lease.server_id
        elif lease.state in (State.RENEWING, State.REBINDING):
            if self.renew_with_ciaddr:
                flags, ciaddr = 0, lease.address
            else:  # the INIT-REBOOT form: the ACK comes back broadcast (module docstring)
                options[Opt.REQUESTED_ADDRESS] = lease.address
            if lease.state is State.RENEWING:
                dst = (lease.server_id, SERVER_PORT)
        options[Opt.CLIENT_ID] = lease.client_id
        if kind is not MessageType.DHCPRELEASE:
            options[Opt.HOST_NAME] = lease.client_id[1:].decode()
            options[Opt.PARAMETER_REQUEST_LIST] = tuple(PARAMETERS)
        secs = min(int(now - lease.started), 0xFFFF) if kind is not MessageType.DHCPRELEASE else 0
        message = DHCPMessage(Op.BOOTREQUEST, kind, lease.xid, self.mac, ciaddr=ciaddr,
                              flags=flags, secs=max(secs, 0), options=options)
        return message, dst

    def _take_times(self, lease: _Lease, ack: DHCPMessage, now: float) -> None:
        """Lease time, T1 and T2 from an ACK (§4.4.5 defaults: 0.5 and 0.875 of the lease)."""
        if ack.lease_time is None:
            raise InvalidReply("DHCPACK without a lease time (RFC 2131 table 3: MUST)")
        if ack.yiaddr != lease.address:
            raise InvalidReply(f"DHCPACK for {ack.yiaddr}, we asked for {lease.address}")
        if ack.lease_time == INFINITE:
            lease.t1 = lease.t2 = lease.expiry = math.inf
            lease.deadline = None
        else:
            length = float(ack.lease_time)
            t1 = ack.renewal_time if ack.renewal_time is not None else length * 0.5
            t2 = ack.rebinding_time if ack.rebinding_time is not None else length * 0.875
            if not 0 < t1 < t2 <= length:
                t1, t2 = length * 0.5, length * 0.875
            lease.t1, lease.t2, lease.expiry = now + t1, now + t2, now + length
            lease.deadline = lease.t1
        if ack.server_id is not None:
            lease.server_id = ack.server_id
        lease.sent = 0
        self._by_xid.pop(lease.xid, None)

    def _fail(self, lease: _Lease, reason: str) -> None:
        # nobody offers: the identities queued behind would wait the same in vain (and an
        # exhausted range would take tries x timeout for each of them)
        given_up = [lease, *self._queue] if lease.state is State.SELECTING else [lease]
        self._refill_not_before = self._clock + self.retry_after
        for each in given_up:
            self.counters["acquire_failed"] += 1
            self._forget(each)
            self._events.append(AcquireFailed(each.client_id, reason))

    def _start_queued(self, now: float) -> None:
        """DISCOVER for queued identities while fewer than `parallel` are in flight: dnsmasq
        offers the same free address to every DISCOVER until a REQUEST commits it, so
        identities acquired together would collide and be NAKed."""
        flying = self.acquiring_count() - len(self._queue)
        while self._queue and flying < self.parallel:
            lease = self._queue.popleft()
            self._start_transaction(lease, now)
            self._send(lease, MessageType.DHCPDISCOVER, now)
            flying += 1

    def _lost(self, lease: _Lease, reason: str) -> None:
        self.counters["lost"] += 1
        self._forget(lease)
        self._events.append(AddressLost(lease.address, reason, lease.in_use, lease.for_server))

    def _release(self, lease: _Lease, now: float, reason: str) -> None:
        self._send(lease, MessageType.DHCPRELEASE, now)
        self._forget(lease)
        self._events.append(AddressReleased(lease.address, reason))

    def _forget(self, lease: _Lease) -> None:
        if lease in self._queue:
            self._queue.remove(lease)
        self._by_xid.pop(lease.xid, None)
        del self._leases[lease.identity]
        heapq.heappush(self._free_identities, lease.identity)

    # pool policy ----------------------------------------------------------------------------
    def _surplus(self) -> list[_Lease]:
        """Free leases beyond block + low_water, the longest unused first."""
        free = sorted((x for x in self._leases.values() if self._is_free(x)),
                      key=lambda x: (x.idle_since, x.identity))
        return free[:max(len(free) - self.block - self.low_water, 0)]

    def _release_due(self) -> float | None:
        surplus = self._surplus()
        return surplus[0].idle_since + self.release_after if surplus else None

    def _apply_policy(self, now: float) -> None:
        if not self._started:
            return
        self._start_queued(now)
        for lease in self._surplus():
            if lease.idle_since + self.release_after <= now:
                self._release(lease, now, "unused")
        if self.free_count() + self.acquiring_count() >= self.low_water:
            return
        if now >= self._refill_not_before:
            self.acquire(self.block, now)
        else:  # a block just failed: the next try waits (a dead server is not hammered)
            self._policy_due = self._refill_not_before


def _said(message: DHCPMessage | None) -> str:
    if message is None:
        return ""
    text = message.options.get(Opt.MESSAGE)
    server = message.server_id or "a server"
    return f" from {server}" + (f": {text}" if text else "")
