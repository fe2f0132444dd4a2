"""The sockets of an L2TP/IPsec endpoint behind one file descriptor, for the generic pump.

L2TP/IPsec needs IP protocol 50 (ESP) through a raw socket and UDP 500 (IKE), 4500 (NAT-T:
IKE behind the non-ESP marker, ESP-in-UDP per RFC 3948, NAT keepalives) and, on the server,
1701 (only so that L2TP sent in clear reaches the stack, which drops and counts it). The pump
reads one `PacketSocket`; `MultiSocket` is one: `fileno()` is an epoll descriptor
(`select.epoll`, level-triggered) that is readable while any of the sockets is, so the pump's
single `add_reader` works unchanged.

Addresses are the transport tuples of tunnels/stacks/l2tp_ipsec.py:
`("esp", address, 0, 0)` for ESP, `("udp", address, peer_port, local_port)` for UDP. Bytes
are moved as they are: the non-ESP marker and keepalives are the stack's (it adds and strips
them), the IP header of raw ESP is stripped here on receipt (as rawgre.py does) and built by
the kernel on send. No kernel ESP is used: UDP 4500 is a plain UDP socket (no UDP_ENCAP), so
ESP-in-UDP arrives as UDP payload.

Every socket is bound to one address (the one peers reach, or the client's own), so replies
leave from where the peer sent to. A send or receive error is counted on its socket and
affects one datagram, never the socket shared by every peer (design.md, "PPTP through NAT").
"""

from __future__ import annotations

import errno
import select
import socket
from dataclasses import dataclass, field

from tunnels.runtime.rawgre import strip_ip_header

IPPROTO_ESP = 50
IKE_PORT, NAT_T_PORT, L2TP_PORT = 500, 4500, 1701
Transport = tuple[str, str, int, int]


@dataclass
class _Member:
    name: str  # "esp", "udp500", "udp4500", "udp1701"
    sock: socket.socket
    port: int  # 0 for the raw ESP socket
    counters: dict[str, int] = field(default_factory=lambda: {
        "received": 0, "sent": 0, "send_errors": 0, "receive_errors": 0, "bad_ip_header": 0})
    last_error: str = ""


class MultiSocket:
    """Raw ESP + UDP 500/4500 (+1701 with `l2tp_port=True`), non-blocking, one epoll fd."""

    def __init__(self, bind_address: str, *, udp_ports: tuple[int, ...] = (IKE_PORT,
                                                                          NAT_T_PORT),
                 l2tp_port: bool = False, esp: bool = True, rcvbuf: int = 4 << 20):
        self.bind_address = bind_address
        self._members: dict[int, _Member] = {}  # by fd
        self._by_port: dict[int, _Member] = {}
        self._esp: _Member | None = None
        self._ready: list[int] = []
        self.counters = {"no_socket": 0}
        self._epoll = select.epoll()
        ports = list(udp_ports) + ([L2TP_PORT] if l2tp_port else [])
        try:
            if esp:
                self._esp = self._add("esp", socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                           IPPROTO_ESP), 0, rcvbuf)
            for port in ports:
                self._by_port[port] = self._add(f"udp{port}", socket.socket(
                    socket.AF_INET, socket.SOCK_DGRAM), port, rcvbuf)
        except OSError:
            self.close()
            raise

    def _add(self, name: str, sock: socket.socket, port: int, rcvbuf: int) -> _Member:
        try:
            sock.bind((self.bind_address, port))
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot bind {name} on {self.bind_address}: "
                                     f"{exc.strerror or exc}") from exc
        member = _Member(name, sock, port)
        self._members[sock.fileno()] = member
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        return member

    # -- the pump's PacketSocket ----------------------------------------------------------
    def fileno(self) -> int:
        return self._epoll.fileno()

    def receive(self) -> tuple[Transport, bytes] | None:
        """The next datagram of any socket, or None when none has anything now.

        One epoll_wait per wake-up of the pump: the sockets found ready are read in turn until
        each is empty, then None ends the pump's batch without polling again. Whatever
        arrived meanwhile keeps the epoll descriptor readable, so the event loop calls the
        pump again at once (level-triggered)."""
        ready = self._ready
        if not ready:
            while True:
                try:
                    fds = [fd for fd, _ in self._epoll.poll(0)]
                    break
                except InterruptedError:
                    continue
            if not fds:
                return None
            if len(fds) > 1:
                # taken from the end: UDP (IKE) before raw ESP, so a Quick Mode's last
                # message is handled before the first ESP that follows it on another
                # socket (else that ESP meets no SA yet and is lost for a second)
                members = self._members
                fds.sort(key=lambda fd: fd in members and members[fd].port != 0)
            self._ready = ready = fds
        while ready:
            member = self._members.get(ready[-1])
            got = self._read(member) if member is not None else None
            if got is not None:
                return got
            ready.pop()  # that socket is empty now: the next ready one
        return None

    def _read(self, member: _Member) -> tuple[Transport, bytes] | None:
        recvfrom, counters = member.sock.recvfrom, member.counters
        while True:
            try:
                data, (src, sport) = recvfrom(65535)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as exc:  # e.g. ECONNREFUSED from an earlier send's ICMP
                self._failed(member, "receive_errors", exc)
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    return None
                continue
            if member.port == 0:
                payload = strip_ip_header(data)
                if payload is None:
                    counters["bad_ip_header"] += 1
                    continue
                counters["received"] += 1
                return ("esp", src, 0, 0), payload
            counters["received"] += 1
            return ("udp", src, sport, member.port), data

    def send(self, dst: Transport, data: bytes) -> None:
        """One datagram; an error is counted on its socket and affects this datagram only."""
        kind, address, peer_port, local_port = dst
        member = self._esp if kind == "esp" else self._by_port.get(local_port)
        if member is None:
            self.counters["no_socket"] += 1
            return
        try:
            member.sock.sendto(data, (address, peer_port if member.port else 0))
            member.counters["sent"] += 1
        except OSError as exc:
            self._failed(member, "send_errors", exc)

    def _failed(self, member: _Member, counter: str, exc: OSError) -> None:
        member.counters[counter] += 1
        member.last_error = f"{counter.replace('_', ' ')[:-1]}: {exc.strerror or exc}"

    # -- status and teardown --------------------------------------------------------------
    def status(self) -> dict:
        """Counters and the last error per socket, for the daemon's status file."""
        return {m.name: dict(m.counters) | {"last_error": m.last_error}
                for m in self._members.values()} | {"no_socket": self.counters["no_socket"]}

    @property
    def last_error(self) -> str:
        return next((m.last_error for m in self._members.values() if m.last_error), "")

    def close(self) -> None:
        for member in self._members.values():
            member.sock.close()
        self._members.clear()
        self._by_port.clear()
        self._esp = None
        self._epoll.close()
