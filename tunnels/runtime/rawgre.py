"""IP protocol 47 through a raw socket: GRE without kernel GRE devices.

The socket is bound to the address the control connection used, so our GRE leaves from the
address the peer reached (RFC 2637; an NLB cluster answering from its dedicated address breaks
exactly this). Reads give the whole IP packet; the IP header is stripped here.
"""

from __future__ import annotations

import socket

IPPROTO_GRE = 47


class GRESocket:
    def __init__(self, bind_address: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
        self.sock.bind((bind_address, 0))
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.errors = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> tuple[str, bytes] | None:
        try:
            data, (src, _) = self.sock.recvfrom(65535)
        except BlockingIOError:
            return None
        if len(data) < 20:
            return None
        ihl = (data[0] & 0x0F) * 4
        return src, data[ihl:]

    def send(self, dst: str, packet: bytes) -> None:
        """A send error (unreachable peer, full buffer) affects this packet only, never other
        calls sharing the socket."""
        try:
            self.sock.sendto(packet, (dst, 0))
        except OSError:
            self.errors += 1

    def close(self) -> None:
        self.sock.close()
