"""IP protocol 47 through a raw socket: GRE without kernel GRE devices (design.md principle 6).

One socket per daemon, shared by all its calls. It is bound to the address the control
connection used, so our GRE leaves from the address the peer reached (RFC 2637; an NLB cluster
answering from its dedicated address breaks exactly this), and the kernel builds the IP header
on send. Reads give the whole IP packet; the IP header is stripped here.

A socket error (an ICMP-induced error, a full buffer, an unreachable peer) affects one packet,
is counted, and never closes the socket: pptpd tore down every call sharing its GRE socket on
one call's error (design.md, "PPTP through Linux NAT"); we do not.
"""

from __future__ import annotations

import errno
import socket

IPPROTO_GRE = 47


class GRESocket:
    def __init__(self, bind_address: str, rcvbuf: int = 4 << 20):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
        try:
            self.sock.bind((bind_address, 0))
            self.sock.setblocking(False)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        except OSError:
            self.sock.close()
            raise
        self.bind_address = bind_address
        self.counters = {"received": 0, "sent": 0, "send_errors": 0, "receive_errors": 0,
                         "bad_ip_header": 0}
        self.last_error = ""

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> tuple[str, bytes] | None:
        """(source address, GRE packet), or None when nothing is left to read now."""
        while True:
            try:
                data, (src, _) = self.sock.recvfrom(65535)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as exc:  # a pending error reported on this read: skip it
                self._failed("receive_errors", exc)
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    return None
                continue
            payload = strip_ip_header(data)
            if payload is None:
                self.counters["bad_ip_header"] += 1
                continue
            self.counters["received"] += 1
            return src, payload

    def send(self, dst: str, packet: bytes) -> None:
        """A send error affects this packet only, never the other calls sharing the socket."""
        try:
            self.sock.sendto(packet, (dst, 0))
            self.counters["sent"] += 1
        except OSError as exc:
            self._failed("send_errors", exc)

    def _failed(self, counter: str, exc: OSError) -> None:
        self.counters[counter] += 1
        self.last_error = f"{counter.replace('_', ' ')[:-1]}: {exc.strerror or exc}"

    def close(self) -> None:
        self.sock.close()


def strip_ip_header(data: bytes) -> bytes | None:
    """The IPv4 payload, or None when the header is not a plausible IPv4 header (per packet:
    the fields read as octets, no slice or int.from_bytes)."""
    size = len(data)
    if size < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) << 2
    if ihl < 20 or size < ihl:
        return None
    # Linux hands raw sockets the packet as received; trust the total length when it is sane
    total = data[2] << 8 | data[3]
    return data[ihl:total if ihl <= total <= size else size]
