"""The userspace wire: delay, jitter, loss and rate where the kernel has no netem.

Runs in a link namespace between two veth ends (`--a`, `--b`) and forwards every Ethernet frame
from one to the other over AF_PACKET, holding each frame until its departure time. Per
direction: Bernoulli loss, serialization at the rate (as netem's `rate`: a frame leaves when the
previous one has been clocked out), then the one-way delay plus uniform jitter, never
reordering; a queue longer than `--queue-ms` of serialization drops the newest frame (counted).

Run-time changes through a unix datagram socket at `--control` (JSON): `{"delay_ms": 50}`,
`{"loss_pct": 5}`, `{"rate_ab": 64000, "rate_ba": 32000}`, `{"down": true}` (drop everything:
a cut cable), `{"stats": true}` (the reply datagram carries the counters). `send_wire_control`
is the client. Prints `ready` on stdout once both sockets are bound.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_IGNORE_OUTGOING = 23


@dataclass
class Direction:
    """One direction's impairments and queue; `admit` is the pure scheduling core."""

    rate_bps: int | None = None
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    queue_s: float = 0.2
    down: bool = False
    busy_until: float = 0.0
    last_due: float = 0.0
    queue: collections.deque = field(default_factory=collections.deque)
    forwarded: int = 0
    lost: int = 0
    overflow: int = 0

    def admit(self, size: int, now: float, rng: random.Random) -> float | None:
        """The departure time of a frame of `size` bytes arriving at `now`, or None if dropped."""
        if self.down or (self.loss and rng.random() < self.loss):
            self.lost += 1
            return None
        start = max(now, self.busy_until)
        if self.rate_bps:
            if start - now > self.queue_s:
                self.overflow += 1
                return None
            self.busy_until = start + size * 8 / self.rate_bps
            start = self.busy_until
        due = start + self.delay_s
        if self.jitter_s:
            due += rng.uniform(-self.jitter_s, self.jitter_s)
        due = max(due, self.last_due, now)  # jitter never reorders
        self.last_due = due
        return due

    def counters(self) -> dict[str, int]:
        return {"forwarded": self.forwarded, "lost": self.lost, "overflow": self.overflow,
                "queued": len(self.queue)}


def _packet_socket(iface: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.bind((iface, 0))
    mreq = struct.pack("iHH8s", socket.if_nametoindex(iface), PACKET_MR_PROMISC, 0, b"")
    s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


class Wire:
    def __init__(self, a: str, b: str, ab: Direction, ba: Direction, control: str | None,
                 seed: int | None = None):
        self.rng = random.Random(seed)
        self.sock = {"a": _packet_socket(a), "b": _packet_socket(b)}
        self.dirs = {"a": ab, "b": ba}  # keyed by the side frames arrive on
        self.control: socket.socket | None = None
        if control:
            if os.path.exists(control):
                os.unlink(control)
            self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.control.bind(control)
            self.control.setblocking(False)
        self.running = True

    def apply(self, change: dict) -> None:
        ab, ba = self.dirs["a"], self.dirs["b"]
        for d in (ab, ba):
            if "delay_ms" in change:
                d.delay_s = float(change["delay_ms"]) / 1000
            if "jitter_ms" in change:
                d.jitter_s = float(change["jitter_ms"]) / 1000
            if "loss_pct" in change:
                d.loss = float(change["loss_pct"]) / 100
            if "down" in change:
                d.down = bool(change["down"])
                if d.down:
                    d.queue.clear()
        if "rate_ab" in change:
            ab.rate_bps = int(change["rate_ab"]) or None
        if "rate_ba" in change:
            ba.rate_bps = int(change["rate_ba"]) or None

    def _control(self) -> None:
        assert self.control is not None
        try:
            data, addr = self.control.recvfrom(4096)
        except BlockingIOError:
            return
        try:
            change = json.loads(data)
            self.apply(change)
            reply = {"ok": True, "ab": self.dirs["a"].counters(), "ba": self.dirs["b"].counters()}
        except (ValueError, TypeError) as exc:
            reply = {"ok": False, "error": str(exc)}
        if addr:
            try:
                self.control.sendto(json.dumps(reply).encode(), addr)
            except OSError:
                pass

    def _receive(self, side: str, now: float) -> None:
        sock, d = self.sock[side], self.dirs[side]
        for _ in range(64):  # bounded batch so the other side and timers get their turn
            try:
                frame = sock.recv(65535)
            except BlockingIOError:
                return
            due = d.admit(len(frame), now, self.rng)
            if due is not None:
                d.queue.append((due, frame))

    def _flush(self, now: float) -> float | None:
        """Send every frame whose time has come; return the next departure time."""
        nxt = None
        for side, d in self.dirs.items():
            out = self.sock["b" if side == "a" else "a"]
            while d.queue and d.queue[0][0] <= now:
                _, frame = d.queue.popleft()
                try:
                    out.send(frame)
                    d.forwarded += 1
                except OSError:
                    d.overflow += 1
            if d.queue and (nxt is None or d.queue[0][0] < nxt):
                nxt = d.queue[0][0]
        return nxt

    def run(self) -> None:
        ep = select.epoll()
        fds = {self.sock["a"].fileno(): "a", self.sock["b"].fileno(): "b"}
        for fd in fds:
            ep.register(fd, select.EPOLLIN)
        if self.control:
            ep.register(self.control.fileno(), select.EPOLLIN)
        print("ready", flush=True)
        nxt: float | None = None
        while self.running:
            timeout = -1.0 if nxt is None else max(0.0, nxt - time.monotonic())
            try:
                events = ep.poll(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            for fd, _ in events:
                side = fds.get(fd)
                if side is not None:
                    self._receive(side, now)
                else:
                    self._control()
            nxt = self._flush(time.monotonic())


def send_wire_control(path: str, **change: object) -> dict:
    """Send one change to a running wire and return its reply (counters included)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reply_path = f"{path}.{os.getpid()}.reply"
    try:
        if os.path.exists(reply_path):
            os.unlink(reply_path)
        client.bind(reply_path)
        client.settimeout(5)
        client.sendto(json.dumps(change).encode(), path)
        return json.loads(client.recv(65535))
    finally:
        client.close()
        if os.path.exists(reply_path):
            os.unlink(reply_path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.wire")
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--control")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss-pct", type=float, default=0.0)
    p.add_argument("--rate-ab", type=int)
    p.add_argument("--rate-ba", type=int)
    p.add_argument("--queue-ms", type=float, default=200.0)
    p.add_argument("--seed", type=int)
    args = p.parse_args(argv)

    def direction(rate: int | None) -> Direction:
        return Direction(rate_bps=rate, delay_s=args.delay_ms / 1000,
                         jitter_s=args.jitter_ms / 1000, loss=args.loss_pct / 100,
                         queue_s=args.queue_ms / 1000)

    wire = Wire(args.a, args.b, direction(args.rate_ab), direction(args.rate_ba or args.rate_ab),
                args.control, args.seed)

    def stop(signum: int, _frame: object) -> None:
        wire.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    wire.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
