"""The userspace wire: delay, jitter, loss, reordering and rate where the kernel has no netem.

Runs in a link namespace between two veth ends (`--a`, `--b`) and forwards every Ethernet frame
from one to the other over AF_PACKET, holding each frame until its departure time. Per
direction (A→B uses `--rate-ab`, B→A `--rate-ba`): Bernoulli loss, serialization at the rate
(as netem's `rate`: a frame starts when the previous one has been clocked out), then the one-way
delay plus uniform jitter in ±jitter; jitter never reorders. A frame that would wait more than
`--queue-ms` for the line is dropped (tail drop, counted as `overflow`). Offloads must be off on
the veth ends, or frames bigger than the MTU (GSO) go through as one.

Reordering (`--reorder-pct`, `--reorder-gap`) follows netem's `reorder PERCENT gap N`: after
loss, a frame is picked for reordering when at least N-1 frames went the normal way since the
last pick (netem's counter) and a draw falls under PERCENT. A picked frame skips the delay and
jitter: it leaves as soon as the line has clocked it out (at once without a rate), on an
express queue of its own, so it overtakes every frame still waiting out its delay. It still
takes its time on the line (the rate is never exceeded, unlike netem, which lets it jump the
rate too), and the other frames keep their exact departure times: delay, jitter and
serialization are computed for them as before. Picked frames are counted as `reordered`.

Deadlines use a timerfd (sub-millisecond; epoll's own timeout has 1 ms granularity). Ready:
prints exactly `ready` on stdout once both packet sockets and the control socket are bound.
SIGTERM/SIGINT: exits 0, removing the control socket.

Control: one JSON object per datagram on the unix datagram socket `--control`; every key is
optional and applies at once; the reply (to the sender's bound address, if any) is
`{"ok": true, "ab": COUNTERS, "ba": COUNTERS}` or `{"ok": false, "error": "..."}`:
  delay_ms, jitter_ms, loss_pct, queue_ms   both directions (jitter <= delay is not enforced)
  reorder_pct, reorder_gap                  both directions (gap: integer >= 1)
  seed                                      re-seed the random choices (integer >= 0)
  rate_ab, rate_ba                          bit/s per direction; 0 or null = unlimited
  down                                      true drops everything, queued frames included (a cut
                                            with carrier up); false restores
  stats                                     no change, just the counters
COUNTERS = {"received", "forwarded", "lost" (loss or down), "overflow" (queue full or send
error), "reordered" (frames sent ahead of the delay), "queued"}.
`send_wire_control(path, **changes)` is the client.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import itertools
import json
import math
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
CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1
_replies = itertools.count()
BATCH = 64  # frames read per wake-up per side, so the other side and the timer get a turn


@dataclass
class Direction:
    """One direction's impairments and queue; `admit` is the pure scheduling core."""

    rate_bps: int | None = None
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    queue_s: float = 0.2
    reorder: float = 0.0  # probability, netem's reorder PERCENT / 100
    reorder_gap: int = 1
    down: bool = False
    busy_until: float = 0.0
    last_due: float = 0.0
    since_reorder: int = 0  # netem's q->counter: frames sent the normal way since the last pick
    queue: collections.deque = field(default_factory=collections.deque)
    express: collections.deque = field(default_factory=collections.deque)  # reordered frames
    received: int = 0
    forwarded: int = 0
    lost: int = 0
    overflow: int = 0
    reordered: int = 0

    @property
    def passthrough(self) -> bool:
        """Nothing to do: frames can go out at once, without a copy."""
        return not (self.rate_bps or self.delay_s or self.jitter_s or self.loss or self.down
                    or self.reorder or self.queue or self.express)

    def admit(self, size: int, now: float, rng: random.Random) -> float | None:
        """The departure time of a frame of `size` bytes arriving at `now`, or None if dropped."""
        taken = self.take(size, now, rng)
        return None if taken is None else taken[0]

    def place(self, frame: bytes, now: float, rng: random.Random) -> None:
        """Admit `frame` and queue it for its departure (express if it was reordered)."""
        taken = self.take(len(frame), now, rng)
        if taken is not None:
            (self.express if taken[1] else self.queue).append((taken[0], frame))

    def take(self, size: int, now: float, rng: random.Random) -> tuple[float, bool] | None:
        """(departure time, reordered) of a frame of `size` bytes arriving at `now`, or None if
        dropped: the pure scheduling core."""
        self.received += 1
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
        if self.reorder and self._pick_for_reorder(rng):
            self.reordered += 1
            return start, True
        due = start + self.delay_s
        if self.jitter_s:
            due += rng.uniform(-self.jitter_s, self.jitter_s)
        due = max(due, self.last_due, now)  # jitter never reorders
        self.last_due = due
        return due, False

    def _pick_for_reorder(self, rng: random.Random) -> bool:
        """netem_enqueue's test: inside the gap, or the draw says no, the frame is delayed."""
        if self.since_reorder < self.reorder_gap - 1 or rng.random() >= self.reorder:
            self.since_reorder += 1
            return False
        self.since_reorder = 0
        return True

    def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            self.lost += len(self.queue) + len(self.express)
            self.queue.clear()
            self.express.clear()

    def counters(self) -> dict[str, int]:
        return {"received": self.received, "forwarded": self.forwarded, "lost": self.lost,
                "overflow": self.overflow, "reordered": self.reordered,
                "queued": len(self.queue) + len(self.express)}


def _number(change: dict, key: str, low: float, high: float) -> float:
    value = change[key]
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{key}={value!r}: expected a number in {low:g}..{high:g}")
    return float(value)


def apply_change(ab: Direction, ba: Direction, change: dict) -> None:
    """Validate a whole control message, then apply it (all or nothing)."""
    if not isinstance(change, dict):
        raise ValueError("expected a JSON object")
    unknown = set(change) - {"delay_ms", "jitter_ms", "loss_pct", "queue_ms", "rate_ab",
                             "rate_ba", "down", "stats", "reorder_pct", "reorder_gap", "seed"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    per: dict[str, float] = {}
    for key, attr, high, scale in (("delay_ms", "delay_s", 10_000, 1e-3),
                                   ("jitter_ms", "jitter_s", 10_000, 1e-3),
                                   ("loss_pct", "loss", 100, 1e-2),
                                   ("reorder_pct", "reorder", 100, 1e-2),
                                   ("queue_ms", "queue_s", 60_000, 1e-3)):
        if key in change:
            per[attr] = _number(change, key, 0, high) * scale
    rates = {}
    for key, d in (("rate_ab", ab), ("rate_ba", ba)):
        if key in change:
            rate = change[key] or 0
            if type(rate) is not int or rate < 0:
                raise ValueError(f"{key}={change[key]!r}: expected an integer bit/s, 0 or null")
            rates[key] = (d, rate or None)
    if "down" in change and not isinstance(change["down"], bool):
        raise ValueError(f"down={change['down']!r}: expected true or false")
    for key, low in (("reorder_gap", 1), ("seed", 0)):
        if key in change and (type(change[key]) is not int or change[key] < low):
            raise ValueError(f"{key}={change[key]!r}: expected an integer >= {low}")
    for d in (ab, ba):
        for attr, value in per.items():
            setattr(d, attr, value)
        if "reorder_gap" in change:
            d.reorder_gap = change["reorder_gap"]
        if "down" in change:
            d.set_down(change["down"])
    for d, rate in rates.values():
        d.rate_bps = rate


class _Itimerspec(ctypes.Structure):
    _fields_ = [("interval_sec", ctypes.c_long), ("interval_nsec", ctypes.c_long),
                ("value_sec", ctypes.c_long), ("value_nsec", ctypes.c_long)]


class TimerFD:
    """An absolute CLOCK_MONOTONIC timerfd (same clock as time.monotonic), through libc."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self._spec = _Itimerspec()
        self.armed: float | None = None

    def arm(self, deadline: float | None) -> None:
        if deadline == self.armed:
            return
        self.armed = deadline
        spec = self._spec
        if deadline is None:
            spec.value_sec = spec.value_nsec = 0  # disarm
        else:
            ns = max(int(deadline * 1e9), 1)
            spec.value_sec, spec.value_nsec = divmod(ns, 1_000_000_000)
        if self._libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def clear(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.armed = None

    def close(self) -> None:
        os.close(self.fd)


def _packet_socket(iface: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    # our own sends to this interface would otherwise come back as input and loop
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.bind((iface, 0))
    mreq = struct.pack("iHH8s", socket.if_nametoindex(iface), PACKET_MR_PROMISC, 0, b"")
    s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


class Wire:
    def __init__(self, a: str, b: str, ab: Direction, ba: Direction, control: str | None,
                 seed: int | None = None):
        self.rng = random.Random(seed)
        self.sock = {"a": _packet_socket(a), "b": _packet_socket(b)}
        self.out = {"a": self.sock["b"], "b": self.sock["a"]}  # keyed by the arrival side
        self.dirs = {"a": ab, "b": ba}
        self.control_path = control
        self.control: socket.socket | None = None
        if control:
            if os.path.exists(control):
                os.unlink(control)
            self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.control.bind(control)
            self.control.setblocking(False)
        self.buf = bytearray(65536)
        self.view = memoryview(self.buf)
        self.running = True

    def _control(self) -> None:
        assert self.control is not None
        while True:
            try:
                data, addr = self.control.recvfrom(4096)
            except BlockingIOError:
                return
            try:
                change = json.loads(data)
                apply_change(self.dirs["a"], self.dirs["b"], change)
                if "seed" in change:
                    self.rng.seed(change["seed"])
                reply = {"ok": True, "ab": self.dirs["a"].counters(),
                         "ba": self.dirs["b"].counters()}
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                reply = {"ok": False, "error": str(exc)}
            if addr:
                try:
                    self.control.sendto(json.dumps(reply).encode(), addr)
                except OSError:
                    pass

    def _receive(self, side: str) -> None:
        sock, d, out = self.sock[side], self.dirs[side], self.out[side]
        view, now = self.view, time.monotonic()
        for _ in range(BATCH):
            try:
                n = sock.recv_into(self.buf)
            except BlockingIOError:
                return
            if d.passthrough:  # no impairment in this direction: no copy, no queue
                d.received += 1
                self._send(out, d, view[:n])
                continue
            d.place(bytes(view[:n]), now, self.rng)

    @staticmethod
    def _send(out: socket.socket, d: Direction, frame: bytes | memoryview) -> None:
        try:
            out.send(frame)
            d.forwarded += 1
        except OSError:  # ENOBUFS under overload: the frame is gone, count it
            d.overflow += 1

    def _flush(self, now: float) -> float | None:
        """Send every frame whose time has come; return the next departure time."""
        nxt = None
        for side, d in self.dirs.items():
            queue, express, out = d.queue, d.express, self.out[side]
            while express:  # reordered frames: merged with the others by departure time
                if express[0][0] > now:
                    break
                if queue and queue[0][0] < express[0][0]:
                    self._send(out, d, queue.popleft()[1])
                else:
                    self._send(out, d, express.popleft()[1])
            while queue and queue[0][0] <= now:
                self._send(out, d, queue.popleft()[1])
            for q in (queue, express):
                if q and (nxt is None or q[0][0] < nxt):
                    nxt = q[0][0]
        return nxt

    def run(self) -> None:
        ep = select.epoll()
        timer = TimerFD()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wake_w)  # a signal wakes epoll (PEP 475 retries)
        fds = {self.sock["a"].fileno(): "a", self.sock["b"].fileno(): "b"}
        for fd in fds:
            ep.register(fd, select.EPOLLIN)
        for fd in (timer.fd, wake_r) + ((self.control.fileno(),) if self.control else ()):
            ep.register(fd, select.EPOLLIN)
        print("ready", flush=True)
        try:
            while self.running:
                for fd, _ in ep.poll():
                    side = fds.get(fd)
                    if side is not None:
                        self._receive(side)
                    elif fd == timer.fd:
                        timer.clear()
                    elif fd == wake_r:
                        os.read(wake_r, 512)
                    else:
                        self._control()
                nxt = self._flush(time.monotonic())
                # a deadline already past fires at once; the next poll sends it
                timer.arm(nxt)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for fd in (wake_r, wake_w):
                os.close(fd)
            timer.close()
            ep.close()
            self.close()

    def close(self) -> None:
        for s in self.sock.values():
            s.close()
        if self.control:
            self.control.close()
            if self.control_path and os.path.exists(self.control_path):
                os.unlink(self.control_path)


def send_wire_control(path: str, timeout: float = 5.0, **change: object) -> dict:
    """Send one change (keyword arguments, see the module docstring) to a running wire and
    return its reply, counters included; raises ValueError if the wire refused the change.

    The reply socket is a file beside the control socket, not an abstract address: the wire
    runs in another network namespace, and abstract unix addresses are per namespace."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reply_path = f"{path}.{os.getpid()}.{next(_replies)}.r"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(reply_path)
        client.bind(reply_path)
        client.settimeout(timeout)
        client.sendto(json.dumps(change).encode(), path)
        reply = json.loads(client.recv(65535))
    finally:
        client.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(reply_path)
    if not reply.get("ok"):
        raise ValueError(f"wire at {path} refused {change}: {reply.get('error')}")
    return reply


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m testbed.wire")
    p.add_argument("--a", required=True, help="interface toward end A")
    p.add_argument("--b", required=True, help="interface toward end B")
    p.add_argument("--control", help="unix datagram socket for run-time changes")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss-pct", type=float, default=0.0)
    p.add_argument("--reorder-pct", type=float, default=0.0,
                   help="percent of frames sent ahead of the delay (netem's reorder)")
    p.add_argument("--reorder-gap", type=int, default=1, help="netem's gap (default 1)")
    p.add_argument("--rate-ab", type=int, help="bit/s from A to B")
    p.add_argument("--rate-ba", type=int, help="bit/s from B to A (default: --rate-ab)")
    p.add_argument("--queue-ms", type=float, default=200.0)
    p.add_argument("--seed", type=int)
    return p.parse_args(argv)


def directions(args: argparse.Namespace) -> tuple[Direction, Direction]:
    """A→B and B→A from the command line, validated like a control message."""
    ab, ba = Direction(), Direction()
    apply_change(ab, ba, {"delay_ms": args.delay_ms, "jitter_ms": args.jitter_ms,
                          "loss_pct": args.loss_pct, "queue_ms": args.queue_ms,
                          "reorder_pct": args.reorder_pct, "reorder_gap": args.reorder_gap,
                          "rate_ab": args.rate_ab or 0,
                          "rate_ba": (args.rate_ba if args.rate_ba is not None
                                      else args.rate_ab) or 0})
    return ab, ba


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ab, ba = directions(args)
    except ValueError as exc:
        print(f"wire: {exc}", file=sys.stderr)
        return 2
    wire = Wire(args.a, args.b, ab, ba, args.control, args.seed)

    def stop(signum: int, _frame: object) -> None:
        wire.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    wire.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
