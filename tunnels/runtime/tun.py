"""A TUN device in the current network namespace: the VPN connection's virtual interface.

Kernel PPP is missing on our machines (design.md principle 6), so the tunnel's IP packets meet
the kernel here: IFF_TUN without packet information, one IPv4 packet per read and write.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class TunDevice:
    def __init__(self, name: str):
        if len(name) > 15:
            raise ValueError(f"TUN name {name!r}: expected at most 15 characters")
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
            name_out = fcntl.ioctl(self.fd, TUNSETIFF, ifr)[:16].rstrip(b"\0").decode()
        except OSError:
            os.close(self.fd)
            raise
        self.name = name_out
        self.closed = False

    def configure(self, local: str, peer: str | None, mtu: int) -> None:
        """Address (point-to-point when `peer` is given), MTU, up."""
        addr = ["ip", "addr", "add", f"{local}/32"] + (["peer", f"{peer}/32"] if peer else [])
        for argv in (addr + ["dev", self.name],
                     ["ip", "link", "set", self.name, "mtu", str(mtu), "up"]):
            subprocess.run(argv, check=True, capture_output=True, timeout=10)

    def read(self) -> bytes | None:
        try:
            return os.read(self.fd, 65535)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except (BlockingIOError, OSError):
            pass  # a full queue or a malformed packet the kernel refuses: dropped, like a NIC

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)  # the kernel deletes a non-persistent TUN device with its fd
