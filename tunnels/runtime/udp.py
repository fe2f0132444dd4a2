"""UDP for L2TP (RFC 2661 §8.1: port 1701 on both sides), shaped like the raw GRE socket.

The pump needs `fileno()`, `receive() -> ((address, port), bytes) | None` and
`send((address, port), bytes)`. One socket per daemon, bound to one address (the one clients
reach, or the client's own carrier address) so datagrams leave from it. A send or receive
error (an ICMP port-unreachable reported on the next call, a full buffer) is counted and
affects one datagram, never the socket shared by every tunnel.
"""

from __future__ import annotations

import errno
import socket

L2TP_PORT = 1701


class UDPSocket:
    """`device`: bound to that interface too (SO_BINDTODEVICE: DHCP's broadcasts leave there
    and only its datagrams come in); `broadcast`: may send to 255.255.255.255."""

    def __init__(self, bind_address: str, port: int = L2TP_PORT, rcvbuf: int = 4 << 20,
                 device: str | None = None, broadcast: bool = False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if device is not None:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                     device.encode() + b"\0")
            if broadcast:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            self.sock.bind((bind_address, port))
            self.sock.setblocking(False)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        except OSError:
            self.sock.close()
            raise
        self.bind_address, self.port = self.sock.getsockname()
        self.counters = {"received": 0, "sent": 0, "send_errors": 0, "receive_errors": 0}
        self.last_error = ""

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> tuple[tuple[str, int], bytes] | None:
        while True:
            try:
                data, src = self.sock.recvfrom(65535)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as exc:  # e.g. ECONNREFUSED from an earlier send's ICMP
                self._failed("receive_errors", exc)
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    return None
                continue
            self.counters["received"] += 1
            return src, data

    def send(self, dst: tuple[str, int], data: bytes) -> None:
        try:
            self.sock.sendto(data, dst)
            self.counters["sent"] += 1
        except OSError as exc:
            self._failed("send_errors", exc)

    def _failed(self, counter: str, exc: OSError) -> None:
        self.counters[counter] += 1
        self.last_error = f"{counter.replace('_', ' ')[:-1]}: {exc.strerror or exc}"

    def close(self) -> None:
        self.sock.close()


def local_address_toward(server: str, port: int = L2TP_PORT) -> str:
    """The address the kernel would send from to reach `server` (a connected UDP socket
    sends nothing): the client binds its L2TP socket there."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((server, port))
        return probe.getsockname()[0]
    finally:
        probe.close()
