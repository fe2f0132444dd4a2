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


class TunError(OSError):
    pass


class TunDevice:
    def __init__(self, name: str):
        if not name or len(name) > 15:
            raise TunError(f"TUN name {name!r}: expected 1 to 15 characters (IFNAMSIZ)")
        try:
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TunError(f"cannot open /dev/net/tun: {exc.strerror}") from None
        try:
            ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
            name_out = fcntl.ioctl(self.fd, TUNSETIFF, ifr)[:16].rstrip(b"\0").decode()
        except OSError as exc:
            os.close(self.fd)
            hint = " (in use by another process?)" if exc.errno == 16 else ""
            raise TunError(f"cannot create TUN device {name!r}: {exc.strerror}{hint}") from None
        self.name = name_out
        self.closed = False
        self.errors = 0

    def configure(self, local: str, peer: str | None, mtu: int) -> None:
        """Address (point-to-point when `peer` is given), MTU, up; raises TunError saying
        which command failed and why."""
        addr = ["ip", "addr", "add", f"{local}/32"] + (["peer", f"{peer}/32"] if peer else [])
        for argv in (addr + ["dev", self.name],
                     ["ip", "link", "set", self.name, "mtu", str(mtu), "up"]):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            if done.returncode != 0:
                raise TunError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")

    def read(self) -> bytes | None:
        try:
            return os.read(self.fd, 65535)
        except BlockingIOError:
            return None
        except OSError:
            self.errors += 1
            return None

    def write(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except OSError:
            self.errors += 1  # a full queue or a packet the kernel refuses: dropped, like a NIC

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)  # the kernel deletes a non-persistent TUN device with its fd
