"""A minimal userspace TUN <-> UDP relay: the ceiling of a Python data path (issue 8).

    python -m bench.relay --local 198.51.100.2 --remote 203.0.113.2 \
        --address 10.99.0.1 --peer 10.99.0.2 [--port 4799] [--tun rly0] [--mtu 1400]

Structured exactly as our pump (tunnels/runtime/pump.py): one asyncio loop, a reader callback
per file descriptor, up to 64 reads per readiness callback, one syscall per packet each way.
It does nothing else (no header, no crypto, no sequence numbers), so a tunnel's throughput
divided by the relay's is the share our protocol stacks leave of what Python can move.
Prints "relay ready" when the TUN device is up; SIGTERM stops it (the device goes with its fd).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

from tunnels.runtime.tun import TunDevice

BATCH = 64  # as tunnels/runtime/pump.py


class Relay:
    def __init__(self, tun: TunDevice, sock: socket.socket):
        self.tun, self.sock = tun, sock
        self.counters = {"tun_read": 0, "udp_read": 0}

    def tun_readable(self) -> None:
        fd, send = self.tun.fd, self.sock.send
        for _ in range(BATCH):
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                break
            try:
                send(packet)
            except OSError:
                pass  # a full buffer or an ICMP error: this packet is lost, as on a wire
            self.counters["tun_read"] += 1

    def udp_readable(self) -> None:
        fd, recv = self.tun.fd, self.sock.recv
        for _ in range(BATCH):
            try:
                packet = recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                break
            try:
                os.write(fd, packet)
            except OSError:
                pass
            self.counters["udp_read"] += 1


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((args.local, args.port))
    sock.connect((args.remote, args.port))
    sock.setblocking(False)
    tun = TunDevice(args.tun)
    try:
        tun.configure(args.address, args.peer, args.mtu)
        relay = Relay(tun, sock)
        loop.add_reader(tun.fd, relay.tun_readable)
        loop.add_reader(sock.fileno(), relay.udp_readable)
        print("relay ready", flush=True)
        await stop.wait()
        loop.remove_reader(tun.fd)
        loop.remove_reader(sock.fileno())
        print(f"relay stopped {relay.counters}", flush=True)
    finally:
        tun.close()
        sock.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--local", required=True, help="our carrier address (UDP bound here)")
    p.add_argument("--remote", required=True, help="the other relay's carrier address")
    p.add_argument("--port", type=int, default=4799)
    p.add_argument("--address", required=True, help="our end of the relay's TUN link")
    p.add_argument("--peer", required=True, help="the other end's TUN address")
    p.add_argument("--tun", default="rly0")
    p.add_argument("--mtu", type=int, default=1400, help="as our tunnels' TUN devices")
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
